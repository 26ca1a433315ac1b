#!/usr/bin/env bash
# The GPU checks of issue 8 in one device call: the GPU tests, then the GPU-size benchmark
# against PyTorch CUDA, every result written under $OUT (see ../shared/gpu.md).
#
# Once, on the development machine (downloads NumPy 2.4.6 for the device's Python 3.12: the
# image's own NumPy 2.5 breaks numba.cuda at import):
#     bash bench/run_gpu.sh --prepare
# Then with the `run` tool (device machine, carry [".whl"]), one call:
#     bash bench/run_gpu.sh
# and read $OUT/summary.txt (then tests.txt, bench_*.txt) in what comes back.
#
# Budget: one call may run 600 s.  Tests take the first few minutes (numba compiles the CUDA
# kernels on first use); each benchmark workload then gets at most BENCH_SECONDS (default 70)
# so that whatever finishes comes back.  Override with BENCH_SECONDS=... / WORKLOADS="...".
set -u
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        -d .whl numpy==2.4.6
    ls -l .whl
    exit
fi

OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
log() { echo "$*" | tee -a "$SUMMARY"; }
: > "$SUMMARY"

if ! ls .whl/numpy-2.4.6-*.whl > /dev/null 2>&1; then
    log "missing .whl/numpy-2.4.6-*.whl: run 'bash bench/run_gpu.sh --prepare' here and carry .whl"
    exit 2
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$PWD/.site" .whl/*.whl || { log "could not install the carried NumPy"; exit 2; }
export PYTHONPATH="$PWD/.site${PYTHONPATH:+:$PYTHONPATH}"

log "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$SUMMARY"
python3 - <<'EOF' 2>&1 | tee -a "$SUMMARY"
import sys, numpy, numba
print("python", sys.version.split()[0], "numpy", numpy.__version__, "numba", numba.__version__)
for name in ("numba_cuda", "cupy", "torch", "Cython"):
    try:
        module = __import__(name)
        print(name, getattr(module, "__version__", "?"))
    except Exception as exc:
        print(name, "does not import:", f"{type(exc).__name__}: {exc}".splitlines()[0])
EOF

log "== build (pip install --no-build-isolation --no-deps -e .)"
python3 -m pip install -q --no-build-isolation --no-deps -e . > "$OUT/build.txt" 2>&1
log "build exit $?"
tgs backends 2>&1 | tee -a "$SUMMARY"

log "== GPU tests"
timeout 300 python3 -m pytest -q -rs -p no:cacheprovider tests/test_cuda_gpu.py > "$OUT/tests.txt" 2>&1
log "tests/test_cuda_gpu.py exit $? : $(tail -n 1 "$OUT/tests.txt")"

log "== CLI on the GPU: tgs train charlm / tgs sample --device cuda"
timeout 120 tgs train charlm --device cuda --steps 30 --eval-every 15 --hidden 64 --seq-len 32 \
    --batch-size 8 --out "$OUT/run_charlm" > "$OUT/cli.txt" 2>&1
log "tgs train charlm --device cuda exit $?: $(tail -n 1 "$OUT/cli.txt")"
timeout 60 tgs sample "$OUT/run_charlm" --length 80 >> "$OUT/cli.txt" 2>&1
log "tgs sample (on the CPU, from the GPU-trained checkpoint) exit $?: $(tail -n 1 "$OUT/cli.txt")"
timeout 60 tgs sample "$OUT/run_charlm" --device cuda --length 80 >> "$OUT/cli.txt" 2>&1
log "tgs sample --device cuda exit $?: $(tail -n 1 "$OUT/cli.txt")"

log "== GPU-size benchmark vs PyTorch CUDA (tgs bench --device cuda)"
for workload in ${WORKLOADS:-lstm_lm gru_lm rnn_lm cnn transformer}; do
    timeout "${BENCH_SECONDS:-70}" tgs bench --device cuda -w "$workload" --repeats 5 --warmup 2 \
        > "$OUT/bench_$workload.txt" 2> "$OUT/bench_$workload.log"
    status=$?
    log "-- $workload (exit $status$([ $status -eq 124 ] && echo ': over BENCH_SECONDS'))"
    cat "$OUT/bench_$workload.txt" >> "$SUMMARY"
    [ $status -ne 0 ] && tail -n 3 "$OUT/bench_$workload.log" >> "$SUMMARY"
done
log "done"
