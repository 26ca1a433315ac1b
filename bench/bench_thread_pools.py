"""How the engine's thread pools share the cores when a script imports numpy first.

Each design runs in a fresh process that imports numpy before tinygrad_seq (as a script or
notebook does) and times tinygrad_seq's step beside PyTorch's, interleaved (tgs bench's harness):

    numpy-pool      the GEMMs in NumPy's OpenBLAS pool, nothing set (the engine before the matmul family)
    numpy-pool+tgs  the same after tinygrad_seq.runtime.configure_for_speed() ran first (the old `tgs`)
    blas-1-thread   every BLAS library held at one thread for the whole run (threadpoolctl)
    team            the GEMMs on the kernels' OpenMP team (the matmul family's default), nothing set
    team+tgs        the same with configure_for_speed() first (what `tgs` does)

    python bench/bench_thread_pools.py [--workloads lstm_lm,transformer] [--repeats 10] [--rounds 2]
"""
import argparse
import os
import subprocess
import sys

DESIGNS = {
    "numpy-pool": ("plain", "numpy"),
    "numpy-pool+tgs": ("configured", "numpy"),
    "blas-1-thread": ("pinned", "numpy"),
    "team": ("plain", "cython"),
    "team+tgs": ("configured", "cython"),
}

CHILD = """
import sys
settings, gemm, workloads, repeats = sys.argv[1], sys.argv[2], sys.argv[3].split(","), int(sys.argv[4])
if settings == "configured":
    import tinygrad_seq.runtime
    tinygrad_seq.runtime.configure_for_speed()
import numpy
import torch
import tinygrad_seq.backend
from tinygrad_seq import benchmark

torch.set_num_threads(2)
sys.modules["tinygrad_seq.backend"]._auto_choices().setdefault("cpu", {})["matmul"] = gemm
if settings == "pinned":
    import threadpoolctl
    threadpoolctl.threadpool_limits(1, user_api="blas")
results = benchmark.run(workloads, ["-"], "cpu", 3, repeats, True, echo=lambda line: None)
torch_ms = {r.workload: r.ms for r in results if r.impl == "pytorch"}
print(" ".join(f"{r.workload}={r.ms:.1f}/{torch_ms[r.workload]:.1f}" for r in results if r.impl != "pytorch"))
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="lstm_lm,transformer")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--designs", default=",".join(DESIGNS))
    args = parser.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_THREAD_TIMEOUT", "GOMP_SPINCOUNT")}
    print("| design | round | " + " | ".join(f"{w}: tgs / PyTorch ms" for w in args.workloads.split(",")) + " |")
    print("| --- | ---: |" + " --- |" * len(args.workloads.split(",")))
    for round_ in range(1, args.rounds + 1):
        for design in args.designs.split(","):
            settings, gemm = DESIGNS[design]
            out = subprocess.run([sys.executable, "-c", CHILD, settings, gemm, args.workloads, str(args.repeats)],
                                 capture_output=True, text=True, env=env)
            if out.returncode:
                print(f"| {design} | {round_} | failed: {out.stderr.strip().splitlines()[-1]} |")
                continue
            cells = [pair.split("=")[1] for pair in out.stdout.split()]
            print(f"| {design} | {round_} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
