"""Run the workloads of ../shared/benchmarks.md on every available backend beside PyTorch.

    python bench/run_benchmarks.py                 # all CPU workloads
    python bench/run_benchmarks.py -w lstm_lm --memory
    python bench/run_benchmarks.py --device cuda   # the GPU sizes, on a GPU machine

The same as `tgs bench`; prints a Markdown table for BENCHMARKS.md.
"""
import platform
import sys

from tinygrad_seq.cli.bench import bench

if __name__ == "__main__":
    print(f"machine: {platform.processor() or platform.machine()}, python {sys.version.split()[0]}", file=sys.stderr)
    bench()
