"""The differentiable ops: each one a Function with its forward and local backward together.

Arrays are NumPy or CuPy; every op reads `xp` from its data, so one definition serves both.
Binary ops broadcast like NumPy, and their backward sums the gradient back down to each
input's shape (`unbroadcast`).
"""
import math

import numpy as np

from .backend import kernels
from .device import device_of, to_device, xp_of
from .tensor import Function


def unbroadcast(grad, shape):
    """Sum `grad` down to `shape`, undoing NumPy broadcasting."""
    if tuple(grad.shape) == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    squeeze = tuple(i for i, s in enumerate(shape) if s == 1 and grad.shape[i] != 1)
    if squeeze:
        grad = grad.sum(axis=squeeze, keepdims=True)
    return grad


def _broadcast_shape(op, a, b):
    try:
        return np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{op}: shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be broadcast together") from None


# ---------------------------------------------------------------------------- arithmetic
class Add(Function):
    """y = a + b;  da = dy, db = dy (summed over broadcast dims)."""

    def forward(self, a, b):
        _broadcast_shape("add", a, b)
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, dy):
        return unbroadcast(dy, self.shapes[0]), unbroadcast(dy, self.shapes[1])


class Sub(Function):
    """y = a - b;  da = dy, db = -dy."""

    def forward(self, a, b):
        _broadcast_shape("sub", a, b)
        self.shapes = a.shape, b.shape
        return a - b

    def backward(self, dy):
        return unbroadcast(dy, self.shapes[0]), unbroadcast(-dy, self.shapes[1])


class Mul(Function):
    """y = a * b;  da = dy * b, db = dy * a."""

    def forward(self, a, b):
        _broadcast_shape("mul", a, b)
        self.save_for_backward(a, b)
        return a * b

    def backward(self, dy):
        a, b = self.saved
        da = unbroadcast(dy * b, a.shape) if self.needs_input_grad[0] else None
        db = unbroadcast(dy * a, b.shape) if self.needs_input_grad[1] else None
        return da, db


class Div(Function):
    """y = a / b;  da = dy / b, db = -dy * a / b^2."""

    def forward(self, a, b):
        _broadcast_shape("div", a, b)
        self.save_for_backward(a, b)
        return a / b

    def backward(self, dy):
        a, b = self.saved
        da = unbroadcast(dy / b, a.shape) if self.needs_input_grad[0] else None
        db = unbroadcast(-dy * a / (b * b), b.shape) if self.needs_input_grad[1] else None
        return da, db


class Neg(Function):
    """y = -x;  dx = -dy."""

    def forward(self, x):
        return -x

    def backward(self, dy):
        return -dy


class Pow(Function):
    """y = x^p for a number p;  dx = dy * p * x^(p-1)."""

    def forward(self, x, exponent):
        self.exponent = exponent
        self.save_for_backward(x)
        return x ** exponent

    def backward(self, dy):
        (x,) = self.saved
        p = self.exponent
        return dy * p * x ** (p - 1) if p != 0 else dy * 0


class PowTensor(Function):
    """y = a^b for tensors;  da = dy * b * a^(b-1), db = dy * a^b * log(a)."""

    def forward(self, a, b):
        _broadcast_shape("pow", a, b)
        y = a ** b
        self.save_for_backward(a, b, y)
        return y

    def backward(self, dy):
        a, b, y = self.saved
        xp = xp_of(y)
        da = unbroadcast(dy * b * a ** (b - 1), a.shape) if self.needs_input_grad[0] else None
        db = None
        if self.needs_input_grad[1]:
            with np.errstate(divide="ignore", invalid="ignore"):
                log_a = xp.where(a > 0, xp.log(xp.where(a > 0, a, 1)), 0)
            db = unbroadcast(dy * y * log_a, b.shape)
        return da, db


def matmul_rows(a, b):
    """a @ b of two arrays, the one place the engine multiplies matrices: through the `matmul`
    kernel family (on the cython backend the GEMMs share the other kernels' thread team), and
    a stack of matrices times one matrix as ONE GEMM over all rows (NumPy would run one small
    product per matrix of the stack: x (B, T, d) @ W, B of them)."""
    product = kernels("matmul", device_of(a)).matmul
    if a.ndim > 2 and b.ndim == 2:
        return product(a.reshape(-1, a.shape[-1]), b).reshape(*a.shape[:-1], b.shape[-1])
    return product(a, b)


class MatMul(Function):
    """y = a @ b (batched, with NumPy's 1-D rules);  da = dy @ b^T, db = a^T @ dy."""

    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError("matmul: both operands need at least one dimension; use * for scalars")
        if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
            raise ValueError(f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} are not aligned "
                             f"({a.shape[-1]} != {b.shape[-2 if b.ndim > 1 else 0]})")
        self.save_for_backward(a, b)
        return matmul_rows(a, b)

    def backward(self, dy):
        a, b = self.saved
        xp = xp_of(dy)
        # Promote 1-D operands to matrices so one rule covers every case, then undo it.
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        dy2 = dy
        if b.ndim == 1:  # first: for 1-D @ 1-D the output is a scalar, (1, 1) after both
            dy2 = xp.expand_dims(dy2, -1)
        if a.ndim == 1:
            dy2 = xp.expand_dims(dy2, -2)
        da = db = None
        if self.needs_input_grad[0]:
            da = matmul_rows(dy2, xp.swapaxes(b2, -1, -2))
            da = unbroadcast(da, a2.shape).reshape(a.shape)
        if self.needs_input_grad[1]:
            if b2.ndim == 2 and a2.ndim > 2:
                # a weight shared by a batch: one GEMM over all rows instead of a batched sum
                db = matmul_rows(a2.reshape(-1, a2.shape[-1]).T, dy2.reshape(-1, dy2.shape[-1]))
            else:
                db = unbroadcast(matmul_rows(xp.swapaxes(a2, -1, -2), dy2), b2.shape)
            db = db.reshape(b.shape)
        return da, db


# ---------------------------------------------------------------------------- elementwise functions
class Exp(Function):
    """y = e^x;  dx = dy * y."""

    def forward(self, x):
        y = xp_of(x).exp(x)
        self.save_for_backward(y)
        return y

    def backward(self, dy):
        return dy * self.saved[0]


class Log(Function):
    """y = ln x;  dx = dy / x."""

    def forward(self, x):
        self.save_for_backward(x)
        with np.errstate(divide="ignore", invalid="ignore"):
            return xp_of(x).log(x)

    def backward(self, dy):
        return dy / self.saved[0]


class Sqrt(Function):
    """y = sqrt(x);  dx = dy / (2 y)."""

    def forward(self, x):
        y = xp_of(x).sqrt(x)
        self.save_for_backward(y)
        return y

    def backward(self, dy):
        return dy / (2 * self.saved[0])


class Abs(Function):
    """y = |x|;  dx = dy * sign(x)."""

    def forward(self, x):
        self.save_for_backward(x)
        return xp_of(x).abs(x)

    def backward(self, dy):
        return dy * xp_of(dy).sign(self.saved[0])


class Clip(Function):
    """y = min(max(x, low), high);  dx = dy where low <= x <= high, else 0."""

    def forward(self, x, low, high):
        self.save_for_backward(x)
        self.low, self.high = low, high
        return xp_of(x).clip(x, low, high)

    def backward(self, dy):
        (x,) = self.saved
        inside = xp_of(x).ones(x.shape, dtype=bool)
        if self.low is not None:
            inside &= x >= self.low
        if self.high is not None:
            inside &= x <= self.high
        return dy * inside


class Tanh(Function):
    """y = tanh(x);  dx = dy * (1 - y^2)."""

    def forward(self, x):
        y = xp_of(x).tanh(x)
        self.save_for_backward(y)
        return y

    def backward(self, dy):
        (y,) = self.saved
        return dy * (1 - y * y)


def sigmoid_array(x):
    """Numerically stable logistic function on an array: never exponentiates a large positive."""
    xp = xp_of(x)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


class Sigmoid(Function):
    """y = 1 / (1 + e^-x);  dx = dy * y * (1 - y)."""

    def forward(self, x):
        y = sigmoid_array(x)
        self.save_for_backward(y)
        return y

    def backward(self, dy):
        (y,) = self.saved
        return dy * y * (1 - y)


class ReLU(Function):
    """y = max(0, x);  dx = dy * [x > 0]."""

    def forward(self, x):
        self.save_for_backward(x > 0)
        return xp_of(x).maximum(x, 0)

    def backward(self, dy):
        return dy * self.saved[0]


class LeakyReLU(Function):
    """y = x if x > 0 else slope * x;  dx = dy * (1 or slope)."""

    def forward(self, x, negative_slope):
        self.slope = negative_slope
        self.save_for_backward(x > 0)
        return xp_of(x).where(x > 0, x, x * negative_slope)

    def backward(self, dy):
        return xp_of(dy).where(self.saved[0], dy, dy * self.slope)


class GELU(Function):
    """y = x * Phi(x), Phi the standard normal CDF (approximate='tanh': the tanh formula);
    dx = dy * (Phi(x) + x * phi(x))."""

    def forward(self, x, approximate="none"):
        xp = xp_of(x)
        self.approximate = approximate
        if approximate == "tanh":
            self.save_for_backward(x)
            return (0.5 * x * (1 + xp.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))).astype(x.dtype)
        if approximate != "none":
            raise ValueError(f"gelu: approximate must be 'none' or 'tanh', not {approximate!r}")
        # erf costs ~20 ns per element as a SciPy ufunc, so it runs in the `activation`
        # kernel family; Phi(x) is kept so the backward needs no second erf
        from .backend import kernels
        from .device import device_of
        self.kernels = kernels("activation", device_of(x))
        y, cdf = self.kernels.gelu_forward(x)
        self.save_for_backward(x, cdf)
        return y

    def backward(self, dy):
        x = self.saved[0]
        xp = xp_of(x)
        if self.approximate == "tanh":
            k = math.sqrt(2 / math.pi)
            inner = k * (x + 0.044715 * x ** 3)
            t = xp.tanh(inner)
            grad = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x)
            return (dy * grad).astype(dy.dtype)
        return self.kernels.gelu_backward(dy, x, self.saved[1])


class Where(Function):
    """y = a where cond else b;  da = dy * cond, db = dy * (1 - cond)."""

    def forward(self, cond, a, b):
        xp = xp_of(a)
        cond = xp.asarray(cond, dtype=bool)
        _broadcast_shape("where", a, b)
        self.cond, self.shapes = cond, (a.shape, b.shape)
        return xp.where(cond, a, b)

    def backward(self, dy):
        xp = xp_of(dy)
        zero = xp.zeros((), dtype=dy.dtype)
        da = unbroadcast(xp.where(self.cond, dy, zero), self.shapes[0]) if self.needs_input_grad[1] else None
        db = unbroadcast(xp.where(self.cond, zero, dy), self.shapes[1]) if self.needs_input_grad[2] else None
        return None, da, db


class Cast(Function):
    """y = x as another dtype;  dx = dy cast back."""

    def forward(self, x, dtype):
        self.dtype = x.dtype
        return x.astype(dtype)

    def backward(self, dy):
        return dy.astype(self.dtype) if self.dtype.kind == "f" else None


class Clone(Function):
    """y = a copy of x;  dx = dy."""

    def forward(self, x):
        return x.copy()

    def backward(self, dy):
        return dy


class ToDevice(Function):
    """y = x on another device;  dx = dy moved back."""

    def forward(self, x, device):
        self.source = "cuda" if type(x).__module__.startswith("cupy") else "cpu"
        return to_device(x, device)

    def backward(self, dy):
        return to_device(dy, self.source)


# ---------------------------------------------------------------------------- reductions
def _normalize_axis(axis, ndim):
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    for a in axes:
        if not -ndim <= a < max(ndim, 1):
            raise IndexError(f"dimension {a} is out of range for a tensor of {ndim} dimensions")
    return tuple(sorted(a % max(ndim, 1) for a in axes))


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
    """y = max of x over `axis`;  dx = dy at the maximal entries (shared equally among ties)."""

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


# ---------------------------------------------------------------------------- movement
class Reshape(Function):
    """y = x viewed with a new shape;  dx = dy reshaped back."""

    def forward(self, x, shape):
        self.shape = x.shape
        try:
            return x.reshape(shape)
        except ValueError:
            raise ValueError(f"reshape: cannot view shape {tuple(x.shape)} ({x.size} elements) as {shape}") from None

    def backward(self, dy):
        return dy.reshape(self.shape)


class Permute(Function):
    """y = x with dimensions reordered;  dx = dy with the inverse order."""

    def forward(self, x, dims):
        if sorted(dims) != list(range(x.ndim)):
            raise ValueError(f"permute: {dims} is not a permutation of the {x.ndim} dimensions of shape {tuple(x.shape)}")
        self.inverse = tuple(np.argsort(dims))
        return x.transpose(dims)

    def backward(self, dy):
        return dy.transpose(self.inverse)


class Expand(Function):
    """y = x broadcast to `shape`;  dx = dy summed back."""

    def forward(self, x, shape):
        self.shape = x.shape
        try:
            return xp_of(x).broadcast_to(x, shape)
        except ValueError:
            raise ValueError(f"expand: shape {tuple(x.shape)} cannot be expanded to {shape}") from None

    def backward(self, dy):
        return unbroadcast(dy, self.shape)


def _is_basic_index(index):
    parts = index if isinstance(index, tuple) else (index,)
    return all(p is None or p is Ellipsis or isinstance(p, (int, np.integer, slice)) for p in parts)


class GetItem(Function):
    """y = x[index] (ints, slices, None, integer arrays, boolean masks);
    dx = zeros with dy scattered back (added, so repeated indices accumulate)."""

    def forward(self, x, index):
        self.shape, self.dtype, self.index = x.shape, x.dtype, index
        try:
            return x[index]
        except IndexError as exc:
            raise IndexError(f"index {index!r} is invalid for a tensor of shape {tuple(x.shape)}: {exc}") from None

    def backward(self, dy):
        xp = xp_of(dy)
        dx = xp.zeros(self.shape, dtype=dy.dtype)
        if _is_basic_index(self.index):
            dx[self.index] = dy
        else:
            xp.add.at(dx, self.index, dy)
        return dx


class Concat(Function):
    """y = the inputs joined along `axis`;  each dx = its slice of dy."""

    def forward(self, *arrays, axis=0):
        xp = xp_of(arrays[0])
        self.axis = axis
        self.bounds = np.cumsum([a.shape[axis] for a in arrays])[:-1]
        try:
            return xp.concatenate(arrays, axis=axis)
        except ValueError:
            raise ValueError(f"cat: shapes {[tuple(a.shape) for a in arrays]} differ outside dimension {axis}") from None

    def backward(self, dy):
        return tuple(xp_of(dy).split(dy, self.bounds, axis=self.axis))


class Stack(Function):
    """y = the inputs stacked along a new `axis`;  each dx = dy indexed along it."""

    def forward(self, *arrays, axis=0):
        self.axis = axis
        if len({tuple(a.shape) for a in arrays}) > 1:
            raise ValueError(f"stack: every tensor needs the same shape, got {[tuple(a.shape) for a in arrays]}")
        return xp_of(arrays[0]).stack(arrays, axis=axis)

    def backward(self, dy):
        xp = xp_of(dy)
        return tuple(xp.take(dy, i, axis=self.axis) for i in range(dy.shape[self.axis]))


# ---------------------------------------------------------------------------- softmax family
def _rows(a):
    """View an array as contiguous (rows, last-axis) for the kernels."""
    xp = xp_of(a)
    return xp.ascontiguousarray(a.reshape(-1, a.shape[-1]))


class Softmax(Function):
    """y = exp(x - max x) / sum exp(x - max x) over the last axis; entries where `mask` is True
    get probability 0 (a fully masked row is all zeros);  dx = y * (dy - sum(dy * y)).

    The row loop is a hot path of attention, so it runs in the `softmax` kernel family."""

    def forward(self, x, mask=None):
        from .backend import kernels
        from .device import device_of
        self.kernels = kernels("softmax", device_of(x))
        rows = None
        if mask is not None:
            xp = xp_of(x)
            rows = _rows(xp.broadcast_to(xp.asarray(mask, dtype=bool), x.shape))
        y = self.kernels.softmax_forward(_rows(x), rows)
        self.save_for_backward(y)
        return y.reshape(x.shape)

    def backward(self, dy):
        (y,) = self.saved
        return self.kernels.softmax_backward(_rows(dy), y).reshape(dy.shape)


class LogSoftmax(Function):
    """y = x - max x - log sum exp(x - max x) over the last axis;  dx = dy - exp(y) * sum(dy)."""

    def forward(self, x):
        xp = xp_of(x)
        shifted = x - x.max(axis=-1, keepdims=True)
        y = shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))
        self.save_for_backward(y)
        return y

    def backward(self, dy):
        (y,) = self.saved
        return dy - xp_of(y).exp(y) * dy.sum(axis=-1, keepdims=True)


class NLLLoss(Function):
    """loss = -sum_n w[t_n] * logp[n, t_n] / sum_n w[t_n] (reduction 'mean'), over rows whose
    target is not ignore_index;  dlogp[n, t_n] = -w[t_n] * dloss / normaliser."""

    def forward(self, logp, target, weight=None, ignore_index=-100, reduction="mean"):
        xp = xp_of(logp)
        n, classes = logp.shape
        keep = target != ignore_index
        safe = xp.where(keep, target, 0)
        if xp.any(keep & ((safe < 0) | (safe >= classes))):
            bad = int(target[keep & ((safe < 0) | (safe >= classes))][0])
            raise IndexError(f"cross_entropy: target {bad} is out of range for {classes} classes")
        w = keep.astype(logp.dtype) if weight is None else xp.where(keep, weight[safe], 0).astype(logp.dtype)
        picked = logp[xp.arange(n), safe]
        losses = -w * picked
        self.safe, self.w, self.shape, self.reduction = safe, w, logp.shape, reduction
        if reduction == "none":
            return losses
        if reduction == "sum":
            return losses.sum()
        if reduction != "mean":
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', not {reduction!r}")
        self.total = w.sum()
        return losses.sum() / self.total

    def backward(self, dy):
        xp = xp_of(dy)
        dlogp = xp.zeros(self.shape, dtype=dy.dtype)
        scale = -self.w * dy
        if self.reduction == "mean":
            scale = scale / self.total
        dlogp[xp.arange(self.shape[0]), self.safe] = scale
        return dlogp, None
