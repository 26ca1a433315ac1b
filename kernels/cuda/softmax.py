"""Masked softmax over the last axis, CUDA backend: one thread block per row.

    y[r, j] = exp(x[r, j] - m_r) / sum_{k not masked} exp(x[r, k] - m_r)   (0 where masked)
    dx[r, j] = y[r, j] * (dy[r, j] - sum_k dy[r, k] y[r, k])

Each block walks its row in strides of the block size, each thread keeping a partial
max or sum, and the block combines the partials by a tree reduction in shared memory.
Argument checks and messages come from the reference (`check_softmax_args`).
"""
import math

from numba import cuda, float32, float64

from tinygrad_seq.device import xp_of
from tinygrad_seq.kernels.reference.softmax import check_softmax_args, check_softmax_grad_args

from ._launch import SIMULATOR, kernel_arg

# Threads per row: a power of two (the tree reduction halves it); a compile-time constant
# because it sizes the shared-memory scratch array.
ROW_THREADS = 16 if SIMULATOR else 256
MAX_ROW_BLOCKS = 3 if SIMULATOR else 65535


@cuda.jit(device=True, cache=True)
def _block_max(scratch, value):
    """The max of `value` over the block's threads (every thread gets it)."""
    tid = cuda.threadIdx.x
    scratch[tid] = value
    cuda.syncthreads()
    half = cuda.blockDim.x // 2
    while half > 0:
        if tid < half and scratch[tid + half] > scratch[tid]:
            scratch[tid] = scratch[tid + half]
        cuda.syncthreads()
        half //= 2
    result = scratch[0]
    cuda.syncthreads()  # everyone has read scratch[0] before the next reduction reuses it
    return result


@cuda.jit(device=True, cache=True)
def _block_sum(scratch, value):
    """The sum of `value` over the block's threads (every thread gets it)."""
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
    cuda.syncthreads()
    return result


@cuda.jit(device=True, cache=True)
def _softmax_rows(x, excluded, has_mask, y, scratch):
    """y = masked softmax of x, block b doing rows b, b + gridDim, ..."""
    n_rows, length = x.shape
    zero = y.dtype.type(0)
    minus_inf = y.dtype.type(-math.inf)
    for row in range(cuda.blockIdx.x, n_rows, cuda.gridDim.x):
        partial = minus_inf
        for j in range(cuda.threadIdx.x, length, cuda.blockDim.x):
            if not (has_mask and excluded[row, j]) and x[row, j] > partial:
                partial = x[row, j]
        row_max = _block_max(scratch, partial)
        if row_max == minus_inf:
            row_max = zero  # every entry masked: any finite shift keeps the exps at 0
        partial = zero
        for j in range(cuda.threadIdx.x, length, cuda.blockDim.x):
            if not (has_mask and excluded[row, j]):
                partial += math.exp(x[row, j] - row_max)
        total = _block_sum(scratch, partial)
        if total == zero:
            total = y.dtype.type(1)  # nothing to normalise: the row stays all zeros
        for j in range(cuda.threadIdx.x, length, cuda.blockDim.x):
            if has_mask and excluded[row, j]:
                y[row, j] = zero
            else:
                y[row, j] = math.exp(x[row, j] - row_max) / total


@cuda.jit(device=True, cache=True)
def _softmax_grad_rows(dy, y, dx, scratch):
    """dx = y * (dy - rowsum(dy * y)), block b doing rows b, b + gridDim, ..."""
    n_rows, length = y.shape
    for row in range(cuda.blockIdx.x, n_rows, cuda.gridDim.x):
        partial = dx.dtype.type(0)
        for j in range(cuda.threadIdx.x, length, cuda.blockDim.x):
            partial += dy[row, j] * y[row, j]
        dot = _block_sum(scratch, partial)
        for j in range(cuda.threadIdx.x, length, cuda.blockDim.x):
            dx[row, j] = y[row, j] * (dy[row, j] - dot)


# Shared memory needs its element type at compile time, so each float type gets a
# two-line kernel around the generic device function above.
@cuda.jit(cache=True)
def _softmax_forward_f32(x, excluded, has_mask, y):
    _softmax_rows(x, excluded, has_mask, y, cuda.shared.array(ROW_THREADS, float32))


@cuda.jit(cache=True)
def _softmax_forward_f64(x, excluded, has_mask, y):
    _softmax_rows(x, excluded, has_mask, y, cuda.shared.array(ROW_THREADS, float64))


@cuda.jit(cache=True)
def _softmax_backward_f32(dy, y, dx):
    _softmax_grad_rows(dy, y, dx, cuda.shared.array(ROW_THREADS, float32))


@cuda.jit(cache=True)
def _softmax_backward_f64(dy, y, dx):
    _softmax_grad_rows(dy, y, dx, cuda.shared.array(ROW_THREADS, float64))


def _row_grid(n_rows):
    return max(1, min(MAX_ROW_BLOCKS, n_rows)), ROW_THREADS


def _for_dtype(dtype, f32_kernel, f64_kernel):
    if dtype == "float32":
        return f32_kernel
    if dtype == "float64":
        return f64_kernel
    raise ValueError(f"softmax: arrays must be float32 or float64, got {dtype}")


def softmax_forward(x, mask):
    """y = softmax(x) over the last axis; mask True = excluded (probability 0)."""
    xp = xp_of(x)
    check_softmax_args(x, mask)
    kernel = _for_dtype(x.dtype, _softmax_forward_f32, _softmax_forward_f64)
    y = xp.empty_like(x)
    if x.size == 0:
        return y
    has_mask = mask is not None
    # without a mask the kernel never reads `excluded`; it still needs an array to bind
    excluded = xp.ascontiguousarray(mask, dtype=bool) if has_mask else xp.zeros((1, 1), dtype=bool)
    kernel[_row_grid(x.shape[0])](kernel_arg(x), kernel_arg(excluded), has_mask, kernel_arg(y))
    return y


def softmax_backward(dy, y):
    """dx = y * (dy - sum(dy * y, axis=-1, keepdims=True))."""
    xp = xp_of(y)
    check_softmax_grad_args(dy, y)
    kernel = _for_dtype(y.dtype, _softmax_backward_f32, _softmax_backward_f64)
    dx = xp.empty_like(y)
    if y.size == 0:
        return dx
    kernel[_row_grid(y.shape[0])](kernel_arg(dy), kernel_arg(y), kernel_arg(dx))
    return dx
