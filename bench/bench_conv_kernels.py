"""Time the conv/pool and softmax kernels of every available CPU backend against PyTorch's.

    python bench/bench_conv_kernels.py                # float32, 2 threads
    python bench/bench_conv_kernels.py --threads 1 --dtype float64

Shapes are those of the workloads in ../shared/benchmarks.md:
  cnn:          64x1x28x28 -> Conv2d(1,16,3,pad 1) -> MaxPool2d(2) -> Conv2d(16,32,3,pad 1) -> MaxPool2d(2)
  transformer:  causal attention softmax, B=16, 4 heads, T=128 -> 8192 rows of 128

Each kernel call is timed alone (median of 15 after 3 warm-ups, tinygrad_seq.benchmark.median_ms),
beside the ATen op PyTorch's autograd runs for the same layer in the same run:
F.conv2d / aten.convolution_backward, F.max_pool2d / aten.max_pool2d_with_indices_backward,
masked_fill(-inf) + softmax / aten._softmax_backward_data.  The first convolution's input
needs no gradient in the cnn workload, so PyTorch's backward there computes dw and db only,
while the kernel contract always returns dx as well.  Ratio = backend ms / PyTorch ms.
"""
import argparse
import importlib
import os
import platform
import sys

import numpy as np

from tinygrad_seq.backend import BACKENDS, unavailable_reason
from tinygrad_seq.benchmark import median_ms

CONVS = {  # name: (input shape, weight shape, padding, does the input need a gradient)
    "conv1": ((64, 1, 28, 28), (16, 1, 3, 3), (1, 1), False),
    "conv2": ((64, 16, 14, 14), (32, 16, 3, 3), (1, 1), True),
}
POOLS = {"pool1": (64, 16, 28, 28), "pool2": (64, 32, 14, 14)}
ATTENTION = dict(batch=16, heads=4, T=128)
ONE, NO_PAD = (1, 1), (0, 0)
POOL_2X2 = (2, 2)


def kernel_cases(rng, dtype):
    """{case name: (forward args, backward args from the forward's output)} for the kernels."""
    cases = {}
    for name, (x_shape, w_shape, padding, _) in CONVS.items():
        x = rng.standard_normal(x_shape).astype(dtype)
        w = rng.standard_normal(w_shape).astype(dtype)
        b = rng.standard_normal(w_shape[0]).astype(dtype)
        cases[name] = ("conv", x, w, b, padding)
    for name, shape in POOLS.items():
        cases[name] = ("pool", rng.standard_normal(shape).astype(dtype))
    rows = ATTENTION["batch"] * ATTENTION["heads"] * ATTENTION["T"]
    T = ATTENTION["T"]
    causal = np.triu(np.ones((T, T), dtype=bool), 1)
    cases["softmax"] = ("softmax", rng.standard_normal((rows, T)).astype(dtype),
                        np.ascontiguousarray(np.tile(causal, (rows // T, 1))))
    return cases


def time_backend(conv, softmax, cases, warmup, repeats):
    """{(case, 'fwd'|'bwd'): ms} for one backend's conv and softmax modules."""
    out = {}
    rng = np.random.default_rng(1)
    for name, case in cases.items():
        kind = case[0]
        if kind == "conv":
            _, x, w, b, padding = case
            y = conv.conv2d_forward(x, w, b, ONE, padding, ONE)
            dy = rng.standard_normal(y.shape).astype(x.dtype)
            out[name, "fwd"] = median_ms(lambda: conv.conv2d_forward(x, w, b, ONE, padding, ONE), warmup, repeats)
            out[name, "bwd"] = median_ms(lambda: conv.conv2d_backward(dy, x, w, ONE, padding, ONE, True),
                                         warmup, repeats)
        elif kind == "pool":
            x = case[1]
            y, argmax = conv.maxpool2d_forward(x, POOL_2X2, POOL_2X2, NO_PAD)
            dy = rng.standard_normal(y.shape).astype(x.dtype)
            out[name, "fwd"] = median_ms(lambda: conv.maxpool2d_forward(x, POOL_2X2, POOL_2X2, NO_PAD),
                                         warmup, repeats)
            out[name, "bwd"] = median_ms(lambda: conv.maxpool2d_backward(dy, argmax, x.shape), warmup, repeats)
        else:
            _, x, mask = case
            y = softmax.softmax_forward(x, mask)
            dy = rng.standard_normal(y.shape).astype(x.dtype)
            out[name, "fwd"] = median_ms(lambda: softmax.softmax_forward(x, mask), warmup, repeats)
            out[name, "bwd"] = median_ms(lambda: softmax.softmax_backward(dy, y), warmup, repeats)
    return out


def time_torch(cases, warmup, repeats):
    """The same table for the ATen ops PyTorch's autograd would run."""
    import torch
    import torch.nn.functional as F

    aten = torch.ops.aten
    out = {}
    rng = np.random.default_rng(1)
    with torch.no_grad():
        for name, case in cases.items():
            kind = case[0]
            if kind == "conv":
                _, x, w, b, padding = (torch.from_numpy(a) if isinstance(a, np.ndarray) else a for a in case)
                y = F.conv2d(x, w, b, padding=padding)
                dy = torch.from_numpy(rng.standard_normal(tuple(y.shape)).astype(case[1].dtype))
                mask = [CONVS[name][3], True, True]
                out[name, "fwd"] = median_ms(lambda: F.conv2d(x, w, b, padding=padding), warmup, repeats)
                out[name, "bwd"] = median_ms(lambda: aten.convolution_backward(
                    dy, x, w, [w.shape[0]], list(ONE), list(padding), list(ONE), False, [0, 0], 1, mask),
                    warmup, repeats)
            elif kind == "pool":
                x = torch.from_numpy(case[1])
                y, idx = F.max_pool2d(x, 2, return_indices=True)
                dy = torch.from_numpy(rng.standard_normal(tuple(y.shape)).astype(case[1].dtype))
                out[name, "fwd"] = median_ms(lambda: F.max_pool2d(x, 2, return_indices=True), warmup, repeats)
                out[name, "bwd"] = median_ms(lambda: aten.max_pool2d_with_indices_backward(
                    dy, x, list(POOL_2X2), list(POOL_2X2), list(NO_PAD), list(ONE), False, idx), warmup, repeats)
            else:
                x, mask = torch.from_numpy(case[1]), torch.from_numpy(case[2])
                y = torch.softmax(x.masked_fill(mask, float("-inf")), -1)
                dy = torch.from_numpy(rng.standard_normal(tuple(y.shape)).astype(case[1].dtype))
                out[name, "fwd"] = median_ms(lambda: torch.softmax(x.masked_fill(mask, float("-inf")), -1),
                                             warmup, repeats)
                out[name, "bwd"] = median_ms(lambda: aten._softmax_backward_data(dy, y, -1, x.dtype),
                                             warmup, repeats)
    return out


def format_table(torch_ms, results):
    names = list(results)
    head = f"{'kernel':16s} {'torch ms':>9s}" + "".join(f" {n + ' ms':>10s} {'ratio':>6s}" for n in names)
    lines = [head, "-" * len(head)]
    groups = {"cnn conv+pool": [k for k in torch_ms if k[0] != "softmax"],
              "attention softmax": [k for k in torch_ms if k[0] == "softmax"]}
    for label, keys in groups.items():
        for key in keys:
            row = f"{key[0] + ' ' + key[1]:16s} {torch_ms[key]:9.3f}"
            for n in names:
                row += f" {results[n][key]:10.3f} {results[n][key] / torch_ms[key]:6.2f}"
            lines.append(row)
        total = sum(torch_ms[k] for k in keys)
        row = f"{'= ' + label:16s}"[:16] + f" {total:9.3f}"
        for n in names:
            mine = sum(results[n][k] for k in keys)
            row += f" {mine:10.3f} {mine / total:6.2f}"
        lines += [row, ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="threads for PyTorch and Numba")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--backend", action="append", help="backend(s) to time (default: every available CPU one)")
    args = parser.parse_args()

    import torch
    torch.set_num_threads(args.threads)
    backends = args.backend or [name for name, (_, devices) in BACKENDS.items() if "cpu" in devices]
    cases = kernel_cases(np.random.default_rng(0), np.dtype(args.dtype))
    results = {}
    for name in backends:
        reason = unavailable_reason(name)
        if reason:
            print(f"skipping {name}: {reason}", file=sys.stderr)
            continue
        if name == "numba":
            import numba
            numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
        package = BACKENDS[name][0]
        try:
            conv = importlib.import_module(package + ".conv")
            softmax = importlib.import_module(package + ".softmax")
        except ImportError as exc:
            print(f"skipping {name}: {exc}", file=sys.stderr)
            continue
        results[name] = time_backend(conv, softmax, cases, args.warmup, args.repeats)
    torch_ms = time_torch(cases, args.warmup, args.repeats)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}; {args.dtype}; torch {torch.__version__} and numba with "
          f"{args.threads} thread(s); median of {args.repeats} after {args.warmup} warm-ups")
    print(format_table(torch_ms, results))


if __name__ == "__main__":
    main()
