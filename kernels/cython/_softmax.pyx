"""Masked softmax and log-softmax over the last axis of a 2-D array, forward and backward.

Contract: kernels/API.md and kernels/reference/softmax.py (same algorithm, row by row):
m = max of the unmasked entries (0 when there are none), e = exp(x - m) or 0 where masked,
y = e / sum(e) (or all zeros when the sum is 0). Masked entries and all-masked rows rely on
IEEE -inf, which the build keeps (no -ffast-math, setup.py); the exp loop vectorises through
glibc's libmvec, announced by _fastmath.h.

Log-softmax: y = (x - m) - log(sum(exp(x - m))), m the row max, in that order, as the
reference (so inf - inf makes the same rows NaN); dx = dy - exp(y) * sum(dy).  Its rows go to
the module's OpenMP team once the array holds TEAM_FROM elements; smaller calls (a few
microseconds) run on the calling thread rather than wake the team.
"""
include "_common.pxi"

import numpy as np
from cython.parallel cimport prange
from libc.math cimport INFINITY, log, logf

cdef extern from "_fastmath.h":
    float sum_expf "tgs_sum_expf"(const float* a, float shift, Py_ssize_t n) noexcept nogil
    double sum_expd "tgs_sum_expd"(const double* a, double shift, Py_ssize_t n) noexcept nogil

# From this many elements the log-softmax rows go to the team (as _normalization.pyx's).
cdef Py_ssize_t TEAM_FROM = 1 << 15

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


cdef void softmax_rows(const floating* a, const floating* b, const unsigned char* excluded,
                       floating* out, Py_ssize_t N, Py_ssize_t L, bint backward) noexcept nogil:
    """Every row r < N, the rows shared out over the cores: the forward of x = a (with the
    mask rows `excluded`, or NULL) or the backward of dy = a, y = b."""
    cdef Py_ssize_t r
    for r in prange(N, schedule="static", num_threads=_threads):
        if backward:
            softmax_row_backward(a + r * L, b + r * L, out + r * L, L)
        else:
            softmax_row(a + r * L, excluded + r * L if excluded != NULL else NULL, out + r * L, L)


def softmax_forward(const floating[:, ::1] x, const unsigned char[:, ::1] excluded):
    """excluded: the bool mask viewed as uint8 (True = excluded), or None."""
    cdef Py_ssize_t N = x.shape[0], L = x.shape[1]
    out = np.empty((N, L), dtype=np.float32 if floating is float else np.float64)
    cdef const unsigned char* mask = &excluded[0, 0] if excluded is not None and N * L else NULL
    cdef floating[:, ::1] y = out
    if N * L:
        with nogil:
            softmax_rows(&x[0, 0], NULL, mask, &y[0, 0], N, L, False)
    return out


def softmax_backward(const floating[:, ::1] dy, const floating[:, ::1] y):
    cdef Py_ssize_t N = y.shape[0], L = y.shape[1]
    out = np.empty((N, L), dtype=np.float32 if floating is float else np.float64)
    cdef floating[:, ::1] dx = out
    if N * L:
        with nogil:
            softmax_rows(&dy[0, 0], &y[0, 0], NULL, &dx[0, 0], N, L, True)
    return out


cdef inline void log_softmax_row(const floating* x, floating* y, Py_ssize_t n) noexcept nogil:
    """One row: its max, then the sum of exp(x - max) (both vectorised reductions of
    _fastmath.h), then y, each a pass over the row while it sits in L1."""
    cdef Py_ssize_t j
    cdef floating m = row_max(x, NULL, n), log_total
    if floating is float:
        log_total = logf(sum_expf(x, m, n))
    else:
        log_total = log(sum_expd(x, m, n))
    for j in range(n):
        y[j] = (x[j] - m) - log_total


cdef inline void log_softmax_row_backward(const floating* dy, const floating* y, floating* dx,
                                          Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating total = row_sum(dy, n)
    for j in range(n):
        dx[j] = dy[j] - exp_(y[j]) * total   # libm's exp (libmvec), exactly 0 at y = -inf


def log_softmax_forward(const floating[:, ::1] x):
    cdef Py_ssize_t N = x.shape[0], n = x.shape[1], r
    out = np.empty((N, n), dtype=np.float32 if floating is float else np.float64)
    cdef floating[:, ::1] y = out
    cdef int threads = _threads if N * n >= TEAM_FROM else 1
    if N * n:
        with nogil:
            for r in prange(N, schedule="static", num_threads=threads):
                log_softmax_row(&x[r, 0], &y[r, 0], n)
    return out


def log_softmax_backward(const floating[:, ::1] dy, const floating[:, ::1] y):
    cdef Py_ssize_t N = y.shape[0], n = y.shape[1], r
    out = np.empty((N, n), dtype=np.float32 if floating is float else np.float64)
    cdef floating[:, ::1] dx = out
    cdef int threads = _threads if N * n >= TEAM_FROM else 1
    if N * n:
        with nogil:
            for r in prange(N, schedule="static", num_threads=threads):
                log_softmax_row_backward(&dy[r, 0], &y[r, 0], &dx[r, 0], n)
    return out
