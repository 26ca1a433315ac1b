"""Exact GELU and ReLU forward and backward (contract: reference/activation.py), one pass each.

Every loop is an OpenMP loop over every core (see _common.pxi) that GCC vectorises, GELU's
calling glibc's SIMD erf/exp (libmvec) eight float32 lanes at a time.
"""
include "_common.pxi"

import numpy as np
from cython.parallel cimport prange
from libc.math cimport erf, erff

cdef double SQRT_HALF = 0.70710678118654752440
cdef double INV_SQRT_2PI = 0.39894228040143267794


cdef inline floating erf_(floating x) noexcept nogil:
    if floating is float:
        return erff(x)
    else:
        return erf(x)


def gelu_forward(const floating[::1] x):
    cdef Py_ssize_t n = x.shape[0], j
    dtype = np.float32 if floating is float else np.float64
    y_out = np.empty(n, dtype=dtype)
    cdf_out = np.empty(n, dtype=dtype)
    cdef floating[::1] y = y_out, cdf = cdf_out
    cdef floating s = <floating>SQRT_HALF, phi
    with nogil:
        for j in prange(n, schedule="static", num_threads=_threads):
            phi = <floating>0.5 + <floating>0.5 * erf_(x[j] * s)
            cdf[j] = phi
            y[j] = x[j] * phi
    return y_out, cdf_out


def gelu_backward(const floating[::1] dy, const floating[::1] x, const floating[::1] cdf):
    cdef Py_ssize_t n = x.shape[0], j
    dtype = np.float32 if floating is float else np.float64
    dx_out = np.empty(n, dtype=dtype)
    cdef floating[::1] dx = dx_out
    cdef floating k = <floating>INV_SQRT_2PI
    with nogil:
        for j in prange(n, schedule="static", num_threads=_threads):
            dx[j] = dy[j] * (cdf[j] + x[j] * k * exp_(<floating>-0.5 * x[j] * x[j]))
    return dx_out


# Below this many elements a ReLU pass runs on the calling thread: waking the team costs more
# than the few microseconds of memory traffic it would share.
cdef Py_ssize_t RELU_SERIAL_BELOW = 1 << 15


def relu(const floating[::1] a, const floating[::1] dy, bint backward):
    """Forward (a = x, dy unused): y = max(x, 0), written `x if not x <= 0` so that a NaN
    passes through (as np.maximum).  Backward (a = y): dx = dy * [y > 0], a product (not a
    select) so NaN and inf in dy behave as the reference's."""
    cdef Py_ssize_t n = a.shape[0], j
    out = np.empty(n, dtype=np.float32 if floating is float else np.float64)
    cdef floating[::1] o = out
    cdef int threads = _threads if n >= RELU_SERIAL_BELOW else 1
    with nogil:
        if backward:
            for j in prange(n, schedule="static", num_threads=threads):
                o[j] = dy[j] * (1 if a[j] > 0 else 0)
        else:
            for j in prange(n, schedule="static", num_threads=threads):
                o[j] = 0 if a[j] <= 0 else a[j]
    return out
