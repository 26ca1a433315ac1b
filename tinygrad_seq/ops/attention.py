"""Attention as one op: scaled dot-product attention whose L x S scores never leave the kernel
(the `attention` kernel family), instead of matmul, scale, masked softmax and matmul."""
import math

from ..device import address_of, allocation_of, device_of, rows_in_place, strided_view, xp_of
from ..tensor import Function


class ScaledDotProductAttention(Function):
    """out = p v,  p = softmax(scale q k^T) over the keys (causal: query i sees keys j <= i);
    per matrix, every leading axis of q (..., L, E), k (..., S, E), v (..., S, Ev) folded into one.

    Backward, with p recomputed from the saved lse = log sum_j exp(scale q k^T) (nothing of
    size L x S is kept), D = sum(dout * out, -1) and ds = p * (dout v^T - D):
    dq = scale ds k;  dk = scale ds^T q;  dv = p^T dout.

    No array of q's size is copied on the way (kernels/API.md: the kernels read any layout whose
    rows are contiguous, and fill the outputs they are given).  q, k, v and dout go in where they
    lie: in a transformer, head views (N, h, L, d) of the packed (N, L, 3E) projection.  Each
    output takes the memory layout of its input, so that the ops around it stay views: out
    q's ((N, L, h, d) in memory, so that the heads' join out.transpose(1, 2).reshape(N, L, E)
    is a view), dq, dk, dv q's, k's and v's, and when q, k, v are views of one array (the
    chunks of one projection) dq, dk, dv are the same views of one new array, which the
    chunking's backward (ops.Split) then hands on whole instead of concatenating.
    """

    def forward(self, q, k, v, scale, causal=False):
        from ..backend import kernels
        self.kernels = kernels("attention", device_of(q))
        self.scale, self.causal = float(scale), bool(causal)
        self.unbatched = q.ndim == 2          # (L, E): the kernels take a stack of matrices
        if self.unbatched:
            q, k, v = q[None], k[None], v[None]
        q, k, v = (rows_contiguous(a) for a in (q, k, v))
        out = xp_of(q).empty_like(q, shape=q.shape[:-1] + v.shape[-1:])      # q's axis order
        out, lse = self.kernels.attention_forward(q, k, v, self.scale, self.causal, out=out)
        self.save_for_backward(q, k, v, out, lse)
        return out[0] if self.unbatched else out

    def backward(self, dout):
        q, k, v, out, lse = self.saved
        dout = rows_contiguous(dout[None] if self.unbatched else dout).astype(out.dtype, copy=False)
        dq, dk, dv = empty_like_together((q, k, v))
        grads = self.kernels.attention_backward(dout, q, k, v, out, lse, self.scale, self.causal,
                                                dq=dq, dk=dk, dv=dv)
        return tuple(g[0] for g in grads) if self.unbatched else tuple(grads)


def rows_contiguous(a):
    """a, or a C-contiguous copy of it when its last axis does not have unit stride (the
    kernels read each row in place): a broadcast gradient, such as that of out.sum()."""
    return a if rows_in_place(a) else xp_of(a).ascontiguousarray(a)


def empty_like_together(arrays):
    """Uninitialised arrays laid out as `arrays` are (empty_like's order 'K').  When those are
    views of one allocation with one dtype, shape and strides that share no element (q, k, v
    chunked from one projection, each viewed as heads), they are the same views of one new
    array, the same distances apart: their gradients then reach Split.backward as consecutive
    slices of it."""
    xp = xp_of(arrays[0])
    first = arrays[0]
    if not _disjoint_views_of_one_allocation(arrays):
        return [xp.empty_like(a) for a in arrays]
    addresses = [address_of(a) for a in arrays]
    lowest = min(addresses)
    extent = sum((n - 1) * s for n, s in zip(first.shape, first.strides)) + first.itemsize
    buffer = xp.empty((max(addresses) - lowest + extent) // first.itemsize, dtype=first.dtype)
    return [strided_view(buffer[(address - lowest) // first.itemsize:], first.shape, first.strides)
            for address in addresses]


def _disjoint_views_of_one_allocation(arrays):
    """Whether `arrays` are views of one allocation with one dtype, shape and strides, whose
    elements are all distinct (False also where this cannot tell: negative strides, an empty
    array).  Sufficient test: each array alone repeats no element (sorted by stride, each axis
    steps past all that the smaller ones reach); the axes whose strides chain from the item
    size make one contiguous block of `run` bytes, and every other stride is a multiple of their
    gcd `period`; so, counted from the lowest first element and modulo `period`, each array's
    bytes lie in a window [offset, offset + run), and windows that neither overlap nor wrap
    around mean no shared element."""
    first = arrays[0]
    owner, size = allocation_of(first), first.itemsize
    if first.size == 0 or any(a.dtype != first.dtype or a.shape != first.shape or a.strides != first.strides
                              or allocation_of(a) is not owner for a in arrays[1:]):
        return False
    run, reach, others = size, size, []
    for stride, n in sorted((s, n) for s, n in zip(first.strides, first.shape) if n > 1):
        if stride < reach:
            return False
        reach += (n - 1) * stride
        if stride == run and not others:
            run *= n
        else:
            others.append(stride)
    offsets = [address_of(a) - address_of(first) for a in arrays]
    offsets = [offset - min(offsets) for offset in offsets]
    if any(offset % size for offset in offsets):
        return False
    period = math.gcd(*others) if others else max(offsets) + run
    windows = sorted(offset % period for offset in offsets)
    return windows[-1] + run <= period and all(b - a >= run for a, b in zip(windows, windows[1:]))
