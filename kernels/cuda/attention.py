"""Fused scaled dot-product attention, CUDA backend (contract: reference/attention.py).

The four products are the reference's: cuBLAS matmuls on CuPy (`visible_matmul`, which keeps
a hidden pair out of them when an operand holds NaN/inf).  What lies between them runs in one
kernel per pass, one thread block per query row (rows = N * L), its threads striding over the
keys and combining partial maxima and sums in shared memory (softmax.py's `_block_reduce`):

    forward:  s <- p = exp(scale s - lse) (0 where hidden), lse = max + log sum exp(scale s - max)
    backward: s <- p, dp <- ds = p (dp - D), D = dout_i . out_i

so the score-sized arrays are written in place and no other L x S array is made.
"""
import math

from numba import cuda, float32, float64

from tinygrad_seq.device import xp_of
from tinygrad_seq.kernels.reference.attention import (check_attention_args, check_attention_grad_args,
                                                      stacked, unstacked, visible_matmul)

from ._launch import kernel_arg
from .softmax import MAX_ROW_BLOCKS, ROW_THREADS, _block_reduce


@cuda.jit(device=True, cache=True)
def _probability_rows(s, lse, L, scale, causal, scratch):
    """Row r = n L + i of s (rows, S) becomes p; lse[r] its log normaliser."""
    rows, S = s.shape
    zero = s.dtype.type(0)
    for row in range(cuda.blockIdx.x, rows, cuda.gridDim.x):
        seen = min(row % L + 1, S) if causal else S
        partial = s.dtype.type(-math.inf)
        for j in range(cuda.threadIdx.x, seen, cuda.blockDim.x):
            x = s[row, j] * scale
            if x > partial or x != x:      # a NaN score wins: its row becomes NaN
                partial = x
        m = _block_reduce(scratch, partial, True)
        partial = zero
        for j in range(cuda.threadIdx.x, seen, cuda.blockDim.x):
            partial += math.exp(s[row, j] * scale - m)
        total = _block_reduce(scratch, partial, False)
        log_normaliser = m + math.log(total)
        for j in range(cuda.threadIdx.x, S, cuda.blockDim.x):
            s[row, j] = math.exp(s[row, j] * scale - log_normaliser) if j < seen else zero
        if cuda.threadIdx.x == 0:
            lse[row] = log_normaliser


@cuda.jit(device=True, cache=True)
def _score_gradient_rows(s, dp, dout, out, lse, L, scale, causal, scratch):
    """Row r of s becomes p = exp(scale s - lse), row r of dp becomes ds = p (dp - D)."""
    rows, S = s.shape
    zero = s.dtype.type(0)
    for row in range(cuda.blockIdx.x, rows, cuda.gridDim.x):
        seen = min(row % L + 1, S) if causal else S
        partial = zero
        for e in range(cuda.threadIdx.x, out.shape[1], cuda.blockDim.x):
            partial += dout[row, e] * out[row, e]
        D = _block_reduce(scratch, partial, False)
        for j in range(cuda.threadIdx.x, S, cuda.blockDim.x):
            if j < seen:
                p = math.exp(s[row, j] * scale - lse[row])
                s[row, j] = p
                dp[row, j] = p * (dp[row, j] - D)
            else:
                s[row, j] = zero
                dp[row, j] = zero


# Shared memory needs its element type at compile time: a two-line kernel per float type.
@cuda.jit(cache=True)
def _probabilities_f32(s, lse, L, scale, causal):
    _probability_rows(s, lse, L, scale, causal, cuda.shared.array(ROW_THREADS, float32))


@cuda.jit(cache=True)
def _probabilities_f64(s, lse, L, scale, causal):
    _probability_rows(s, lse, L, scale, causal, cuda.shared.array(ROW_THREADS, float64))


@cuda.jit(cache=True)
def _score_gradients_f32(s, dp, dout, out, lse, L, scale, causal):
    _score_gradient_rows(s, dp, dout, out, lse, L, scale, causal, cuda.shared.array(ROW_THREADS, float32))


@cuda.jit(cache=True)
def _score_gradients_f64(s, dp, dout, out, lse, L, scale, causal):
    _score_gradient_rows(s, dp, dout, out, lse, L, scale, causal, cuda.shared.array(ROW_THREADS, float64))


def _grid(rows):
    return max(1, min(MAX_ROW_BLOCKS, rows)), ROW_THREADS


def attention_forward(q, k, v, scale, causal, *, out=None):
    """(out, lse) of softmax(scale q k^T, hidden pairs excluded) v; see reference/attention.py.
    Computed on contiguous stacks (N, L, E): views are copied in, the results written back."""
    check_attention_args(q, k, v, out)
    xp = xp_of(q)
    q3, k3, v3 = (xp.ascontiguousarray(stacked(a)) for a in (q, k, v))
    N, L, S = q3.shape[0], q3.shape[1], k3.shape[1]
    p = xp.matmul(q3, k3.swapaxes(-1, -2))                # the scores, p in place below
    lse = xp.empty((N, L), dtype=q.dtype)
    if p.size:
        kernel = _probabilities_f32 if q.dtype == "float32" else _probabilities_f64
        kernel[_grid(N * L)](kernel_arg(p.reshape(N * L, S)), kernel_arg(lse.reshape(N * L)), L,
                             q.dtype.type(scale), bool(causal))
    return (unstacked(visible_matmul(p, v3, causal), q.shape[:-1] + v.shape[-1:], out),
            lse.reshape(q.shape[:-1]))


def attention_backward(dout, q, k, v, out, lse, scale, causal, *, dq=None, dk=None, dv=None):
    """(dq, dk, dv) of attention_forward's out; see reference/attention.py."""
    check_attention_grad_args(dout, q, k, v, out, lse, dq, dk, dv)
    xp = xp_of(q)
    dout3, q3, k3, v3, out3 = (xp.ascontiguousarray(stacked(a)) for a in (dout, q, k, v, out))
    N, L, S, Ev = q3.shape[0], q3.shape[1], k3.shape[1], v3.shape[2]
    lse2 = xp.ascontiguousarray(lse.reshape(N, L))
    p = xp.matmul(q3, k3.swapaxes(-1, -2))                # scores, then p
    ds = xp.matmul(dout3, v3.swapaxes(-1, -2))            # dp, then ds
    if p.size:
        kernel = _score_gradients_f32 if q.dtype == "float32" else _score_gradients_f64
        kernel[_grid(N * L)](kernel_arg(p.reshape(N * L, S)), kernel_arg(ds.reshape(N * L, S)),
                             kernel_arg(dout3.reshape(N * L, Ev)), kernel_arg(out3.reshape(N * L, Ev)),
                             kernel_arg(lse2.reshape(N * L)), L, q.dtype.type(scale), bool(causal))
    factor = q.dtype.type(scale)
    return (unstacked(visible_matmul(ds, k3, causal) * factor, q.shape, dq),
            unstacked(visible_matmul(ds, q3, causal, transposed=True) * factor, k.shape, dk),
            unstacked(visible_matmul(p, dout3, causal, transposed=True), v.shape, dv))
