"""Log-softmax of the lstm_lm workload's logits, (2048, 65) float32 (32 sequences x 64 steps over a
65-character vocabulary): the softmax kernel family's log_softmax_forward and _backward on every
CPU backend, beside PyTorch's, in one run.

    python bench/bench_log_softmax.py [--repeats 50] [--rows 2048] [--n 65]

Rows:
    <backend>        log_softmax_forward / log_softmax_backward called directly
    engine[cython]   F.cross_entropy on the Tensor engine, forward + backward (ops.LogSoftmax on the
                     cython kernels, then ops.NLLLoss): the loss of every language-model step
    torch            torch.ops.aten._log_softmax / _log_softmax_backward_data (what F.log_softmax
                     runs), and F.log_softmax + backward under autograd; F.cross_entropy +
                     backward beside engine[cython]
Timing as bench_layer_norm.py's (block medians, the lowest of `passes` rounds: the machine is
shared).  Ratios are to PyTorch's.
"""
import importlib

import numpy as np

import tinygrad_seq as tgs
from tinygrad_seq.backend import BACKENDS, unavailable_reason
from tinygrad_seq.benchmark import row_kernel_race, runnable_backends
from tinygrad_seq.nn import functional as F


def steps(rows, n):
    """{(row name, column): zero-argument step}; columns "forward", "backward", "both", "loss"."""
    rng = np.random.default_rng(0)
    x, dy = ((3 * rng.standard_normal((rows, n))).astype(np.float32) for _ in range(2))
    target = rng.integers(0, n, size=rows)
    found = {}
    for name in runnable_backends("cpu"):
        k = importlib.import_module(f"{BACKENDS[name][0]}.softmax")
        y = k.log_softmax_forward(x)
        found[name, "forward"] = lambda k=k: k.log_softmax_forward(x)
        found[name, "backward"] = lambda k=k, y=y: k.log_softmax_backward(dy, y)

    if unavailable_reason("cython") is None:
        logits, labels = tgs.Tensor(x, requires_grad=True), tgs.Tensor(target)

        def engine_step():
            with tgs.backend("cython"):
                F.cross_entropy(logits, labels).backward()
        found["engine[cython]", "loss"] = engine_step
    try:
        import torch
    except ImportError:
        return found
    tx, tdy, ttarget = torch.from_numpy(x).requires_grad_(), torch.from_numpy(dy), torch.from_numpy(target)
    with torch.no_grad():
        ty = torch.ops.aten._log_softmax(tx, 1, False)
    found["torch", "forward"] = lambda: torch.ops.aten._log_softmax(tx.detach(), 1, False)
    found["torch", "backward"] = lambda: torch.ops.aten._log_softmax_backward_data(tdy, ty, 1, torch.float32)
    found["torch", "both"] = lambda: torch.nn.functional.log_softmax(tx, dim=-1).backward(tdy)
    found["torch", "loss"] = lambda: torch.nn.functional.cross_entropy(tx, ttarget).backward()
    return found


def main(argv=None):
    row_kernel_race(argv, __doc__, steps, ("forward", "backward", "both", "loss"), n=65,
                    what="log-softmax of ({rows}, {n}) float32",
                    footnote="  (fwd+bwd of a backend: the sum of its two calls; of torch: F.log_softmax + "
                             "backward under autograd;\n   loss: F.cross_entropy (mean over the rows) + "
                             "backward, ours on the engine)")


if __name__ == "__main__":
    main()
