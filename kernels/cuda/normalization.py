"""Layer normalisation, CUDA backend: one thread block per row (contract: reference/normalization.py).

Forward, per row: the block's threads stride over the row for a partial sum, a tree reduction
in shared memory gives the mean, again for sum (x - mean)^2 and so rstd, then each thread
writes its strided elements of y.  Backward, per row: the same two reductions give mean(g) and
mean(g xhat), then dx.  The sums are kept in float64 (shared memory and registers) whatever
x's dtype, as the CPU backends do.  dweight and dbias are a second kernel, one thread per
column summing down the rows in float64 (no atomics: the same sums every run).
Argument checks and messages come from the reference.
"""
import math

from numba import cuda, float64

from tinygrad_seq.device import xp_of
from tinygrad_seq.kernels.reference.normalization import check_layer_norm_args, check_layer_norm_grad_args

from ._launch import SIMULATOR, kernel_arg, launch

# Threads per row: a power of two (the tree reduction halves it); a compile-time constant
# because it sizes the shared-memory scratch array.
ROW_THREADS = 16 if SIMULATOR else 128
MAX_ROW_BLOCKS = 3 if SIMULATOR else 65535


@cuda.jit(device=True, cache=True)
def _block_sum(scratch, value):
    """The sum of `value` over the block's threads, by halving the scratch; every thread gets it."""
    tid = cuda.threadIdx.x
    scratch[tid] = value
    cuda.syncthreads()
    half = cuda.blockDim.x // 2
    while half > 0:
        if tid < half:
            scratch[tid] += scratch[tid + half]
        cuda.syncthreads()
        half //= 2
    result = scratch[0]
    cuda.syncthreads()  # everyone has read scratch[0] before the next reduction reuses it
    return result


@cuda.jit(cache=True)
def _forward_rows(x, weight, bias, has_weight, has_bias, eps, y, mean, rstd):
    scratch = cuda.shared.array(ROW_THREADS, float64)
    rows, n = x.shape
    for row in range(cuda.blockIdx.x, rows, cuda.gridDim.x):
        partial = 0.0
        for j in range(cuda.threadIdx.x, n, cuda.blockDim.x):
            partial += x[row, j]
        mu = _block_sum(scratch, partial) / n
        partial = 0.0
        for j in range(cuda.threadIdx.x, n, cuda.blockDim.x):
            d = x[row, j] - mu
            partial += d * d
        var = _block_sum(scratch, partial) / n
        m = y.dtype.type(mu)
        s = y.dtype.type(1.0 / math.sqrt(var + eps))
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


@cuda.jit(cache=True)
def _backward_rows(dy, x, weight, has_weight, mean, rstd, dx):
    scratch = cuda.shared.array(ROW_THREADS, float64)
    rows, n = x.shape
    for row in range(cuda.blockIdx.x, rows, cuda.gridDim.x):
        m, s = mean[row], rstd[row]
        partial_g = 0.0
        partial_gx = 0.0
        for j in range(cuda.threadIdx.x, n, cuda.blockDim.x):
            g = dy[row, j] * weight[j] if has_weight else dy[row, j]
            partial_g += g
            partial_gx += g * ((x[row, j] - m) * s)
        mean_g = dx.dtype.type(_block_sum(scratch, partial_g) / n)
        mean_gx = dx.dtype.type(_block_sum(scratch, partial_gx) / n)
        for j in range(cuda.threadIdx.x, n, cuda.blockDim.x):
            g = dy[row, j] * weight[j] if has_weight else dy[row, j]
            dx[row, j] = s * (g - mean_g - (x[row, j] - m) * s * mean_gx)


@cuda.jit(cache=True)
def _affine_grads(dy, x, mean, rstd, dweight, dbias):
    """dweight[j] = sum_r dy[r, j] xhat[r, j], dbias[j] = sum_r dy[r, j]; grid-stride over columns."""
    rows, n = x.shape
    for j in range(cuda.grid(1), n, cuda.gridsize(1)):
        dw = 0.0
        db = 0.0
        for r in range(rows):
            dw += dy[r, j] * ((x[r, j] - mean[r]) * rstd[r])
            db += dy[r, j]
        dweight[j] = dw
        dbias[j] = db


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
        _forward_rows[_row_grid(rows)](kernel_arg(x), kernel_arg(w), kernel_arg(b), has_weight, has_bias,
                                       float(eps), kernel_arg(y), kernel_arg(mean), kernel_arg(rstd))
    return y, mean, rstd


def layer_norm_backward(dy, x, weight, mean, rstd, need_affine):
    """(dx, dweight, dbias): dx = rstd (g - mean(g) - xhat mean(g xhat)), g = dy * weight."""
    check_layer_norm_grad_args(dy, x, weight, mean, rstd)
    xp = xp_of(x)
    rows, n = x.shape
    dx = xp.empty_like(x)
    if rows:
        w, has_weight = _optional(weight, xp, x.dtype)
        _backward_rows[_row_grid(rows)](kernel_arg(dy), kernel_arg(x), kernel_arg(w), has_weight,
                                        kernel_arg(mean), kernel_arg(rstd), kernel_arg(dx))
    if not need_affine:
        return dx, None, None
    dweight, dbias = xp.empty(n, dtype=x.dtype), xp.empty(n, dtype=x.dtype)
    launch(_affine_grads, n, dy, x, mean, rstd, dweight, dbias)
    return dx, dweight, dbias
