"""Layer normalisation, CUDA backend: one thread block per row (contract: reference/normalization.py).

Forward, per row: the block's threads stride over the row for a partial sum, a tree reduction
in shared memory gives the mean, again for sum (x - mean)^2 and so rstd (two passes, as the
reference: no cancellation for rows far from 0), then each thread writes its strided elements
of y.  Backward, per row: the same two reductions give mean(g) and mean(g xhat), then dx.
Everything is in x's dtype (a float32 kernel has no float64 arithmetic: the tree reduction
already sums pairwise).  dweight and dbias are a second kernel, one thread per (column, chunk
of 64 rows) summing down its rows, and a sum over the chunks (no atomics: the same sums every run).  Argument checks and messages come from
the reference.
"""
import math

import numpy as np
from numba import cuda, float32, float64

from tinygrad_seq.device import xp_of
from tinygrad_seq.kernels.reference.normalization import check_layer_norm_args, check_layer_norm_grad_args

from ._launch import SIMULATOR, kernel_arg, launch
from .softmax import _block_reduce   # the block's sum by halving, as the softmax's

# Threads per row: a power of two (the tree reduction halves it); a compile-time constant
# because it sizes the shared-memory scratch array.
ROW_THREADS = 16 if SIMULATOR else 128
MAX_ROW_BLOCKS = 3 if SIMULATOR else 65535
# Rows per partial sum of dweight and dbias.
AFFINE_CHUNK = 4 if SIMULATOR else 64


@cuda.jit(device=True, cache=True)
def _forward_rows(x, weight, bias, has_weight, has_bias, eps, y, mean, rstd, scratch):
    """y, mean, rstd of every row, block b doing rows b, b + gridDim, ...; eps is of x's dtype."""
    rows, n = x.shape
    zero, one = y.dtype.type(0), y.dtype.type(1)
    inv_n = one / y.dtype.type(n)
    for row in range(cuda.blockIdx.x, rows, cuda.gridDim.x):
        partial = zero
        for j in range(cuda.threadIdx.x, n, cuda.blockDim.x):
            partial += x[row, j]
        m = _block_reduce(scratch, partial, False) * inv_n
        partial = zero
        for j in range(cuda.threadIdx.x, n, cuda.blockDim.x):
            d = x[row, j] - m
            partial += d * d
        s = one / math.sqrt(_block_reduce(scratch, partial, False) * inv_n + eps)
        if cuda.threadIdx.x == 0:
            mean[row] = m
            rstd[row] = s
        for j in range(cuda.threadIdx.x, n, cuda.blockDim.x):
            v = (x[row, j] - m) * s
            if has_weight:
                v = v * weight[j]
            if has_bias:
                v = v + bias[j]
            y[row, j] = v


@cuda.jit(device=True, cache=True)
def _backward_rows(dy, x, weight, has_weight, mean, rstd, dx, scratch):
    """dx = rstd (g - mean(g) - xhat mean(g xhat)) of every row, g = dy * weight (dy without)."""
    rows, n = x.shape
    zero = dx.dtype.type(0)
    inv_n = dx.dtype.type(1) / dx.dtype.type(n)
    for row in range(cuda.blockIdx.x, rows, cuda.gridDim.x):
        m, s = mean[row], rstd[row]
        partial_g = zero
        partial_gx = zero
        for j in range(cuda.threadIdx.x, n, cuda.blockDim.x):
            g = dy[row, j] * weight[j] if has_weight else dy[row, j]
            partial_g += g
            partial_gx += g * ((x[row, j] - m) * s)
        mean_g = _block_reduce(scratch, partial_g, False) * inv_n
        mean_gx = _block_reduce(scratch, partial_gx, False) * inv_n
        for j in range(cuda.threadIdx.x, n, cuda.blockDim.x):
            g = dy[row, j] * weight[j] if has_weight else dy[row, j]
            dx[row, j] = s * (g - mean_g - (x[row, j] - m) * s * mean_gx)


# Shared memory needs its element type at compile time, so each float type gets a
# two-line kernel around the generic device functions above.
@cuda.jit(cache=True)
def _layer_norm_forward_f32(x, weight, bias, has_weight, has_bias, eps, y, mean, rstd):
    _forward_rows(x, weight, bias, has_weight, has_bias, eps, y, mean, rstd, cuda.shared.array(ROW_THREADS, float32))


@cuda.jit(cache=True)
def _layer_norm_forward_f64(x, weight, bias, has_weight, has_bias, eps, y, mean, rstd):
    _forward_rows(x, weight, bias, has_weight, has_bias, eps, y, mean, rstd, cuda.shared.array(ROW_THREADS, float64))


@cuda.jit(cache=True)
def _layer_norm_backward_f32(dy, x, weight, has_weight, mean, rstd, dx):
    _backward_rows(dy, x, weight, has_weight, mean, rstd, dx, cuda.shared.array(ROW_THREADS, float32))


@cuda.jit(cache=True)
def _layer_norm_backward_f64(dy, x, weight, has_weight, mean, rstd, dx):
    _backward_rows(dy, x, weight, has_weight, mean, rstd, dx, cuda.shared.array(ROW_THREADS, float64))


@cuda.jit(cache=True)
def _affine_partials(dy, x, mean, rstd, chunk, partial):
    """partial[0, c, j] = sum of dy xhat and partial[1, c, j] = sum of dy over column j of the
    rows of chunk c (rows c*chunk up to (c+1)*chunk); one work item per (chunk, column)."""
    rows, n = x.shape
    chunks = partial.shape[1]
    for k in range(cuda.grid(1), chunks * n, cuda.gridsize(1)):
        c, j = k // n, k % n
        dw = partial.dtype.type(0)
        db = partial.dtype.type(0)
        for r in range(c * chunk, min(rows, (c + 1) * chunk)):
            dw += dy[r, j] * ((x[r, j] - mean[r]) * rstd[r])
            db += dy[r, j]
        partial[0, c, j] = dw
        partial[1, c, j] = db


def _row_grid(rows):
    return max(1, min(MAX_ROW_BLOCKS, rows)), ROW_THREADS


def _optional(a, xp, dtype):
    return (a, True) if a is not None else (xp.empty(1, dtype=dtype), False)


def layer_norm_forward(x, weight, bias, eps):
    """(y, mean, rstd): y = (x - mean) * rstd * weight + bias per row, rstd = 1 / sqrt(var + eps)."""
    check_layer_norm_args(x, weight, bias)
    xp = xp_of(x)
    rows, n = x.shape
    y, mean, rstd = xp.empty_like(x), xp.empty(rows, dtype=x.dtype), xp.empty(rows, dtype=x.dtype)
    if rows:
        (w, has_weight), (b, has_bias) = _optional(weight, xp, x.dtype), _optional(bias, xp, x.dtype)
        kernel = _layer_norm_forward_f32 if x.dtype == np.float32 else _layer_norm_forward_f64
        kernel[_row_grid(rows)](kernel_arg(x), kernel_arg(w), kernel_arg(b), has_weight, has_bias,
                                x.dtype.type(eps), kernel_arg(y), kernel_arg(mean), kernel_arg(rstd))
    return y, mean, rstd


def layer_norm_backward(dy, x, weight, mean, rstd, need_affine):
    """(dx, dweight, dbias): dx = rstd (g - mean(g) - xhat mean(g xhat)), g = dy * weight."""
    check_layer_norm_grad_args(dy, x, weight, mean, rstd)
    xp = xp_of(x)
    rows, n = x.shape
    dx = xp.empty_like(x)
    if rows:
        w, has_weight = _optional(weight, xp, x.dtype)
        kernel = _layer_norm_backward_f32 if x.dtype == np.float32 else _layer_norm_backward_f64
        kernel[_row_grid(rows)](kernel_arg(dy), kernel_arg(x), kernel_arg(w), has_weight,
                                kernel_arg(mean), kernel_arg(rstd), kernel_arg(dx))
    if not need_affine:
        return dx, None, None
    # per chunk of AFFINE_CHUNK rows a partial sum per column (short sequential sums, and enough
    # work items to fill the GPU), then CuPy's tree reduction over the chunks
    chunks = -(-rows // AFFINE_CHUNK)
    partial = xp.empty((2, chunks, n), dtype=x.dtype)
    launch(_affine_partials, chunks * n, dy, x, mean, rstd, AFFINE_CHUNK, partial)
    dweight, dbias = partial.sum(axis=1)
    return dx, dweight, dbias
