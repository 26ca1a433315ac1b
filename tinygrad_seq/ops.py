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
        if p == 0:
            return dy * 0
        with np.errstate(divide="ignore", invalid="ignore"):
            return dy * p * x ** (p - 1)


class PowTensor(Function):
    """y = a^b for tensors;  da = dy * b * a^(b-1) (0 where b = 0),
    db = dy * a^b * ln a (0 where a = 0 and b >= 0, where a^b is constant 0 or 1), as PyTorch."""

    def forward(self, a, b):
        _broadcast_shape("pow", a, b)
        with np.errstate(divide="ignore", invalid="ignore"):
            y = a ** b
        self.save_for_backward(a, b, y)
        return y

    def backward(self, dy):
        a, b, y = self.saved
        xp = xp_of(y)
        da = db = None
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.needs_input_grad[0]:
                da = unbroadcast(xp.where(b == 0, 0, dy * b * a ** (b - 1)), a.shape).astype(dy.dtype, copy=False)
            if self.needs_input_grad[1]:
                db = xp.where((a == 0) & (b >= 0), 0, dy * y * xp.log(a))
                db = unbroadcast(db, b.shape).astype(dy.dtype, copy=False)
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
    """y = max(0, x);  dx = dy * [x > 0] = dy * [y > 0]  (NaN stays NaN).  The `activation`
    kernel family runs both on every core; y is saved (as PyTorch does), not a mask."""

    def forward(self, x):
        self.kernels = kernels("activation", device_of(x))
        y = self.kernels.relu_forward(x)
        self.save_for_backward(y)
        return y

    def backward(self, dy):
        return self.kernels.relu_backward(dy, self.saved[0])


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
        self.save_for_backward(cond)
        self.shapes = (a.shape, b.shape)
        return xp.where(cond, a, b)

    def backward(self, dy):
        xp = xp_of(dy)
        cond, = self.saved
        zero = xp.zeros((), dtype=dy.dtype)
        da = unbroadcast(xp.where(cond, dy, zero), self.shapes[0]) if self.needs_input_grad[1] else None
        db = unbroadcast(xp.where(cond, zero, dy), self.shapes[1]) if self.needs_input_grad[2] else None
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
        self.shape, self.dtype = x.shape, x.dtype
        self.save_for_backward(index)        # may hold integer or boolean arrays
        try:
            return x[index]
        except IndexError as exc:
            raise IndexError(f"index {index!r} is invalid for a tensor of shape {tuple(x.shape)}: {exc}") from None

    def backward(self, dy):
        xp = xp_of(dy)
        index, = self.saved
        dx = xp.zeros(self.shape, dtype=dy.dtype)
        if _is_basic_index(index):
            dx[index] = dy
        else:
            xp.add.at(dx, index, dy)
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
            mask = xp.broadcast_to(xp.asarray(mask, dtype=bool), x.shape)
            # a backend that reads a broadcast mask where it is (cuda) is spared the full-size copy
            compact = getattr(self.kernels, "broadcast_mask_rows", None)
            rows = (compact(mask) if compact else None) or _rows(mask)
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
        self.shape, self.reduction = logp.shape, reduction
        self.save_for_backward(safe, w)
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
        safe, w = self.saved
        dlogp = xp.zeros(self.shape, dtype=dy.dtype)
        scale = -w * dy
        if self.reduction == "mean":
            scale = scale / self.total
        dlogp[xp.arange(self.shape[0]), safe] = scale
        return dlogp, None


# ---------------------------------------------------------------------------- more elementwise functions
class Sin(Function):
    """y = sin x;  dx = dy * cos x."""

    def forward(self, x):
        self.save_for_backward(x)
        return xp_of(x).sin(x)

    def backward(self, dy):
        return dy * xp_of(dy).cos(self.saved[0])


class Cos(Function):
    """y = cos x;  dx = -dy * sin x."""

    def forward(self, x):
        self.save_for_backward(x)
        return xp_of(x).cos(x)

    def backward(self, dy):
        return -dy * xp_of(dy).sin(self.saved[0])


class Tan(Function):
    """y = tan x;  dx = dy * (1 + y^2)."""

    def forward(self, x):
        y = xp_of(x).tan(x)
        self.save_for_backward(y)
        return y

    def backward(self, dy):
        (y,) = self.saved
        return dy * (1 + y * y)


class Asin(Function):
    """y = arcsin x;  dx = dy / sqrt(1 - x^2)."""

    def forward(self, x):
        self.save_for_backward(x)
        with np.errstate(invalid="ignore"):
            return xp_of(x).arcsin(x)

    def backward(self, dy):
        (x,) = self.saved
        with np.errstate(divide="ignore", invalid="ignore"):
            return dy / xp_of(x).sqrt(1 - x * x)


class Acos(Function):
    """y = arccos x;  dx = -dy / sqrt(1 - x^2)."""

    def forward(self, x):
        self.save_for_backward(x)
        with np.errstate(invalid="ignore"):
            return xp_of(x).arccos(x)

    def backward(self, dy):
        (x,) = self.saved
        with np.errstate(divide="ignore", invalid="ignore"):
            return -dy / xp_of(x).sqrt(1 - x * x)


class Atan(Function):
    """y = arctan x;  dx = dy / (1 + x^2)."""

    def forward(self, x):
        self.save_for_backward(x)
        return xp_of(x).arctan(x)

    def backward(self, dy):
        (x,) = self.saved
        return dy / (1 + x * x)


class Sinh(Function):
    """y = sinh x;  dx = dy * cosh x."""

    def forward(self, x):
        self.save_for_backward(x)
        return xp_of(x).sinh(x)

    def backward(self, dy):
        return dy * xp_of(dy).cosh(self.saved[0])


class Cosh(Function):
    """y = cosh x;  dx = dy * sinh x."""

    def forward(self, x):
        self.save_for_backward(x)
        return xp_of(x).cosh(x)

    def backward(self, dy):
        return dy * xp_of(dy).sinh(self.saved[0])


class Asinh(Function):
    """y = arsinh x;  dx = dy / sqrt(x^2 + 1)."""

    def forward(self, x):
        self.save_for_backward(x)
        return xp_of(x).arcsinh(x)

    def backward(self, dy):
        (x,) = self.saved
        return dy / xp_of(x).sqrt(x * x + 1)


class Acosh(Function):
    """y = arcosh x (x >= 1);  dx = dy / sqrt(x^2 - 1)."""

    def forward(self, x):
        self.save_for_backward(x)
        with np.errstate(invalid="ignore"):
            return xp_of(x).arccosh(x)

    def backward(self, dy):
        (x,) = self.saved
        with np.errstate(divide="ignore", invalid="ignore"):
            return dy / xp_of(x).sqrt(x * x - 1)


class Atanh(Function):
    """y = artanh x (|x| < 1);  dx = dy / (1 - x^2)."""

    def forward(self, x):
        self.save_for_backward(x)
        with np.errstate(divide="ignore", invalid="ignore"):
            return xp_of(x).arctanh(x)

    def backward(self, dy):
        (x,) = self.saved
        with np.errstate(divide="ignore"):
            return dy / (1 - x * x)


class Rsqrt(Function):
    """y = 1 / sqrt x;  dx = -dy * y^3 / 2."""

    def forward(self, x):
        with np.errstate(divide="ignore", invalid="ignore"):
            y = 1 / xp_of(x).sqrt(x)
        self.save_for_backward(y)
        return y.astype(x.dtype, copy=False)

    def backward(self, dy):
        (y,) = self.saved
        return -0.5 * dy * y * y * y


class Log1p(Function):
    """y = ln(1 + x);  dx = dy / (1 + x)."""

    def forward(self, x):
        self.save_for_backward(x)
        with np.errstate(divide="ignore", invalid="ignore"):
            return xp_of(x).log1p(x)

    def backward(self, dy):
        return dy / (1 + self.saved[0])


class Expm1(Function):
    """y = e^x - 1;  dx = dy * (y + 1)."""

    def forward(self, x):
        y = xp_of(x).expm1(x)
        self.save_for_backward(y)
        return y

    def backward(self, dy):
        return dy * (self.saved[0] + 1)


class Erf(Function):
    """y = erf x;  dx = dy * 2 / sqrt(pi) * e^(-x^2)."""

    def forward(self, x):
        from scipy.special import erf
        self.save_for_backward(x)
        return erf(to_device(x, "cpu")).astype(x.dtype) if xp_of(x) is np else xp_of(x).asarray(erf(x.get()))

    def backward(self, dy):
        (x,) = self.saved
        return dy * (2 / math.sqrt(math.pi)) * xp_of(x).exp(-x * x)


class StepFunction(Function):
    """y = floor / ceil / round (half to even) / trunc / sign of x;  dx = 0 (a step function's
    derivative, taken as zero at the jumps as PyTorch does)."""

    def forward(self, x, kind):
        xp = xp_of(x)
        fn = {"floor": xp.floor, "ceil": xp.ceil, "round": xp.round, "trunc": xp.trunc, "sign": xp.sign}[kind]
        return fn(x)

    def backward(self, dy):
        return xp_of(dy).zeros_like(dy)


class Maximum(Function):
    """y = max(a, b) elementwise;  the gradient goes to the larger input, split in half on ties
    (PyTorch's rule)."""

    def forward(self, a, b):
        _broadcast_shape("maximum", a, b)
        self.save_for_backward(a, b)
        return xp_of(a).maximum(a, b)

    def backward(self, dy):
        a, b = self.saved
        share = (a > b) + 0.5 * (a == b)
        da = unbroadcast(dy * share, a.shape).astype(dy.dtype) if self.needs_input_grad[0] else None
        db = unbroadcast(dy * (1 - share), b.shape).astype(dy.dtype) if self.needs_input_grad[1] else None
        return da, db


# ---------------------------------------------------------------------------- more reductions
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


def along_axis_index(index, axis):
    """The full advanced index that picks `index` (an integer array) along `axis`, as
    take_along_axis does: a tuple usable with x[...] and xp.add.at."""
    xp = xp_of(index)
    parts = []
    for d in range(index.ndim):
        if d == axis:
            parts.append(index)
        else:
            shape = [1] * index.ndim
            shape[d] = index.shape[d]
            parts.append(xp.arange(index.shape[d]).reshape(shape))
    return tuple(parts)


class Gather(Function):
    """y = x picked at `index` along `axis` (torch.gather; take_along_axis);
    dx = zeros with dy added back at the picked positions (repeated picks accumulate)."""

    def forward(self, x, index, axis):
        xp = xp_of(x)
        if index.ndim != x.ndim:
            raise ValueError(f"gather: index has {index.ndim} dimensions but the input has {x.ndim}; they must match")
        if index.size and (int(index.min()) < -x.shape[axis] or int(index.max()) >= x.shape[axis]):
            raise IndexError(f"gather: index out of range for dimension {axis} of size {x.shape[axis]}")
        self.shape, self.where = x.shape, along_axis_index(xp.asarray(index, dtype=np.int64), axis)
        return x[self.where]

    def backward(self, dy):
        xp = xp_of(dy)
        dx = xp.zeros(self.shape, dtype=dy.dtype)
        xp.add.at(dx, self.where, dy)
        return dx, None


class SetItem(Function):
    """y = a copy of x with y[index] = v;  dx = dy with zeros at index, dv = dy[index] summed back
    to v's shape (where an advanced index repeats a position, the last write wins in y)."""

    def forward(self, x, value, index):
        xp = xp_of(x)
        y = x.copy()
        try:
            y[index] = value
        except (IndexError, ValueError) as exc:
            raise type(exc)(f"setitem: cannot assign a value of shape {tuple(xp.shape(value))} to index "
                            f"{index!r} of a tensor of shape {tuple(x.shape)}: {exc}") from None
        self.value_shape = xp.shape(value)
        self.save_for_backward(index)
        return y

    def backward(self, dy):
        index, = self.saved
        dx = None
        if self.needs_input_grad[0]:
            dx = dy.copy()
            dx[index] = 0
        dv = unbroadcast(dy[index], self.value_shape) if self.needs_input_grad[1] else None
        return dx, dv


class ScatterAdd(Function):
    """y = x with src added at `index` along `axis` (torch.scatter_add; repeated positions add up);
    dx = dy, dsrc = dy picked at the positions src went to."""

    def forward(self, x, index, src, axis):
        xp = xp_of(x)
        self.where = along_axis_index(xp.asarray(index, dtype=np.int64), axis)
        self.src_shape = src.shape
        y = x.copy()
        xp.add.at(y, self.where, src[tuple(slice(0, n) for n in index.shape)])
        return y

    def backward(self, dy):
        return dy, None, _scattered_source_grad(dy, self.where, self.src_shape) if self.needs_input_grad[2] else None


class Scatter(Function):
    """y = x with y[index] = src along `axis` (torch.scatter; where a position repeats, the last
    write wins);  dx = dy with zeros where written, dsrc = dy picked at the written positions."""

    def forward(self, x, index, src, axis):
        xp = xp_of(x)
        self.where = along_axis_index(xp.asarray(index, dtype=np.int64), axis)
        self.src_shape = xp.shape(src)
        y = x.copy()
        y[self.where] = src[tuple(slice(0, n) for n in index.shape)] if xp.ndim(src) else src
        return y

    def backward(self, dy):
        dx = dy.copy()
        dx[self.where] = 0
        return dx, None, _scattered_source_grad(dy, self.where, self.src_shape) if self.needs_input_grad[2] else None


def _scattered_source_grad(dy, where, src_shape):
    """The gradient of a scatter's source: dy at the positions written, placed in the leading
    block of src that the index covered (zeros elsewhere, and summed for a scalar source)."""
    picked = dy[where]
    if len(src_shape) == 0:
        return picked.sum()
    dsrc = xp_of(dy).zeros(src_shape, dtype=dy.dtype)
    dsrc[tuple(slice(0, n) for n in picked.shape)] = picked
    return dsrc


class Einsum(Function):
    """y = einsum(equation, *operands) (explicit '->' form, no '...');
    d operand_k = einsum of dy with the other operands into operand_k's subscripts, broadcast
    over any index that only operand_k has (it was summed out)."""

    def forward(self, *operands, equation):
        xp = xp_of(operands[0])
        equation = equation.replace(" ", "")
        if "->" not in equation or "." in equation:
            raise ValueError(f"einsum: give the output explicitly ('ij,jk->ik') and no '...'; got {equation!r}")
        inputs, self.output = equation.split("->")
        self.inputs = inputs.split(",")
        if len(self.inputs) != len(operands):
            raise ValueError(f"einsum: {equation!r} names {len(self.inputs)} operands, {len(operands)} given")
        if any(len(set(s)) != len(s) for s in self.inputs):
            raise ValueError(f"einsum: a repeated index within one operand (a diagonal) is not supported: {equation!r}")
        self.save_for_backward(*operands)
        return xp.einsum(equation, *operands)

    def backward(self, dy):
        xp = xp_of(dy)
        operands = self.saved
        grads = []
        for k, subs in enumerate(self.inputs):
            if not self.needs_input_grad[k]:
                grads.append(None)
                continue
            others = [(s, a) for j, (s, a) in enumerate(zip(self.inputs, operands)) if j != k]
            present = set(self.output).union(*[set(s) for s, _ in others])
            kept = "".join(c for c in subs if c in present)
            spec = ",".join([self.output] + [s for s, _ in others]) + "->" + kept
            g = xp.einsum(spec, dy, *[a for _, a in others])
            # indices only this operand had were summed out: its gradient is constant along them
            shape = [operands[k].shape[i] if c in present else 1 for i, c in enumerate(subs)]
            g = g.reshape(shape)   # `kept` lists the indices in the operand's own order
            grads.append(xp.broadcast_to(g, operands[k].shape).copy())
        return tuple(grads)
