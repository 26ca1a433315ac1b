"""Reductions: sums, maxima, products and running sums along axes."""
import numpy as np

from ..device import xp_of
from ..tensor import Function


def _normalize_axis(axis, ndim):
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    for a in axes:
        if not -max(ndim, 1) <= a < max(ndim, 1):
            raise IndexError(f"dimension {a} is out of range for a tensor of {ndim} dimensions")
    if ndim == 0:  # PyTorch lets dim 0 / -1 name the one "dimension" of a 0-d tensor
        return ()
    return tuple(sorted(a % ndim for a in axes))


def _expand_reduced(dy, shape, axis, keepdims):
    """Bring a reduced gradient back to broadcast against the input of `shape`."""
    if axis is None:
        return dy.reshape((1,) * len(shape)) if dy.ndim != len(shape) else dy
    if not keepdims:
        xp = xp_of(dy)
        for a in axis:
            dy = xp.expand_dims(dy, a)
    return dy


class Sum(Function):
    """y = sum of x over `axis`;  dx = dy broadcast back over the summed axes."""

    def forward(self, x, axis=None, keepdims=False):
        self.axis = _normalize_axis(axis, x.ndim)
        self.shape, self.keepdims = x.shape, keepdims
        return x.sum(axis=self.axis, keepdims=keepdims)

    def backward(self, dy):
        xp = xp_of(dy)
        return xp.broadcast_to(_expand_reduced(dy, self.shape, self.axis, self.keepdims), self.shape).copy()


class Max(Function):
    """y = max of x over `axis` (torch.amax);  dx = dy at the maximal entries (shared equally
    among ties).  `max(dim)` with indices is a Gather at the argmax instead."""

    def forward(self, x, axis=None, keepdims=False):
        self.axis = _normalize_axis(axis, x.ndim)
        self.keepdims = keepdims
        y = x.max(axis=self.axis, keepdims=keepdims)
        self.save_for_backward(x, y)
        return y

    def backward(self, dy):
        x, y = self.saved
        y = _expand_reduced(y, x.shape, self.axis, self.keepdims)
        dy = _expand_reduced(dy, x.shape, self.axis, self.keepdims)
        winners = (x == y)
        count = winners.sum(axis=self.axis, keepdims=True)
        return (winners * (dy / count)).astype(dy.dtype)


class Prod(Function):
    """y = prod of x along one `axis`;  dx_i = dy * prod_{j != i} x_j, from prefix and suffix
    products so that zeros in x are handled exactly (no division by x)."""

    def forward(self, x, axis, keepdims=False):
        self.axis, self.keepdims = axis, keepdims
        self.save_for_backward(x)
        return x.prod(axis=axis, keepdims=keepdims)

    def backward(self, dy):
        (x,) = self.saved
        xp = xp_of(x)
        if x.size == 0:
            return xp.zeros_like(x)
        rows = xp.moveaxis(x, self.axis, -1)
        ones = xp.ones(rows.shape[:-1] + (1,), dtype=x.dtype)
        before = xp.cumprod(xp.concatenate([ones, rows[..., :-1]], axis=-1), axis=-1)
        after = xp.flip(xp.cumprod(xp.concatenate([ones, xp.flip(rows, -1)[..., :-1]], axis=-1), axis=-1), -1)
        g = dy if self.keepdims else xp.expand_dims(dy, self.axis)
        return xp.moveaxis(before * after * xp.moveaxis(g, self.axis, -1), -1, self.axis)


class CumSum(Function):
    """y_i = sum_{j <= i} x_j along `axis`;  dx_j = sum_{i >= j} dy_i (a reversed cumsum)."""

    def forward(self, x, axis):
        self.axis = axis
        return xp_of(x).cumsum(x, axis=axis, dtype=x.dtype if x.dtype.kind == "f" else np.int64)

    def backward(self, dy):
        xp = xp_of(dy)
        return xp.flip(xp.cumsum(xp.flip(dy, self.axis), axis=self.axis), self.axis)
