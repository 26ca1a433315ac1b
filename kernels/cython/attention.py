"""Fused scaled dot-product attention, Cython backend: argument checks from the reference, the
blocked loops in _attention.pyx.

Under the causal mask a matrix whose multiplied operands hold a NaN or inf (v forward; q, k,
dout backward) comes back `deferred` from the compiled loops, which would let a hidden pair's
0 * inf = NaN through; those matrices, and the calls with an empty axis, are the reference's.
"""
import numpy as np

from tinygrad_seq.kernels.reference import attention as reference
from tinygrad_seq.kernels.reference.attention import check_attention_args, check_attention_grad_args

from . import _attention

_c = np.ascontiguousarray


def attention_forward(q, k, v, scale, causal):
    """(out, lse) of softmax(scale q k^T, hidden pairs excluded) v; see reference/attention.py."""
    check_attention_args(q, k, v)
    if q.size == 0 or k.size == 0 or v.size == 0:
        return reference.attention_forward(q, k, v, scale, causal)
    out, lse, deferred = _attention.attention_forward(_c(q), _c(k), _c(v), float(scale), bool(causal))
    for n in np.flatnonzero(deferred):
        out[n], lse[n] = (a[0] for a in reference.attention_forward(q[n:n + 1], k[n:n + 1], v[n:n + 1],
                                                                    scale, causal))
    return out, lse


def attention_backward(dout, q, k, v, out, lse, scale, causal):
    """(dq, dk, dv) of attention_forward's out; see reference/attention.py."""
    check_attention_grad_args(dout, q, k, v, out, lse)
    if q.size == 0 or k.size == 0 or v.size == 0:
        return reference.attention_backward(dout, q, k, v, out, lse, scale, causal)
    *grads, deferred = _attention.attention_backward(_c(dout), _c(q), _c(k), _c(v), _c(out), _c(lse),
                                                     float(scale), bool(causal))
    for n in np.flatnonzero(deferred):
        one = slice(n, n + 1)
        for grad, exact in zip(grads, reference.attention_backward(dout[one], q[one], k[one], v[one], out[one],
                                                                   lse[one], scale, causal)):
            grad[n] = exact[0]
    return tuple(grads)
