"""The transformer workload's attention, forward + backward of both layers, three ways in one run:

    fused     ops.ScaledDotProductAttention on the cython backend (the attention kernel family)
    composed  the previous path: matmul, scale, masked softmax (softmax family), matmul
    pytorch   torch.nn.functional.scaled_dot_product_attention(is_causal=True) under autograd

    python bench/bench_attention.py [--repeats 15]

Sizes from tinygrad_seq/benchmark.py's CPU_SIZES["transformer"]: (B * heads) matrices of
T x d/heads, causal, float32.  Each variant is timed in blocks (median of `repeats`), the blocks
taken in turn over `passes` rounds and the lowest block median kept: the machine is shared.
"""
import argparse

import numpy as np

import tinygrad_seq as tgs
from tinygrad_seq.benchmark import CPU_SIZES, best_block_median_ms, cpu_model
from tinygrad_seq.nn import functional as F


def steps():
    sizes = CPU_SIZES["transformer"]
    B, heads, T, layers = sizes["B"], sizes["heads"], sizes["T"], sizes["layers"]
    d = sizes["d"] // heads
    rng = np.random.default_rng(0)
    q, k, v, dout = (rng.standard_normal((B, heads, T, d)).astype(np.float32) for _ in range(4))

    def ours(return_weights):
        leaves = [tgs.Tensor(a, requires_grad=True) for a in (q, k, v)]
        grad = tgs.Tensor(dout)

        def step():
            with tgs.backend("cython"):
                for _ in range(layers):
                    out = F.scaled_dot_product_attention(*leaves, is_causal=True, return_weights=return_weights)
                    (out[0] if return_weights else out).backward(grad)
        return step

    found = {"fused": ours(False), "composed": ours(True)}   # return_weights keeps the composed path
    try:
        import torch
    except ImportError:
        return found
    tq, tk, tv = (torch.from_numpy(a).requires_grad_() for a in (q, k, v))
    tdout = torch.from_numpy(dout)

    def torch_step():
        for _ in range(layers):
            torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=True).backward(tdout)
    found["pytorch"] = torch_step
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args(argv)
    sizes = CPU_SIZES["transformer"]
    print(f"{cpu_model()}; attention of the transformer workload: {sizes['B'] * sizes['heads']} matrices of "
          f"{sizes['T']} x {sizes['d'] // sizes['heads']}, causal, float32, forward + backward of "
          f"{sizes['layers']} layers")
    ms = best_block_median_ms(steps(), repeats=args.repeats, passes=args.passes)
    for name, t in ms.items():
        ratio = f"  {t / ms['pytorch']:.2f}x PyTorch" if "pytorch" in ms and name != "pytorch" else ""
        print(f"  {name:9s} {t:7.2f} ms{ratio}")


if __name__ == "__main__":
    main()
