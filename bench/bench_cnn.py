"""The `cnn` workload of ../shared/benchmarks.md on every available CPU backend beside PyTorch.

    python bench/bench_cnn.py                 # median ms/step and the ratio to PyTorch, same run
    python bench/bench_cnn.py --breakdown     # also: where one step's time goes, per kernel call

Workload: 64x1x28x28 -> Conv2d(1,16,3,pad 1) -> ReLU -> MaxPool2d(2) -> Conv2d(16,32,3,pad 1)
-> ReLU -> MaxPool2d(2) -> Linear(1568,10) -> cross-entropy; SGD momentum 0.9.  A step is
forward + backward + update; median of 15 timed steps after 3 warm-ups.
"""
import argparse
import collections
import contextlib
import platform
import sys
import time

from tinygrad_seq import benchmark
from tinygrad_seq.backend import BACKENDS, kernels, unavailable_reason

KERNELS = ("conv2d_forward", "conv2d_backward", "maxpool2d_forward", "maxpool2d_backward")


@contextlib.contextmanager
def timed_kernels(module, totals):
    """Wrap the conv kernels of `module` so every call adds its time to totals[name]."""
    originals = {name: getattr(module, name) for name in KERNELS}

    def wrap(name, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[name] += time.perf_counter() - start
        return timed

    for name, fn in originals.items():
        setattr(module, name, wrap(name, fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(module, name, fn)


def breakdown(backend, steps=10):
    """Mean ms per step spent in each conv kernel, and in everything else (graph, GEMMs, optimiser)."""
    import tinygrad_seq as tgs

    with tgs.backend(backend):
        step = benchmark.tgs_step("cnn", benchmark.CPU_SIZES["cnn"])
        for _ in range(3):
            step()
        totals = collections.defaultdict(float)
        with timed_kernels(kernels("conv", "cpu"), totals):
            start = time.perf_counter()
            for _ in range(steps):
                step()
            total = time.perf_counter() - start
    rows = [(name, totals[name] / steps * 1e3) for name in KERNELS]
    rows.append(("everything else", (total - sum(totals.values())) / steps * 1e3))
    return total / steps * 1e3, rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--backend", action="append", help="backend(s) to time (default: every available one)")
    parser.add_argument("--breakdown", action="store_true", help="also show time per kernel call")
    args = parser.parse_args()

    import torch
    torch.set_num_threads(2)
    backends = args.backend or [name for name, (_, devices) in BACKENDS.items()
                                if "cpu" in devices and unavailable_reason(name) is None]
    print(f"machine: {platform.processor() or platform.machine()}, python {sys.version.split()[0]}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads)", file=sys.stderr)
    results = benchmark.run(["cnn"], backends, "cpu", args.warmup, args.repeats, True,
                            echo=lambda line: print(line, file=sys.stderr))
    print(benchmark.format_table(results))
    if args.breakdown:
        for name in backends:
            total, rows = breakdown(name)
            print(f"\n{name}: {total:.1f} ms/step (mean of 10)")
            for label, ms in rows:
                print(f"  {label:20s} {ms:7.2f} ms  {100 * ms / total:5.1f}%")


if __name__ == "__main__":
    main()
