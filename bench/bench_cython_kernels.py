"""Kernel-level race: Cython vs Numba vs the NumPy reference, beside PyTorch, per kernel family.

    python bench/bench_cython_kernels.py                  # table: median ms and ratio to PyTorch
    python bench/bench_cython_kernels.py --write-choice   # also record the per-family winner in the
                                                          # user's table (tinygrad_seq.backend.user_choice_table();
                                                          # copy it to tinygrad_seq/data/ to ship it)

Each family is timed at the shapes of the ../shared/benchmarks.md workloads (float32):
  recurrence  LSTM, GRU and tanh-RNN kernels, forward + backward, H=256 B=32 T=64 (the sum of
              the three is the family's figure). PyTorch: nn.LSTM/GRU/RNN forward + backward,
              which also does the input projection and weight gradients that the engine, not
              the kernel, does for us, so a ratio below 1 here still means we are ahead.
  conv        the cnn workload's conv2d(1->16) / maxpool / conv2d(16->32) / maxpool, B=64,
              forward + backward. PyTorch: F.conv2d + F.max_pool2d under autograd.
  softmax     16*4*128 rows x 128 with a causal mask, forward + backward, plus the log-softmax
              of the lstm_lm's (32*64, 65) logits, forward + backward (the family serves both).
              PyTorch: masked_fill(-inf) + softmax and F.log_softmax under autograd.
  activation  exact GELU over the transformer's MLP activations (16 x 128 x 512), forward +
              backward. PyTorch: F.gelu under autograd.
  optim       one Adam step over the lstm_lm's parameters (347k). PyTorch: torch.optim.Adam
              (foreach) on the same arrays.
  attention   the transformer's causal self-attention, 16*4 heads x 128 positions x 32 features,
              forward + backward of both layers (fused: the scores never leave the kernel).
              PyTorch: F.scaled_dot_product_attention(is_causal=True) under autograd.
  normalization  the transformer's LayerNorm over (B * T) rows of d = 128 with weight and bias,
              forward + backward (dx, dweight, dbias) of its five LayerNorms.
              PyTorch: F.layer_norm under autograd.
Median of 15 after 3 warm-ups, in blocks (see `race`); two passes, the lower block median kept,
because other processes share this machine. `auto` (tinygrad_seq/backend.py)
reads the written table; other devices' entries in it are kept.
"""
import argparse
import importlib
import os
import sys

import numpy as np

from tinygrad_seq.backend import (BACKENDS, CHOICE_TABLE, FAMILIES, save_auto_choices, unavailable_reason,
                                  user_choice_table)
from tinygrad_seq.benchmark import CPU_SIZES, best_block_median_ms

CANDIDATES = ("cython", "numba", "numpy")
DTYPE = np.float32


def family_module(backend, family):
    """The backend's module for `family`, or (None, why) when it cannot run here."""
    reason = unavailable_reason(backend)
    if reason:
        return None, reason
    try:
        return importlib.import_module(f"{BACKENDS[backend][0]}.{family}"), None
    except ImportError as exc:
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0]


# ----------------------------------------------------------------------------- workloads
# Each maker returns (ours, torch_step): ours(module) -> a zero-argument step for that backend.

def recurrence_workload():
    sizes = CPU_SIZES["lstm_lm"]
    T, B, H, V = sizes["T"], sizes["B"], sizes["H"], sizes["V"]
    rng = np.random.default_rng(0)

    def arr(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(DTYPE)

    h0, c0, dcT = np.zeros((B, H), DTYPE), np.zeros((B, H), DTYPE), np.zeros((B, H), DTYPE)
    dhs = arr(T, B, H)
    lstm = (arr(T, B, 4 * H), arr(4 * H, H, scale=H ** -0.5))
    gru = (arr(T, B, 3 * H), arr(3 * H, H, scale=H ** -0.5), arr(3 * H, scale=0.1))
    rnn = (arr(T, B, H), arr(H, H, scale=H ** -0.5))

    def ours(k):
        def step():
            hs, cs, gates = k.lstm_forward(lstm[0], lstm[1], h0, c0)
            k.lstm_backward(dhs, dcT, lstm[1], h0, c0, hs, cs, gates)
            hs, gates, hn = k.gru_forward(gru[0], gru[1], gru[2], h0)
            k.gru_backward(dhs, gru[1], h0, hs, gates, hn)
            hs = k.rnn_forward(rnn[0], rnn[1], h0, "tanh")
            k.rnn_backward(dhs, rnn[1], h0, hs, "tanh")
        return step

    def torch_step():
        import torch
        layers = [cls(V, H) for cls in (torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN)]
        x = torch.randn(T, B, V)
        grad = torch.from_numpy(dhs)

        def step():
            for layer in layers:
                out, _ = layer(x)
                out.backward(grad)
        return step
    return ours, torch_step


def conv_workload():
    B = CPU_SIZES["cnn"]["B"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, 1, 28, 28)).astype(DTYPE)
    w1, b1 = (rng.standard_normal((16, 1, 3, 3)) / 3).astype(DTYPE), np.zeros(16, DTYPE)
    w2, b2 = (rng.standard_normal((32, 16, 3, 3)) / 12).astype(DTYPE), np.zeros(32, DTYPE)
    one, pad, two = (1, 1), (1, 1), (2, 2)

    def ours(k):
        def step():
            y1 = k.conv2d_forward(x, w1, b1, one, pad, one)
            p1, a1 = k.maxpool2d_forward(y1, two, two, (0, 0))
            y2 = k.conv2d_forward(p1, w2, b2, one, pad, one)
            p2, a2 = k.maxpool2d_forward(y2, two, two, (0, 0))
            dy2 = k.maxpool2d_backward(p2, a2, y2.shape)      # p2 stands in for dL/dp2
            dp1, _, _ = k.conv2d_backward(dy2, p1, w2, one, pad, one, True)
            dy1 = k.maxpool2d_backward(dp1, a1, y1.shape)
            k.conv2d_backward(dy1, x, w1, one, pad, one, True)
        return step

    def torch_step():
        import torch
        import torch.nn.functional as F
        tx = torch.from_numpy(x)
        params = [torch.from_numpy(a).requires_grad_() for a in (w1, b1, w2, b2)]

        def step():
            p1 = F.max_pool2d(F.conv2d(tx, params[0], params[1], padding=1), 2)
            p2 = F.max_pool2d(F.conv2d(p1, params[2], params[3], padding=1), 2)
            p2.backward(p2.detach())
        return step
    return ours, torch_step


def softmax_workload():
    sizes = CPU_SIZES["transformer"]
    B, heads, T = sizes["B"], sizes["heads"], sizes["T"]
    lm = CPU_SIZES["lstm_lm"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B * heads * T, T)).astype(DTYPE)
    causal = np.triu(np.ones((T, T), dtype=bool), 1)          # True = a future position, excluded
    mask = np.ascontiguousarray(np.tile(causal, (B * heads, 1)))
    dy = rng.standard_normal(x.shape).astype(DTYPE)
    logits = (3 * rng.standard_normal((lm["B"] * lm["T"], lm["V"]))).astype(DTYPE)
    dlogp = rng.standard_normal(logits.shape).astype(DTYPE)

    def ours(k):
        def step():
            y = k.softmax_forward(x, mask)
            k.softmax_backward(dy, y)
            logp = k.log_softmax_forward(logits)
            k.log_softmax_backward(dlogp, logp)
        return step

    def torch_step():
        import torch
        tx, tlogits = torch.from_numpy(x).requires_grad_(), torch.from_numpy(logits).requires_grad_()
        tmask, tdy, tdlogp = torch.from_numpy(mask), torch.from_numpy(dy), torch.from_numpy(dlogp)

        def step():
            torch.softmax(tx.masked_fill(tmask, float("-inf")), dim=-1).backward(tdy)
            torch.log_softmax(tlogits, dim=-1).backward(tdlogp)
        return step
    return ours, torch_step


def activation_workload():
    sizes = CPU_SIZES["transformer"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((sizes["B"], sizes["T"], 4 * sizes["d"])).astype(DTYPE)
    dy = rng.standard_normal(x.shape).astype(DTYPE)

    def ours(k):
        def step():
            _, cdf = k.gelu_forward(x)
            k.gelu_backward(dy, x, cdf)
        return step

    def torch_step():
        import torch
        tx, tdy = torch.from_numpy(x).requires_grad_(), torch.from_numpy(dy)

        def step():
            torch.nn.functional.gelu(tx).backward(tdy)
        return step
    return ours, torch_step


def matmul_workload():
    """The lstm_lm step's weight-gradient GEMM and a Transformer layer's attention products."""
    lstm, tr = CPU_SIZES["lstm_lm"], CPU_SIZES["transformer"]
    rng = np.random.default_rng(0)
    rows = lstm["B"] * lstm["T"]
    d_gates = rng.standard_normal((rows, 4 * lstm["H"])).astype(DTYPE)
    inputs = rng.standard_normal((rows, lstm["V"] + 1 + lstm["H"])).astype(DTYPE)
    heads, dk = tr["heads"], tr["d"] // tr["heads"]
    q, k = (rng.standard_normal((tr["B"], heads, tr["T"], dk)).astype(DTYPE) for _ in range(2))

    def ours(kern):
        def step():
            kern.matmul(d_gates.T, inputs)
            kern.matmul(q, np.swapaxes(k, -1, -2))
        return step

    def torch_step():
        import torch
        tg, ti, tq, tk = (torch.from_numpy(a) for a in (d_gates, inputs, q, k))

        def step():
            tg.T @ ti
            tq @ tk.transpose(-1, -2)
        return step
    return ours, torch_step


def optim_workload():
    """One Adam step over the lstm_lm's parameters (the LSTM's and the Linear head's)."""
    sizes = CPU_SIZES["lstm_lm"]
    H, V = sizes["H"], sizes["V"]
    shapes = [(4 * H, V), (4 * H, H), (4 * H,), (4 * H,), (V, H), (V,)]
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(shape).astype(DTYPE) for shape in shapes]
    grads = [rng.standard_normal(shape).astype(DTYPE) for shape in shapes]

    def ours(k):
        state = [(p.copy(), np.zeros_like(p), np.zeros_like(p)) for p in params]
        steps = [0]

        def step():
            steps[0] += 1
            for (p, exp_avg, exp_avg_sq), g in zip(state, grads):
                k.adam_update(p, g, exp_avg, exp_avg_sq, None, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                              weight_decay=0.0, decoupled=False, step=steps[0])
        return step

    def torch_step():
        import torch
        twins = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
        for p, g in zip(twins, grads):
            p.grad = torch.from_numpy(g)
        return torch.optim.Adam(twins, lr=1e-3).step       # foreach, PyTorch's default on the CPU
    return ours, torch_step


def attention_workload():
    """The transformer step's attention: (B * heads) matrices of T x d/heads, causal, per layer."""
    sizes = CPU_SIZES["transformer"]
    N, L, E = sizes["B"] * sizes["heads"], sizes["T"], sizes["d"] // sizes["heads"]
    rng = np.random.default_rng(0)
    q, k, v, dout = (rng.standard_normal((N, L, E)).astype(DTYPE) for _ in range(4))
    scale = E ** -0.5

    def ours(kern):
        def step():
            for _ in range(sizes["layers"]):
                out, lse = kern.attention_forward(q, k, v, scale, True)
                kern.attention_backward(dout, q, k, v, out, lse, scale, True)
        return step

    def torch_step():
        import torch
        tq, tk, tv = (torch.from_numpy(a).requires_grad_() for a in (q, k, v))
        tdout = torch.from_numpy(dout)

        def step():
            for _ in range(sizes["layers"]):
                torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=True).backward(tdout)
        return step
    return ours, torch_step


def normalization_workload():
    """The transformer step's LayerNorms: (B * T) rows of d, weight and bias, 2 per layer + the final one."""
    sizes = CPU_SIZES["transformer"]
    rows, d, count = sizes["B"] * sizes["T"], sizes["d"], 2 * sizes["layers"] + 1
    rng = np.random.default_rng(0)
    x, dy = (rng.standard_normal((rows, d)).astype(DTYPE) for _ in range(2))
    weight, bias = (rng.standard_normal(d).astype(DTYPE) for _ in range(2))

    def ours(k):
        def step():
            for _ in range(count):
                _, mean, rstd = k.layer_norm_forward(x, weight, bias, 1e-5)
                k.layer_norm_backward(dy, x, weight, mean, rstd, True)
        return step

    def torch_step():
        import torch
        tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (x, weight, bias))
        tdy = torch.from_numpy(dy)

        def step():
            for _ in range(count):
                torch.nn.functional.layer_norm(tx, (d,), tw, tb, 1e-5).backward(tdy)
        return step
    return ours, torch_step


WORKLOADS = {"recurrence": recurrence_workload, "conv": conv_workload, "softmax": softmax_workload,
             "activation": activation_workload, "matmul": matmul_workload, "optim": optim_workload,
             "attention": attention_workload, "normalization": normalization_workload}


# ----------------------------------------------------------------------------- timing

def bench_family(family, candidates, with_torch, warmup, repeats):
    ours, torch_step = WORKLOADS[family]()
    steps, missing = {}, {}
    for backend in candidates:
        module, why = family_module(backend, family)
        if module is None:
            missing[backend] = why
        else:
            steps[backend] = ours(module)
    if with_torch:
        steps["torch"] = torch_step()
    return best_block_median_ms(steps, warmup, repeats), missing


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write-choice", action="store_true",
                        help=f"record each family's fastest backend in {user_choice_table()}")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--cython-threads", type=int, default=None,
                        help="OpenMP threads for the Cython loops (default: TGS_CYTHON_THREADS or all cores)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)

    try:
        import torch
        with_torch = True
        print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads")
    except ImportError:
        with_torch = False
        print("PyTorch not installed: no ratio column (pip install tinygrad_seq[bench])")
    if args.cython_threads is not None and unavailable_reason("cython") is None:
        importlib.import_module("tinygrad_seq.kernels.cython").set_num_threads(args.cython_threads)

    winners = {}
    for family in args.families.split(","):
        ms, missing = bench_family(family, CANDIDATES, with_torch, args.warmup, args.repeats)
        torch_ms = ms.pop("torch", None)
        print(f"\n{family}")
        for backend, t in sorted(ms.items(), key=lambda kv: kv[1]):
            ratio = f"  {t / torch_ms:5.2f}x PyTorch" if torch_ms else ""
            print(f"  {backend:8s} {t:9.2f} ms{ratio}")
        if torch_ms:
            print(f"  {'torch':8s} {torch_ms:9.2f} ms")
        for backend, why in missing.items():
            print(f"  {backend:8s} unavailable: {why}")
        if ms:
            winners[family] = min(ms, key=ms.get)
    print(f"\nfastest per family: {winners}")
    if args.write_choice and winners:
        save_auto_choices("cpu", winners, user_choice_table())
        print(f"wrote {user_choice_table()} (the shipped default is {os.path.relpath(CHOICE_TABLE)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
