"""Masked softmax over the last axis of a 2-D array, forward and backward.

Contract: kernels/API.md and kernels/reference/softmax.py (same algorithm, row by row):
m = max of the unmasked entries (0 when there are none), e = exp(x - m) or 0 where masked,
y = e / sum(e) (or all zeros when the sum is 0). Masked entries and all-masked rows rely on
IEEE -inf, which the build keeps (no -ffast-math, setup.py); the exp loop vectorises through
glibc's libmvec, announced by _fastmath.h.
"""
include "_common.pxi"

import numpy as np
from cython.parallel cimport prange
from libc.math cimport INFINITY

cdef inline void softmax_row(const floating* x, const unsigned char* excluded, floating* y,
                             Py_ssize_t L) noexcept nogil:
    """One row; the max and the sum are _fastmath.h's vectorised reductions, the exp loop
    vectorises through libmvec (no reduction in it, so no -ffast-math needed)."""
    cdef Py_ssize_t j
    cdef floating m = row_max(x, excluded, L), total, e, zero = 0
    if m == -INFINITY:   # nothing unmasked (or every entry -inf): any finite shift gives e = 0
        m = 0
    if excluded == NULL:
        for j in range(L):
            y[j] = exp_(x[j] - m)
    else:
        for j in range(L):
            e = exp_(x[j] - m)          # computed for every entry so the loop has no branch
            y[j] = zero if excluded[j] else e
    total = row_sum(y, L)
    if total == 0:
        total = 1
    for j in range(L):
        y[j] = y[j] / total


cdef inline void softmax_row_backward(const floating* dy, const floating* y, floating* dx,
                                      Py_ssize_t L) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating s = row_dot(dy, y, L)
    for j in range(L):
        dx[j] = y[j] * (dy[j] - s)


def softmax_forward(const floating[:, ::1] x, const unsigned char[:, ::1] excluded):
    """excluded: the bool mask viewed as uint8 (True = excluded), or None."""
    cdef Py_ssize_t N = x.shape[0], L = x.shape[1], r
    cdef bint masked = excluded is not None
    out = np.empty((N, L), dtype=np.float32 if floating is float else np.float64)
    cdef floating[:, ::1] y = out
    if N * L == 0:
        return out
    with nogil:
        for r in prange(N, schedule="static", num_threads=_threads):
            softmax_row(&x[r, 0], &excluded[r, 0] if masked else NULL, &y[r, 0], L)
    return out


def softmax_backward(const floating[:, ::1] dy, const floating[:, ::1] y):
    cdef Py_ssize_t N = y.shape[0], L = y.shape[1], r
    out = np.empty((N, L), dtype=np.float32 if floating is float else np.float64)
    cdef floating[:, ::1] dx = out
    if N * L == 0:
        return out
    with nogil:
        for r in prange(N, schedule="static", num_threads=_threads):
            softmax_row_backward(&dy[r, 0], &y[r, 0], &dx[r, 0], L)
    return out
