"""Layer normalisation over the rows of a 2-D array, forward and backward (contract:
kernels/API.md and kernels/reference/normalization.py).

Each row is one call of _normalization.h's row functions: its sums in float64, with the row
in L1 across the passes.  The rows are shared over the module's OpenMP team (static schedule:
thread t always takes the same rows for a given thread count) once x holds TEAM_FROM elements;
a smaller call runs on the calling thread.  The backward's dweight and dbias are float64
partial sums per thread, added in thread order at the end: deterministic for a fixed thread
count, and no thread ever writes another's columns.
"""
include "_common.pxi"

import numpy as np
from cython.parallel cimport prange
from libc.stdlib cimport free, calloc

cdef extern from "_normalization.h":
    void row_forward_f "tgs_layer_norm_rowf"(const float* x, const float* w, const float* b, double eps,
                                             Py_ssize_t n, float* y, float* mean, float* rstd) noexcept nogil
    void row_forward_d "tgs_layer_norm_rowd"(const double* x, const double* w, const double* b, double eps,
                                             Py_ssize_t n, double* y, double* mean, double* rstd) noexcept nogil
    void row_backward_f "tgs_layer_norm_row_backwardf"(const float* dy, const float* x, const float* w,
                                                       float m, float r, Py_ssize_t n, float* dx,
                                                       double* dw, double* db) noexcept nogil
    void row_backward_d "tgs_layer_norm_row_backwardd"(const double* dy, const double* x, const double* w,
                                                       double m, double r, Py_ssize_t n, double* dx,
                                                       double* dw, double* db) noexcept nogil

# From this many elements the rows go to the team: below it, waking the threads costs more
# than the few microseconds of work they would share (a (2048, 128) float32 call is 2**18).
cdef Py_ssize_t TEAM_FROM = 1 << 15


cdef inline int threads_for(Py_ssize_t size) noexcept nogil:
    return _threads if size >= TEAM_FROM else 1


def layer_norm_forward(const floating[:, ::1] x, const floating[::1] weight, const floating[::1] bias,
                       bint has_weight, bint has_bias, double eps):
    """(y, mean, rstd); weight and bias are read only where has_weight / has_bias (the wrapper
    passes an empty array of x's dtype otherwise)."""
    cdef Py_ssize_t rows = x.shape[0], n = x.shape[1], r
    dtype = np.float32 if floating is float else np.float64
    y_out, mean_out, rstd_out = np.empty((rows, n), dtype=dtype), np.empty(rows, dtype=dtype), np.empty(rows, dtype=dtype)
    cdef floating[:, ::1] y = y_out
    cdef floating[::1] mean = mean_out, rstd = rstd_out
    cdef const floating* w = &weight[0] if has_weight else NULL
    cdef const floating* b = &bias[0] if has_bias else NULL
    cdef int threads = threads_for(rows * n)
    if rows == 0:
        return y_out, mean_out, rstd_out
    with nogil:
        for r in prange(rows, schedule="static", num_threads=threads):
            if floating is float:
                row_forward_f(&x[r, 0], w, b, eps, n, &y[r, 0], &mean[r], &rstd[r])
            else:
                row_forward_d(&x[r, 0], w, b, eps, n, &y[r, 0], &mean[r], &rstd[r])
    return y_out, mean_out, rstd_out


def layer_norm_backward(const floating[:, ::1] dy, const floating[:, ::1] x, const floating[::1] weight,
                        bint has_weight, const floating[::1] mean, const floating[::1] rstd, bint need_affine):
    """(dx, dweight, dbias), the last two None unless need_affine."""
    cdef Py_ssize_t rows = x.shape[0], n = x.shape[1], r, j
    dtype = np.float32 if floating is float else np.float64
    dx_out = np.empty((rows, n), dtype=dtype)
    cdef floating[:, ::1] dx = dx_out
    cdef const floating* w = &weight[0] if has_weight else NULL
    cdef int threads = threads_for(rows * n), t
    # per thread: dweight's partial sums, then dbias's (2 n float64, zeroed)
    cdef double* partial = NULL
    cdef double* mine
    cdef double[::1] sums
    if need_affine:
        partial = <double*>calloc(threads * 2 * n, sizeof(double))
        if partial == NULL:
            raise MemoryError()
    try:
        if rows:
            with nogil:
                for r in prange(rows, schedule="static", num_threads=threads):
                    mine = partial + team_rank() * 2 * n if need_affine else NULL
                    if floating is float:
                        row_backward_f(&dy[r, 0], &x[r, 0], w, mean[r], rstd[r], n, &dx[r, 0],
                                       mine, mine + n if need_affine else NULL)
                    else:
                        row_backward_d(&dy[r, 0], &x[r, 0], w, mean[r], rstd[r], n, &dx[r, 0],
                                       mine, mine + n if need_affine else NULL)
        if not need_affine:
            return dx_out, None, None
        sums_out = np.zeros(2 * n, dtype=np.float64)
        sums = sums_out
        for t in range(threads):                     # in thread order: the same sums every call
            for j in range(2 * n):
                sums[j] += partial[t * 2 * n + j]
        return dx_out, sums_out[:n].astype(dtype), sums_out[n:].astype(dtype)
    finally:
        free(partial)
