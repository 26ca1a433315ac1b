"""LayerNorm of the transformer workload's shape, (2048, 128) float32 with weight and bias: the
normalization kernel family's forward and backward on every CPU backend, beside PyTorch's fused
layer norm, in one run.

    python bench/bench_layer_norm.py [--repeats 50] [--rows 2048] [--n 128]

Rows:
    <backend>        layer_norm_forward / layer_norm_backward(need_affine=True) called directly
    engine[cython]   F.layer_norm on the Tensor engine, forward + backward (the op's reshapes,
                     casts and autograd around the cython kernels)
    torch            torch.ops.aten.native_layer_norm / native_layer_norm_backward (what
                     F.layer_norm runs), and F.layer_norm + backward under autograd
Each is timed in blocks (median of `repeats` calls), the blocks taken in turn over `passes`
rounds and the lowest block median kept: the machine is shared.  Ratios are to PyTorch's.
"""
import importlib

import numpy as np

import tinygrad_seq as tgs
from tinygrad_seq.backend import BACKENDS, unavailable_reason
from tinygrad_seq.benchmark import row_kernel_race, runnable_backends
from tinygrad_seq.nn import functional as F


def steps(rows, n):
    """{(row name, column): zero-argument step}; columns "forward", "backward", "both"."""
    rng = np.random.default_rng(0)
    x, dy = (rng.standard_normal((rows, n)).astype(np.float32) for _ in range(2))
    weight, bias = (rng.standard_normal(n).astype(np.float32) for _ in range(2))
    found = {}
    for name in runnable_backends("cpu"):
        k = importlib.import_module(f"{BACKENDS[name][0]}.normalization")
        _, mean, rstd = k.layer_norm_forward(x, weight, bias, 1e-5)
        found[name, "forward"] = lambda k=k: k.layer_norm_forward(x, weight, bias, 1e-5)
        found[name, "backward"] = lambda k=k, m=mean, r=rstd: k.layer_norm_backward(dy, x, weight, m, r, True)

    if unavailable_reason("cython") is None:
        leaves = [tgs.Tensor(a, requires_grad=True) for a in (x, weight, bias)]
        grad = tgs.Tensor(dy)

        def engine_step():
            with tgs.backend("cython"):
                F.layer_norm(leaves[0], n, leaves[1], leaves[2], 1e-5).backward(grad)
        found["engine[cython]", "both"] = engine_step
    try:
        import torch
    except ImportError:
        return found
    tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (x, weight, bias))
    tdy = torch.from_numpy(dy)
    with torch.no_grad():
        _, tmean, trstd = torch.ops.aten.native_layer_norm(tx, [n], tw, tb, 1e-5)
    found["torch", "forward"] = lambda: torch.ops.aten.native_layer_norm(tx.detach(), [n], tw.detach(), tb.detach(), 1e-5)
    found["torch", "backward"] = lambda: torch.ops.aten.native_layer_norm_backward(
        tdy, tx.detach(), [n], tmean, trstd, tw.detach(), tb.detach(), [True, True, True])
    found["torch", "both"] = lambda: torch.nn.functional.layer_norm(tx, (n,), tw, tb, 1e-5).backward(tdy)
    return found


def main(argv=None):
    row_kernel_race(argv, __doc__, steps, ("forward", "backward", "both"), n=128,
                    what="layer norm of ({rows}, {n}) float32 with weight and bias",
                    footnote="  (fwd+bwd of a backend: the sum of its two calls; of torch: F.layer_norm + "
                             "backward under autograd)")


if __name__ == "__main__":
    main()
