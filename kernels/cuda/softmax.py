"""Masked softmax and log-softmax over the last axis, CUDA backend: one thread block per row.

    y[r, j] = exp(x[r, j] - m_r) / sum_{k not masked} exp(x[r, k] - m_r)   (0 where masked)
    dx[r, j] = y[r, j] * (dy[r, j] - sum_k dy[r, k] y[r, k])

    log-softmax:  y[r, j] = (x[r, j] - m_r) - log sum_k exp(x[r, k] - m_r)
                  dx[r, j] = dy[r, j] - exp(y[r, j]) sum_k dy[r, k]

Each block walks its row in strides of the block size, each thread keeping a partial
max or sum, and the block combines the partials by a tree reduction in shared memory.
Argument checks and messages come from the reference (`check_softmax_args`).

A mask broadcast over x's leading axes (attention's causal (L, S) mask against scores
(N, heads, L, S), a key-padding mask (N, 1, 1, S)) need not be expanded to x's size (33 MB
of bools per layer at the GPU benchmark's sizes): `broadcast_mask_rows` keeps its own rows,
and row r of x reads mask row (r // inner) % M.
"""
import math
from typing import Any, NamedTuple

from numba import cuda, float32, float64

from tinygrad_seq.device import xp_of
from tinygrad_seq.kernels.reference.softmax import (check_log_softmax_args, check_log_softmax_grad_args,
                                                    check_softmax_args, check_softmax_grad_args)

from ._launch import SIMULATOR, kernel_arg

# Threads per row: a power of two (the tree reduction halves it); a compile-time constant
# because it sizes the shared-memory scratch array.
ROW_THREADS = 16 if SIMULATOR else 256
MAX_ROW_BLOCKS = 3 if SIMULATOR else 65535


@cuda.jit(device=True, cache=True)
def _block_reduce(scratch, value, take_max):
    """The max (take_max) or the sum of `value` over the block's threads, by halving the
    scratch in shared memory; every thread gets the result."""
    tid = cuda.threadIdx.x
    scratch[tid] = value
    cuda.syncthreads()
    half = cuda.blockDim.x // 2
    while half > 0:
        if tid < half:
            other = scratch[tid + half]
            if not take_max:
                scratch[tid] += other
            elif other > scratch[tid]:
                scratch[tid] = other
        cuda.syncthreads()
        half //= 2
    result = scratch[0]
    cuda.syncthreads()  # everyone has read scratch[0] before the next reduction reuses it
    return result


@cuda.jit(device=True, cache=True)
def _softmax_rows(x, excluded, has_mask, inner, y, scratch):
    """y = masked softmax of x, block b doing rows b, b + gridDim, ...; row r's mask is
    excluded[(r // inner) % len(excluded)]."""
    n_rows, length = x.shape
    mask_rows = excluded.shape[0]
    zero = y.dtype.type(0)
    minus_inf = y.dtype.type(-math.inf)
    for row in range(cuda.blockIdx.x, n_rows, cuda.gridDim.x):
        m = (row // inner) % mask_rows
        partial = minus_inf
        for j in range(cuda.threadIdx.x, length, cuda.blockDim.x):
            if not (has_mask and excluded[m, j]) and x[row, j] > partial:
                partial = x[row, j]
        row_max = _block_reduce(scratch, partial, True)
        if row_max == minus_inf:
            row_max = zero  # every entry masked: any finite shift keeps the exps at 0
        partial = zero
        for j in range(cuda.threadIdx.x, length, cuda.blockDim.x):
            if not (has_mask and excluded[m, j]):
                partial += math.exp(x[row, j] - row_max)
        total = _block_reduce(scratch, partial, False)
        if total == zero:
            total = y.dtype.type(1)  # nothing to normalise: the row stays all zeros
        for j in range(cuda.threadIdx.x, length, cuda.blockDim.x):
            if has_mask and excluded[m, j]:
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
        dot = _block_reduce(scratch, partial, False)
        for j in range(cuda.threadIdx.x, length, cuda.blockDim.x):
            dx[row, j] = y[row, j] * (dy[row, j] - dot)


@cuda.jit(device=True, cache=True)
def _log_softmax_rows(x, y, scratch):
    """y = log-softmax of x, block b doing rows b, b + gridDim, ...; in the reference's order,
    (x - m) - log(sum), so that inf - inf makes the same rows NaN (a NaN never wins the max
    here, but exp(NaN - m) makes its row's sum NaN all the same)."""
    n_rows, length = x.shape
    for row in range(cuda.blockIdx.x, n_rows, cuda.gridDim.x):
        partial = y.dtype.type(-math.inf)
        for j in range(cuda.threadIdx.x, length, cuda.blockDim.x):
            if x[row, j] > partial:
                partial = x[row, j]
        row_max = _block_reduce(scratch, partial, True)
        partial = y.dtype.type(0)
        for j in range(cuda.threadIdx.x, length, cuda.blockDim.x):
            partial += math.exp(x[row, j] - row_max)
        log_total = math.log(_block_reduce(scratch, partial, False))
        for j in range(cuda.threadIdx.x, length, cuda.blockDim.x):
            y[row, j] = (x[row, j] - row_max) - log_total


@cuda.jit(device=True, cache=True)
def _log_softmax_grad_rows(dy, y, dx, scratch):
    """dx = dy - exp(y) * rowsum(dy), block b doing rows b, b + gridDim, ..."""
    n_rows, length = y.shape
    for row in range(cuda.blockIdx.x, n_rows, cuda.gridDim.x):
        partial = dx.dtype.type(0)
        for j in range(cuda.threadIdx.x, length, cuda.blockDim.x):
            partial += dy[row, j]
        total = _block_reduce(scratch, partial, False)
        for j in range(cuda.threadIdx.x, length, cuda.blockDim.x):
            dx[row, j] = dy[row, j] - math.exp(y[row, j]) * total


# Shared memory needs its element type at compile time, so each float type gets a
# two-line kernel around the generic device function above.
@cuda.jit(cache=True)
def _softmax_forward_f32(x, excluded, has_mask, inner, y):
    _softmax_rows(x, excluded, has_mask, inner, y, cuda.shared.array(ROW_THREADS, float32))


@cuda.jit(cache=True)
def _softmax_forward_f64(x, excluded, has_mask, inner, y):
    _softmax_rows(x, excluded, has_mask, inner, y, cuda.shared.array(ROW_THREADS, float64))


@cuda.jit(cache=True)
def _softmax_backward_f32(dy, y, dx):
    _softmax_grad_rows(dy, y, dx, cuda.shared.array(ROW_THREADS, float32))


@cuda.jit(cache=True)
def _softmax_backward_f64(dy, y, dx):
    _softmax_grad_rows(dy, y, dx, cuda.shared.array(ROW_THREADS, float64))


@cuda.jit(cache=True)
def _log_softmax_forward_f32(x, y):
    _log_softmax_rows(x, y, cuda.shared.array(ROW_THREADS, float32))


@cuda.jit(cache=True)
def _log_softmax_forward_f64(x, y):
    _log_softmax_rows(x, y, cuda.shared.array(ROW_THREADS, float64))


@cuda.jit(cache=True)
def _log_softmax_backward_f32(dy, y, dx):
    _log_softmax_grad_rows(dy, y, dx, cuda.shared.array(ROW_THREADS, float32))


@cuda.jit(cache=True)
def _log_softmax_backward_f64(dy, y, dx):
    _log_softmax_grad_rows(dy, y, dx, cuda.shared.array(ROW_THREADS, float64))


def _row_grid(n_rows):
    return max(1, min(MAX_ROW_BLOCKS, n_rows)), ROW_THREADS


def _for_dtype(dtype, f32_kernel, f64_kernel):
    if dtype == "float32":
        return f32_kernel
    if dtype == "float64":
        return f64_kernel
    raise ValueError(f"softmax: arrays must be float32 or float64, got {dtype}")


class RowBroadcastMask(NamedTuple):
    """A mask for the rows of x kept at its own size: x's row r uses rows[(r // inner) % len(rows)]."""
    rows: Any      # (M, L) bool, contiguous
    inner: int


def broadcast_mask_rows(mask):
    """The RowBroadcastMask of `mask`, a bool array broadcast to x's N-D shape (a view with stride 0
    along broadcast axes), or None when its own axes do not form one block ([1..., own..., 1...]
    over x's leading axes) and it has to be expanded after all.  Ops call this when the backend
    module has it."""
    lead, strides = mask.shape[:-1], mask.strides[:-1]
    own = [axis for axis, (n, stride) in enumerate(zip(lead, strides)) if n > 1 and stride != 0]
    block = range(own[0], own[-1] + 1) if own else range(0)
    if any(lead[axis] > 1 and axis not in own for axis in block):
        return None
    inner = math.prod(lead[block.stop:]) if own else 1
    index = tuple(slice(None) if axis in block else 0 for axis in range(len(lead)))
    rows = xp_of(mask).array(mask[index], dtype=bool, order="C").reshape(-1, mask.shape[-1])   # a small copy
    return RowBroadcastMask(rows, inner)


def softmax_forward(x, mask):
    """y = softmax(x) over the last axis; mask True = excluded (probability 0): an (R, L) array
    like x, or a RowBroadcastMask."""
    xp = xp_of(x)
    if isinstance(mask, RowBroadcastMask):
        excluded, inner = mask
        check_softmax_args(x, None)
        if excluded.ndim != 2 or excluded.shape[1] != x.shape[1] or x.shape[0] % (excluded.shape[0] * inner):
            raise ValueError(f"softmax: a mask of {tuple(excluded.shape)} rows repeated every {inner} rows "
                             f"does not tile x of shape {tuple(x.shape)}")
    else:
        check_softmax_args(x, mask)
        excluded, inner = mask, 1
    kernel = _for_dtype(x.dtype, _softmax_forward_f32, _softmax_forward_f64)
    y = xp.empty_like(x)
    if x.size == 0:
        return y
    has_mask = excluded is not None
    # without a mask the kernel never reads `excluded`; it still needs an array to bind
    excluded = xp.ascontiguousarray(excluded, dtype=bool) if has_mask else xp.zeros((1, 1), dtype=bool)
    kernel[_row_grid(x.shape[0])](kernel_arg(x), kernel_arg(excluded), has_mask, inner, kernel_arg(y))
    return y


def _rows_into_new(kernels, *arrays):
    """A new array like the last of `arrays`, written by the kernel of their dtype (kernels: the
    float32 and float64 ones) with one block per row: kernel(*arrays, out)."""
    like = arrays[-1]
    out = xp_of(like).empty_like(like)
    if like.size:
        _for_dtype(like.dtype, *kernels)[_row_grid(like.shape[0])](*(kernel_arg(a) for a in arrays), kernel_arg(out))
    return out


def softmax_backward(dy, y):
    """dx = y * (dy - sum(dy * y, axis=-1, keepdims=True))."""
    check_softmax_grad_args(dy, y)
    return _rows_into_new((_softmax_backward_f32, _softmax_backward_f64), dy, y)


def log_softmax_forward(x):
    """y = (x - m) - log(sum(exp(x - m), axis=-1)), m = the row max."""
    check_log_softmax_args(x)
    return _rows_into_new((_log_softmax_forward_f32, _log_softmax_forward_f64), x)


def log_softmax_backward(dy, y):
    """dx = dy - exp(y) * sum(dy, axis=-1, keepdims=True)."""
    check_log_softmax_grad_args(dy, y)
    return _rows_into_new((_log_softmax_backward_f32, _log_softmax_backward_f64), dy, y)
