"""exp, sigmoid and tanh that LLVM can vectorise, for use inside Numba kernels.

Why this exists: Numba lowers `math.exp(x)` to a call into libm, and LLVM never vectorises a
loop that calls an opaque function (there is no SVML here).  A scalar exp costs ~20 cycles, so
a gate loop that calls it runs ~10x slower than the same loop with the exp written inline as
plain arithmetic, which LLVM turns into AVX2/AVX-512 code doing 8 or 16 exps at once.

    exp(x):     n = round(x / ln 2),  r = x - n ln 2  (|r| <= ln 2 / 2, ln 2 split in two parts
                so n ln 2 is exact),  exp(x) = 2^n * p(r)  with p Cephes' degree-7 polynomial,
                and 2^n built directly from its IEEE bits: (n + 127) << 23.
    sigmoid(x): 1 / (1 + exp(-x))
    tanh(x):    x + x^3 q(x^2) for |x| < 0.625 (the exp form below cancels badly near 0),
                else sign(x) (1 - 2 / (exp(2|x|) + 1)).

float32 results are within a few ulp of the exact value (tests/test_fastmath.py
checks this over the whole useful range).  Below -87 exp is 0 (so exp(-inf) = 0, which
masked softmax relies on) and above 87 the argument is clamped: beyond that range float32 exp
would overflow or reach the denormals, which are ~100x slower on x86, while the gates' sigmoid
and tanh are already exactly 0, 1 or -1 there to within float32 absolute precision.
NaN goes through as NaN.

float64 uses libm's exact `math.exp` / `math.tanh` (scalar; float64 is the checking precision,
not the fast one).  kernels/cython/_fastmath.h is the same algorithm in C, for the Cython
recurrences.

`zero_of(a)` / `one_of(a)` are 0 and 1 in the dtype of array `a`: in Numba a bare literal
promotes float32 to float64 (`1 - x` is float64 for a float32 x), which would halve the SIMD
width and add conversions, so float32 kernels must take their constants from here.

Kernels using these must be compiled with `error_model="numpy"`: Numba's default Python error
model puts a ZeroDivisionError branch on every division, which stops LLVM vectorising the loop.

Usage, inside any `@njit` function: `from ._fastmath import sigmoid, tanh` and call them on
scalars; Numba inlines them (so they take the caller's fastmath flags; `contract`, which lets
LLVM fuse a*b+c into an FMA, is the only one the kernels use, as it only adds precision).
The plain-Python bodies below run when the functions are called outside Numba.
"""
import math

import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic, overload

__all__ = ["exp", "sigmoid", "tanh", "zero_of", "one_of"]

_F = np.float32
_LOG2E = _F(1.44269504088896341)
_LN2_HI = _F(0.693359375)          # ln 2 = _LN2_HI + _LN2_LO; _LN2_HI has 9 significant bits,
_LN2_LO = _F(-2.12194440e-4)       # so n * _LN2_HI is exact for |n| < 2^15
_EXP_MAX = _F(87.0)
_EXP_P = tuple(_F(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3,
                               4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1))
_TANH_P = tuple(_F(c) for c in (-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2,
                                1.33314422036e-1, -3.33332819422e-1))
_TANH_SMALL = _F(0.625)
_ZERO, _HALF, _ONE, _TWO = _F(0.0), _F(0.5), _F(1.0), _F(2.0)
_BIAS = _F(127.0)
_MANTISSA = _F(8388608.0)          # 2^23: moves an exponent into the bits of its field


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose IEEE-754 bit pattern is the integer held (exactly) in float32 `bits`:
    one float->int conversion and one free register reinterpretation, both vectorisable."""
    if bits != types.float32:
        return None

    def codegen(context, builder, signature, args):
        as_int = builder.fptosi(args[0], ir.IntType(32))
        return builder.bitcast(as_int, ir.FloatType())

    return types.float32(types.float32), codegen


def exp(x):
    """e^x (vectorisable inside Numba for float32; libm for float64)."""
    return math.exp(x)


def sigmoid(x):
    """1 / (1 + e^-x)."""
    return 0.5 * (1.0 + math.tanh(0.5 * x))


def tanh(x):
    """tanh x."""
    return math.tanh(x)


def _exp32(x):
    below = x < -_EXP_MAX   # e^x is then 0 (so e^-inf = 0, which masking relies on); NaN stays NaN
    x = min(max(x, -_EXP_MAX), _EXP_MAX)
    n = np.floor(x * _LOG2E + _HALF)
    r = x - n * _LN2_HI - n * _LN2_LO
    p = _EXP_P[0]
    p = p * r + _EXP_P[1]
    p = p * r + _EXP_P[2]
    p = p * r + _EXP_P[3]
    p = p * r + _EXP_P[4]
    p = p * r + _EXP_P[5]
    p = p * (r * r) + r + _ONE
    return _ZERO if below else p * _float32_from_bits((n + _BIAS) * _MANTISSA)


def _is_float32(x):
    return isinstance(x, types.Float) and x.bitwidth == 32


@overload(exp, inline="always")
def _exp_overload(x):
    if _is_float32(x):
        return _exp32
    if isinstance(x, types.Float):
        return lambda x: math.exp(x)


@overload(sigmoid, inline="always")
def _sigmoid_overload(x):
    if _is_float32(x):
        def sigmoid32(x):
            # exactly 0 below -87 (where exp(-x) is clamped), as the reference: a gate at -inf
            # must be 0 so that 0 * inf downstream is NaN there too; a blend, not a branch
            # (see tanh32); NaN: w = 0 and 0 * NaN = NaN
            w = np.float32(x >= -_EXP_MAX)
            return w * (_ONE / (_ONE + exp(-x)))
        return sigmoid32
    if isinstance(x, types.Float):
        return lambda x: 1.0 / (1.0 + math.exp(-x))


@overload(tanh, inline="always")
def _tanh_overload(x):
    if _is_float32(x):
        def tanh32(x):
            ax = abs(x)
            # |x| < 0.625: odd polynomial (Cephes tanhf), on x clamped to [-1, 1] so that it
            # stays finite where it is not used
            s = min(max(x, -_ONE), _ONE)
            z = s * s
            q = _TANH_P[0]
            q = q * z + _TANH_P[1]
            q = q * z + _TANH_P[2]
            q = q * z + _TANH_P[3]
            q = q * z + _TANH_P[4]
            small = s + s * z * q
            # otherwise 1 - 2 / (e^{2|x|} + 1), which has no cancellation there
            large = math.copysign(_ONE - _TWO / (exp(_TWO * ax) + _ONE), x)
            # w * small + (1 - w) * large with w = 0 or 1 is an exact choice between two finite
            # values; a conditional expression here made Numba's inliner print a
            # NumbaIRAssumptionWarning (an internal pedantic check) at every kernel compile
            w = np.float32(ax < _TANH_SMALL)
            return w * small + (_ONE - w) * large
        return tanh32
    if isinstance(x, types.Float):
        return lambda x: math.tanh(x)


def zero_of(a):
    """0 in the dtype of array `a`."""
    return a.dtype.type(0)


def one_of(a):
    """1 in the dtype of array `a`."""
    return a.dtype.type(1)


def _float_array(a):
    return isinstance(a, types.Array) and isinstance(a.dtype, types.Float)


@overload(zero_of, inline="always")
def _zero_of_overload(a):
    if _float_array(a):
        value = np.dtype(str(a.dtype)).type(0)
        return lambda a: value


@overload(one_of, inline="always")
def _one_of_overload(a):
    if _float_array(a):
        value = np.dtype(str(a.dtype)).type(1)
        return lambda a: value
