#!/usr/bin/env bash
# The GPU checks in one device call, on a machine that reaches no package index: the GPU-size
# benchmark against PyTorch CUDA first, then the GPU tests, then the rest; every result under $OUT.
#
# Once, on a development machine with a package index (fills .whl/, which git ignores: the
# wheels the GPU image may lack, for its Python 3.12 on manylinux x86_64):
#     bash bench/run_gpu.sh --prepare
# That is, for each NAME==VERSION of WHEELS below:
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#         --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#         --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl NAME==VERSION
# Then with the device tool's `run` (carry [".whl"]), one call, timeout_s 600:
#     bash bench/run_gpu.sh
# and read $OUT/summary.txt (then each step's $OUT/<step>.txt) in what comes back.
# Rehearse it here, without a GPU (prints the steps, runs the preflight tolerating a missing
# CuPy or GPU, and times one small CPU benchmark):
#     bash bench/run_gpu.sh --dry-run
#
# Steps, in order, each under its own `timeout` and all within TOTAL_SECONDS (default 570, so
# that the summary is written inside the run tool's 600 s):
#   wheels     NumPy 2.4.x always (the image's NumPy 2.5 breaks numba.cuda at import), and
#              click / pytest and its needs / setuptools / Cython only if they do not import;
#              pip install --no-index --no-deps --target .site, put first on PYTHONPATH
#   preflight  imports click, pytest, Cython, cupy, torch, numba.cuda; prints numba.cuda.detect();
#              stops the run when one is missing (nothing after it could work)
#   build      pip install --no-build-isolation --no-deps -e . (Cython extensions built in parallel)
#   bench_*    tgs bench --device cuda --backend cuda: lstm_lm, cnn, transformer (BENCH_SECONDS each)
#   gpu_tests  tests/test_cuda_gpu.py
#   then       bench gru_lm, rnn_lm; tgs train/sample --device cuda; the rest of the test suite
# Overrides: TOTAL_SECONDS, BENCH_SECONDS, REPEATS, WARMUP, FIRST_WORKLOADS, LATER_WORKLOADS, PYTHON.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
TGS="$PY -m tinygrad_seq.cli.main"

WHEELS="numpy==2.4.6 click==8.4.0 pytest==9.0.3 pluggy==1.6.0 iniconfig==2.3.0 packaging==26.2 \
pygments==2.20.0 setuptools==80.9.0 Cython==3.2.4"
# import name -> the carried wheels it needs when the image lacks it
OPTIONAL_WHEELS="click:click pytest:pytest,pluggy,iniconfig,packaging,pygments setuptools:setuptools Cython:cython"

MODE=run
case "${1:-}" in
    --prepare) MODE=prepare ;;
    --dry-run) MODE=dry ;;
    "") ;;
    *) echo "usage: bash bench/run_gpu.sh [--prepare | --dry-run]" >&2; exit 2 ;;
esac

if [ "$MODE" = prepare ]; then
    # shellcheck disable=SC2086
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $WHEELS || exit
    ls -l .whl
    exit 0
fi

if [ "$MODE" = dry ]; then
    OUT="${OUT:-$(mktemp -d)}"
else
    OUT="${OUT:-$ROOT/gpu_out}"
fi
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
export NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS=0 PYTHONUNBUFFERED=1
DEADLINE=$(( $(date +%s) + ${TOTAL_SECONDS:-570} ))
BENCH_SECONDS=${BENCH_SECONDS:-90}
REPEATS=${REPEATS:-5}
WARMUP=${WARMUP:-2}

log() { echo "$*" | tee -a "$SUMMARY"; }

# step NAME SECONDS COMMAND...: COMMAND under `timeout` (no longer than the time left), its output
# in $OUT/NAME.txt, one line in the summary.  A dry run prints the step instead of running it.
step() {
    local name=$1 limit=$2 left status
    shift 2
    left=$(( DEADLINE - $(date +%s) - 10 ))
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$MODE" = dry ]; then
        log "step $name (timeout ${limit}s): $*"
        return 0
    fi
    if [ "$limit" -lt 15 ]; then
        log "-- $name skipped: the run's time is spent"
        return 124
    fi
    log "== $name (timeout ${limit}s): $*"
    timeout -k 10 "$limit" "$@" > "$OUT/$name.txt" 2>&1
    status=$?
    log "-- $name exit $status$([ $status -eq 124 ] && echo ' (timed out)'): $(tail -n 1 "$OUT/$name.txt")"
    return $status
}

log "run_gpu.sh ($MODE) $(date -u +%FT%TZ); results in $OUT; NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS=$NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS"

# ---------------------------------------------------------------- wheels
install_wheels() {
    local wheels="" entry module names name
    wheels=$(ls .whl/numpy-2.4.*.whl 2>/dev/null) || { echo "no .whl/numpy-2.4.*.whl: run 'bash bench/run_gpu.sh --prepare' and carry .whl"; return 2; }
    for entry in $OPTIONAL_WHEELS; do
        module=${entry%%:*}
        names=${entry#*:}
        if ! "$PY" -c "import $module" 2>/dev/null; then
            echo "$module does not import: installing the carried ${names//,/ }"
            for name in ${names//,/ }; do
                wheels="$wheels $(ls .whl/"$name"-*.whl 2>/dev/null || ls .whl/"${name^}"-*.whl 2>/dev/null)"
            done
        fi
    done
    # shellcheck disable=SC2086
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$ROOT/.site" $wheels
}
if [ "$MODE" = dry ]; then
    for spec in $WHEELS; do
        name=${spec%%==*}
        if compgen -G ".whl/${name,,}-${spec#*==}-*.whl" > /dev/null || compgen -G ".whl/$name-${spec#*==}-*.whl" > /dev/null; then
            log "carried: $spec"
        else
            log "not carried yet: $spec (bash bench/run_gpu.sh --prepare)"
        fi
    done
    step wheels 120 pip install --no-index --no-deps --target .site "<numpy 2.4 and what does not import>"
else
    export -f install_wheels
    export PY OPTIONAL_WHEELS ROOT
    step wheels 120 bash -c install_wheels || { log "cannot install the carried wheels: stopping"; exit 2; }
    export PYTHONPATH="$ROOT/.site${PYTHONPATH:+:$PYTHONPATH}"
fi

# ---------------------------------------------------------------- preflight (runs in a dry run too)
PREFLIGHT='
import importlib, importlib.metadata, os, subprocess, sys
tolerant = os.environ.get("PREFLIGHT_TOLERANT") == "1"
print("python", sys.version.split()[0], sys.executable)
missing = []
for name, dist in (("numpy", "numpy"), ("click", "click"), ("pytest", "pytest"), ("Cython", "Cython"),
                   ("cupy", "cupy-cuda13x"), ("torch", "torch"), ("numba", "numba"), ("numba.cuda", "numba-cuda")):
    try:
        module = importlib.import_module(name)
    except Exception as exc:
        print("import", name, "FAILED:", f"{type(exc).__name__}: {exc}".splitlines()[0])
        missing.append(name)
        continue
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    print("import", name, "ok:", dist, version, "from", os.path.dirname(module.__file__))
try:
    out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=30)
    print("nvidia-smi:", out.stdout.strip() or out.stderr.strip())
except (OSError, subprocess.SubprocessError) as exc:
    print("nvidia-smi:", type(exc).__name__)
if "numba.cuda" not in missing:
    from numba import cuda
    try:
        found = cuda.detect()
    except Exception as exc:    # no driver: detect() raises instead of answering False
        print("numba.cuda.detect() failed:", f"{type(exc).__name__}: {exc}".strip().splitlines()[0])
        found = False
    print("numba.cuda.detect():", found)
    if not found:
        missing.append("a CUDA GPU")
if missing and not tolerant:
    sys.exit("preflight: missing " + ", ".join(missing))
print("preflight: ok" if not missing else "preflight (tolerant): missing " + ", ".join(missing))
'
log "== preflight"
PREFLIGHT_TOLERANT=$([ "$MODE" = dry ] && echo 1 || echo 0) timeout -k 10 120 "$PY" -c "$PREFLIGHT" > "$OUT/preflight.txt" 2>&1
status=$?
cat "$OUT/preflight.txt" >> "$SUMMARY"
log "-- preflight exit $status"
if [ $status -ne 0 ]; then
    log "stopping: what the preflight found missing would fail every step after it"
    exit 2
fi

# ---------------------------------------------------------------- build
# DIST_EXTRA_CONFIG: setuptools reads this file too; build_ext compiles the Cython modules in parallel
BUILD_CFG=$(mktemp)
printf '[build_ext]\nparallel = %s\n' "$(nproc 2>/dev/null || echo 4)" > "$BUILD_CFG"
step build 300 env DIST_EXTRA_CONFIG="$BUILD_CFG" "$PY" -m pip install -q --no-build-isolation --no-deps -e . \
    || [ "$MODE" = dry ] || log "build failed: the steps below use whatever imports"
step backends 60 $TGS backends
[ "$MODE" = run ] && tee -a "$SUMMARY" < "$OUT/backends.txt"

# ---------------------------------------------------------------- the benchmark first, then the GPU tests
bench() {   # bench WORKLOAD
    step "bench_$1" "$BENCH_SECONDS" $TGS bench --device cuda --backend cuda -w "$1" --repeats "$REPEATS" --warmup "$WARMUP"
    [ "$MODE" = run ] && grep -E '^\||^float32' "$OUT/bench_$1.txt" 2> /dev/null | tee -a "$SUMMARY"
    return 0
}
for workload in ${FIRST_WORKLOADS:-lstm_lm cnn transformer}; do bench "$workload"; done
step gpu_tests 240 "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_cuda_gpu.py

# ---------------------------------------------------------------- the rest
for workload in ${LATER_WORKLOADS:-gru_lm rnn_lm}; do bench "$workload"; done
step cli_train 120 $TGS train charlm --device cuda --steps 30 --eval-every 15 --hidden 64 --seq-len 32 \
    --batch-size 8 --out "$OUT/run_charlm"
step cli_sample 60 $TGS sample "$OUT/run_charlm" --device cuda --length 80
step other_tests 600 "$PY" -m pytest -q -p no:cacheprovider --ignore=tests/test_cuda_gpu.py tests

# ---------------------------------------------------------------- rehearsal of the benchmark step on the CPU
if [ "$MODE" = dry ]; then
    log "== dry run: the benchmark's plumbing on the CPU (lstm_lm, numpy backend, one step, no PyTorch)"
    timeout -k 10 300 $TGS bench --device cpu --backend numpy -w lstm_lm --repeats 1 --warmup 0 --no-torch \
        > "$OUT/bench_cpu_rehearsal.txt" 2>&1
    status=$?
    grep -E '^\|' "$OUT/bench_cpu_rehearsal.txt" | tee -a "$SUMMARY"
    log "-- bench_cpu_rehearsal exit $status"
    [ $status -eq 0 ] || exit $status
fi
log "done $(date -u +%FT%TZ)"
