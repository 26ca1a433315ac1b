"""Fused scaled dot-product attention compiled with Numba (contract: reference/attention.py).

One matrix per iteration of a `prange` over N, so each thread owns its matrices' dk and dv and
the sums need no synchronisation.  Within a matrix, plain loops over the visible pairs only
(j < seen(i) = i + 1 under the causal mask, else S): a hidden pair is never computed, so a NaN
in a key or value a query cannot see never reaches it, as the reference specifies.

Forward, per query i: the scores of its visible keys, their max m, lse = m + log sum exp(s - m),
out_i = sum_j exp(s_ij - lse) v_j.  Backward, per query i, with p_ij recomputed from lse:
ds_ij = p_ij (dout_i . v_j - dout_i . out_i); dq_i += scale ds_ij k_j; dk_j += scale ds_ij q_i;
dv_j += p_ij dout_i.
"""
import math

import numpy as np
from numba import njit, prange

from tinygrad_seq.kernels.reference.attention import (check_attention_args, check_attention_grad_args, stacked,
                                                      unstacked)


@njit(cache=True)
def _seen(i, S, causal):
    """How many keys query i sees: j < i + 1 under the causal mask (top-left aligned), else all."""
    return min(i + 1, S) if causal else S


@njit(cache=True, parallel=True)
def _forward(q, k, v, scale, causal, zero):
    # zero and scale arrive typed as q's dtype, so float32 sums stay float32
    N, L, E = q.shape
    S, Ev = k.shape[1], v.shape[2]
    out = np.zeros((N, L, Ev), dtype=q.dtype)
    lse = np.empty((N, L), dtype=q.dtype)
    for n in prange(N):
        s = np.empty(S, dtype=q.dtype)
        for i in range(L):
            seen = _seen(i, S, causal)
            for j in range(seen):
                total = zero
                for e in range(E):
                    total += q[n, i, e] * k[n, j, e]
                s[j] = total * scale
            m = s[0]
            for j in range(1, seen):
                if s[j] > m or s[j] != s[j]:     # a NaN score makes the row NaN
                    m = s[j]
            acc = zero
            for j in range(seen):
                acc += math.exp(s[j] - m)
            lse[n, i] = m + math.log(acc)
            for j in range(seen):
                p = math.exp(s[j] - lse[n, i])
                for e in range(Ev):
                    out[n, i, e] += p * v[n, j, e]
    return out, lse


@njit(cache=True, parallel=True)
def _backward(dout, q, k, v, out, lse, scale, causal, zero):
    N, L, E = q.shape
    S, Ev = k.shape[1], v.shape[2]
    dq = np.zeros_like(q)
    dk = np.zeros_like(k)
    dv = np.zeros_like(v)
    for n in prange(N):
        for i in range(L):
            D = zero
            for e in range(Ev):
                D += dout[n, i, e] * out[n, i, e]
            for j in range(_seen(i, S, causal)):
                s = zero
                for e in range(E):
                    s += q[n, i, e] * k[n, j, e]
                p = math.exp(s * scale - lse[n, i])
                dp = zero
                for e in range(Ev):
                    dp += dout[n, i, e] * v[n, j, e]
                ds = p * (dp - D) * scale
                for e in range(E):
                    dq[n, i, e] += ds * k[n, j, e]
                    dk[n, j, e] += ds * q[n, i, e]
                for e in range(Ev):
                    dv[n, j, e] += p * dout[n, i, e]
    return dq, dk, dv


def attention_forward(q, k, v, scale, causal, *, out=None):
    """(out, lse) of softmax(scale q k^T, hidden pairs excluded) v; see reference/attention.py.
    Computed on contiguous stacks (N, L, E): views are copied in, the results written back."""
    check_attention_args(q, k, v, out)
    result, lse = _forward(*(np.ascontiguousarray(stacked(a)) for a in (q, k, v)), q.dtype.type(scale),
                           bool(causal), q.dtype.type(0))
    return unstacked(result, q.shape[:-1] + v.shape[-1:], out), lse.reshape(q.shape[:-1])


def attention_backward(dout, q, k, v, out, lse, scale, causal, *, dq=None, dk=None, dv=None):
    """(dq, dk, dv) of attention_forward's out; see reference/attention.py."""
    check_attention_grad_args(dout, q, k, v, out, lse, dq, dk, dv)
    dout3, q3, k3, v3, out3 = (np.ascontiguousarray(stacked(a)) for a in (dout, q, k, v, out))
    lse2 = np.ascontiguousarray(lse.reshape(q3.shape[:2]))
    grads = _backward(dout3, q3, k3, v3, out3, lse2, q.dtype.type(scale), bool(causal), q.dtype.type(0))
    return tuple(unstacked(g, a.shape, given) for g, a, given in zip(grads, (q, k, v), (dq, dk, dv)))
