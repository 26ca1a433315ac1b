"""Layer normalisation compiled with Numba (contract: reference/normalization.py).

Rows are independent and spread over the cores with `prange`.  Each row's sums accumulate in
float64 (two passes for the mean and the variance, as the reference); the element-wise passes
run in x's dtype on the mean and rstd rounded to it.  The backward's dweight and dbias are
summed per fixed block of rows (float64 partials, one per block, added in block order), so
the result does not depend on how many threads ran.  No fast-math: a NaN or inf in a row makes
that row NaN, as in the reference.
"""
import numpy as np
from numba import njit, prange

from tinygrad_seq.kernels.reference.normalization import check_layer_norm_args, check_layer_norm_grad_args

# Blocks of rows of the backward's dweight/dbias partial sums (fewer when there are fewer rows).
BLOCKS = 64


@njit(cache=True)
def _row_stats(x, eps):
    """(mean, rstd) of one row, in float64."""
    n = x.shape[0]
    s = 0.0
    for j in range(n):
        s += x[j]
    mu = s / n
    q = 0.0
    for j in range(n):
        d = x[j] - mu
        q += d * d
    return mu, 1.0 / np.sqrt(q / n + eps)


@njit(cache=True, parallel=True)
def _forward(x, weight, bias, has_weight, has_bias, eps):
    rows, n = x.shape
    y = np.empty_like(x)
    mean = np.empty(rows, dtype=x.dtype)
    rstd = np.empty(rows, dtype=x.dtype)
    for r in prange(rows):
        mu, rs = _row_stats(x[r], eps)
        m, s = x.dtype.type(mu), x.dtype.type(rs)
        mean[r], rstd[r] = m, s
        for j in range(n):
            v = (x[r, j] - m) * s
            if has_weight:
                v = v * weight[j]
            if has_bias:
                v = v + bias[j]
            y[r, j] = v
    return y, mean, rstd


@njit(cache=True, parallel=True)
def _backward(dy, x, weight, has_weight, mean, rstd, need_affine, blocks):
    rows, n = x.shape
    dx = np.empty_like(x)
    partial = np.zeros((blocks, 2, n))            # per block of rows: dweight's, dbias's sums
    for k in prange(blocks):
        for r in range(k * rows // blocks, (k + 1) * rows // blocks):
            m, s = mean[r], rstd[r]
            sg = 0.0
            sgx = 0.0
            for j in range(n):
                g = dy[r, j] * weight[j] if has_weight else dy[r, j]
                sg += g
                sgx += g * ((x[r, j] - m) * s)
            mean_g, mean_gx = x.dtype.type(sg / n), x.dtype.type(sgx / n)
            for j in range(n):
                xhat = (x[r, j] - m) * s
                g = dy[r, j] * weight[j] if has_weight else dy[r, j]
                dx[r, j] = s * (g - mean_g - xhat * mean_gx)
                if need_affine:
                    partial[k, 0, j] += dy[r, j] * xhat
                    partial[k, 1, j] += dy[r, j]
    sums = np.zeros((2, n))
    for k in range(blocks):                        # in block order: the same sums every call
        sums += partial[k]
    return dx, sums


def _optional(a, dtype):
    return (np.ascontiguousarray(a), True) if a is not None else (np.empty(0, dtype=dtype), False)


def layer_norm_forward(x, weight, bias, eps):
    """(y, mean, rstd): y = (x - mean) * rstd * weight + bias per row, rstd = 1 / sqrt(var + eps)."""
    check_layer_norm_args(x, weight, bias)
    (w, has_weight), (b, has_bias) = _optional(weight, x.dtype), _optional(bias, x.dtype)
    return _forward(np.ascontiguousarray(x), w, b, has_weight, has_bias, float(eps))


def layer_norm_backward(dy, x, weight, mean, rstd, need_affine):
    """(dx, dweight, dbias): dx = rstd (g - mean(g) - xhat mean(g xhat)), g = dy * weight."""
    check_layer_norm_grad_args(dy, x, weight, mean, rstd)
    w, has_weight = _optional(weight, x.dtype)
    dx, sums = _backward(np.ascontiguousarray(dy), np.ascontiguousarray(x), w, has_weight,
                         np.ascontiguousarray(mean), np.ascontiguousarray(rstd), bool(need_affine),
                         max(1, min(BLOCKS, x.shape[0])))
    if not need_affine:
        return dx, None, None
    return dx, sums[0].astype(x.dtype), sums[1].astype(x.dtype)
