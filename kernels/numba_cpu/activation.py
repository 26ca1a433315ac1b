"""Exact GELU compiled with Numba (contract: reference/activation.py), one pass each way.

Serial loops: they are memory-bound and run between NumPy GEMMs, whose BLAS threads a
parallel region would compete with (see recurrence.py).  erf is libm's (`math.erf`, scalar:
there is no vectorisable erf in _fastmath), still several times faster than SciPy's ufunc;
the backward's exp is _fastmath's, which LLVM vectorises.
"""
import math

import numpy as np
from numba import njit

from tinygrad_seq.kernels.numba_cpu._fastmath import exp
from tinygrad_seq.kernels.reference.activation import check_activation_args
# ReLU is the reference's: NumPy's own loops, as fast as a serial compiled one
from tinygrad_seq.kernels.reference.activation import relu_backward, relu_forward  # noqa: F401

_JIT = dict(cache=True, error_model="numpy", fastmath={"contract"})


@njit(**_JIT)
def _gelu_forward(x, y, cdf):
    half = x.dtype.type(0.5)
    scale = x.dtype.type(1 / math.sqrt(2))
    for j in range(x.shape[0]):
        phi = half + half * math.erf(x[j] * scale)
        cdf[j] = phi
        y[j] = x[j] * phi


@njit(**_JIT)
def _gelu_backward(dy, x, cdf, dx):
    minus_half = dy.dtype.type(-0.5)
    k = dy.dtype.type(1 / math.sqrt(2 * math.pi))
    for j in range(x.shape[0]):
        dx[j] = dy[j] * (cdf[j] + x[j] * k * exp(minus_half * x[j] * x[j]))


def _flat(a):
    return np.ascontiguousarray(a).reshape(-1)


def gelu_forward(x):
    """(y, cdf): y = x * Phi(x), cdf = Phi(x)."""
    check_activation_args("gelu_forward", x)
    y, cdf = np.empty_like(x, order="C"), np.empty_like(x, order="C")
    _gelu_forward(_flat(x), y.reshape(-1), cdf.reshape(-1))
    return y, cdf


def gelu_backward(dy, x, cdf):
    """dx = dy * (Phi(x) + x * phi(x))."""
    check_activation_args("gelu_backward", dy, x, cdf)
    dx = np.empty_like(x, order="C")
    _gelu_backward(_flat(dy), _flat(x), _flat(cdf), dx.reshape(-1))
    return dx
