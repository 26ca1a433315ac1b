"""Fused scaled dot-product attention, Cython backend: argument checks from the reference, the
blocked loops in _attention.pyx.

Every array is read and written where it lies: q, k, v, dout and out of shape (..., L, E) with
any strides but a unit one along the last axis (a head view of a packed projection), and out,
dq, dk, dv filled in place when the caller hands them in (`out=`, `dq=` ...), else allocated
C-contiguous.  Nothing of their size is copied; only lse (..., L) is made contiguous.

Under the causal mask a matrix whose multiplied operands hold a NaN or inf (v forward; q, k,
dout backward) comes back `deferred` from the compiled loops, which would let a hidden pair's
0 * inf = NaN through; those matrices, and the calls with an empty axis, are the reference's.
"""
import numpy as np

from tinygrad_seq.kernels.reference import attention as reference
from tinygrad_seq.kernels.reference.attention import check_attention_args, check_attention_grad_args

from . import _attention


def _one(arrays, n, lead):
    """Matrix n (the leading axes `lead` in C order) of each array, as a one-matrix stack: views."""
    index = np.unravel_index(n, lead)
    return [a[index][None] for a in arrays]


def attention_forward(q, k, v, scale, causal, *, out=None):
    """(out, lse) of softmax(scale q k^T, hidden pairs excluded) v; see reference/attention.py."""
    check_attention_args(q, k, v, out)
    if q.size == 0 or k.size == 0 or v.size == 0:
        return reference.attention_forward(q, k, v, scale, causal, out=out)
    if out is None:
        out = np.empty(q.shape[:-1] + v.shape[-1:], dtype=q.dtype)
    lse = np.empty(q.shape[:-1], dtype=q.dtype)
    deferred = _attention.attention_forward(q, k, v, out, lse, float(scale), bool(causal))
    for n in np.flatnonzero(deferred):
        q1, k1, v1, out1, lse1 = _one((q, k, v, out, lse), n, q.shape[:-2])
        out1[...], lse1[...] = reference.attention_forward(q1, k1, v1, scale, causal)
    return out, lse


def attention_backward(dout, q, k, v, out, lse, scale, causal, *, dq=None, dk=None, dv=None):
    """(dq, dk, dv) of attention_forward's out; see reference/attention.py."""
    check_attention_grad_args(dout, q, k, v, out, lse, dq, dk, dv)
    if q.size == 0 or k.size == 0 or v.size == 0:
        return reference.attention_backward(dout, q, k, v, out, lse, scale, causal, dq=dq, dk=dk, dv=dv)
    grads = [np.empty(a.shape, dtype=a.dtype) if given is None else given
             for a, given in zip((q, k, v), (dq, dk, dv))]
    deferred = _attention.attention_backward(dout, q, k, v, out, np.ascontiguousarray(lse), *grads,
                                             float(scale), bool(causal))
    for n in np.flatnonzero(deferred):
        *inputs, dq1, dk1, dv1 = _one((dout, q, k, v, out, lse, *grads), n, q.shape[:-2])
        for grad, exact in zip((dq1, dk1, dv1), reference.attention_backward(*inputs, scale, causal)):
            grad[...] = exact
    return tuple(grads)
