"""Elementwise ops: arithmetic, the unary functions of maths, and the activations.

Binary ops broadcast like NumPy, and their backward sums the gradient back down to each
input's shape (`unbroadcast`).
"""
import math

import numpy as np

from ..backend import kernels
from ..device import device_of, to_device, xp_of
from ..tensor import Function


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


class Maximum(Function):
    """y = max(a, b) elementwise;  da = dy * ([a > b] + [a = b] / 2), db = dy * ([b > a] + [a = b] / 2):
    the gradient goes to the larger input, split in half on ties (PyTorch's rule)."""

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


# ---------------------------------------------------------------------------- unary functions
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


def _erf(x):
    """erf x elementwise: SciPy's ufunc (NumPy has none), through the host for a CuPy array."""
    from scipy.special import erf
    return erf(to_device(x, "cpu")).astype(x.dtype) if xp_of(x) is np else xp_of(x).asarray(erf(x.get()))


def unary(name, equation, forward, derivative, of_output=False):
    """An elementwise op y = f(x), dx = dy * f'(x), from its two formulas side by side:
    `forward(xp, x)` gives y and `derivative(xp, v)` gives f' from v = x, or from v = y when
    `of_output` (tan' = 1 + tan^2), so that backward keeps one array.  Outside the domain the
    results are IEEE's (NaN, inf), without NumPy's warnings, as in PyTorch."""

    def forward_(self, x):
        with np.errstate(divide="ignore", invalid="ignore"):
            y = forward(xp_of(x), x)
        self.save_for_backward(y if of_output else x)
        return y

    def backward_(self, dy):
        (v,) = self.saved
        with np.errstate(divide="ignore", invalid="ignore"):
            return dy * derivative(xp_of(v), v)

    return type(name, (Function,), {"__doc__": equation, "__module__": __name__, "__qualname__": name,
                                    "forward": forward_, "backward": backward_})


# one line per function: name, equation, y = f(x), f'(x) (or f' from y)
Exp = unary("Exp", "y = e^x;  dx = dy * y", lambda xp, x: xp.exp(x), lambda xp, y: y, of_output=True)
Log = unary("Log", "y = ln x;  dx = dy / x", lambda xp, x: xp.log(x), lambda xp, x: 1 / x)
Sqrt = unary("Sqrt", "y = sqrt(x);  dx = dy / (2 y)", lambda xp, x: xp.sqrt(x), lambda xp, y: 1 / (2 * y),
             of_output=True)
Abs = unary("Abs", "y = |x|;  dx = dy * sign(x)", lambda xp, x: xp.abs(x), lambda xp, x: xp.sign(x))
Sin = unary("Sin", "y = sin x;  dx = dy * cos x", lambda xp, x: xp.sin(x), lambda xp, x: xp.cos(x))
Cos = unary("Cos", "y = cos x;  dx = -dy * sin x", lambda xp, x: xp.cos(x), lambda xp, x: -xp.sin(x))
Tan = unary("Tan", "y = tan x;  dx = dy * (1 + y^2)", lambda xp, x: xp.tan(x), lambda xp, y: 1 + y * y,
            of_output=True)
Asin = unary("Asin", "y = arcsin x;  dx = dy / sqrt(1 - x^2)",
             lambda xp, x: xp.arcsin(x), lambda xp, x: 1 / xp.sqrt(1 - x * x))
Acos = unary("Acos", "y = arccos x;  dx = -dy / sqrt(1 - x^2)",
             lambda xp, x: xp.arccos(x), lambda xp, x: -1 / xp.sqrt(1 - x * x))
Atan = unary("Atan", "y = arctan x;  dx = dy / (1 + x^2)",
             lambda xp, x: xp.arctan(x), lambda xp, x: 1 / (1 + x * x))
Sinh = unary("Sinh", "y = sinh x;  dx = dy * cosh x", lambda xp, x: xp.sinh(x), lambda xp, x: xp.cosh(x))
Cosh = unary("Cosh", "y = cosh x;  dx = dy * sinh x", lambda xp, x: xp.cosh(x), lambda xp, x: xp.sinh(x))
Asinh = unary("Asinh", "y = arsinh x;  dx = dy / sqrt(x^2 + 1)",
              lambda xp, x: xp.arcsinh(x), lambda xp, x: 1 / xp.sqrt(x * x + 1))
Acosh = unary("Acosh", "y = arcosh x (x >= 1);  dx = dy / sqrt(x^2 - 1)",
              lambda xp, x: xp.arccosh(x), lambda xp, x: 1 / xp.sqrt(x * x - 1))
Atanh = unary("Atanh", "y = artanh x (|x| < 1);  dx = dy / (1 - x^2)",
              lambda xp, x: xp.arctanh(x), lambda xp, x: 1 / (1 - x * x))
Rsqrt = unary("Rsqrt", "y = 1 / sqrt x;  dx = -dy * y^3 / 2",
              lambda xp, x: (1 / xp.sqrt(x)).astype(x.dtype, copy=False), lambda xp, y: -0.5 * y * y * y,
              of_output=True)
Log1p = unary("Log1p", "y = ln(1 + x);  dx = dy / (1 + x)",
              lambda xp, x: xp.log1p(x), lambda xp, x: 1 / (1 + x))
Expm1 = unary("Expm1", "y = e^x - 1;  dx = dy * (y + 1)", lambda xp, x: xp.expm1(x), lambda xp, y: y + 1,
              of_output=True)
Erf = unary("Erf", "y = erf x;  dx = dy * 2 / sqrt(pi) * e^(-x^2)",
            lambda xp, x: _erf(x), lambda xp, x: (2 / math.sqrt(math.pi)) * xp.exp(-x * x))


class Step(Function):
    """y = floor / ceil / round (half to even) / trunc / sign of x;  dx = 0 (a step function's
    derivative, taken as zero at the jumps as PyTorch does)."""

    def forward(self, x, kind):
        xp = xp_of(x)
        fn = {"floor": xp.floor, "ceil": xp.ceil, "round": xp.round, "trunc": xp.trunc, "sign": xp.sign}[kind]
        return fn(x)

    def backward(self, dy):
        return xp_of(dy).zeros_like(dy)


# ---------------------------------------------------------------------------- activations
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
