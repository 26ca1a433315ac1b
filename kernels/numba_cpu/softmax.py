"""Masked softmax and log-softmax over the last axis compiled with Numba (contract:
reference/softmax.py).

Per row, three vectorised passes:

    m = max of the unmasked x          (llvm.maxnum, which LLVM vectorises as a reduction;
                                        a plain `if v > m` loop stays scalar)
    e_j = exp(x_j - m), 0 where masked (the vectorisable exp of _fastmath)
    y = e / sum(e)                     (a fully masked row has sum 0 and stays all zeros)

Rows are independent and spread over the cores with `prange`.  Backward is
dx = y * (dy - sum(dy * y)) row by row; masked entries have y = 0 and so get no gradient
without looking at the mask.

Log-softmax, per row: m = max x (llvm.maxnum again), s = sum exp(x - m) (one vectorised pass,
no stores), y = (x - m) - log s, in the reference's order so that inf - inf gives the same NaN
rows; backward dx = dy - exp(y) * sum(dy).

Fast-math flags are per helper: the sums may be reassociated (so they vectorise); nothing
may assume away infinities, since -inf is how masking and the fully-masked case work.
"""
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from tinygrad_seq.kernels.numba_cpu._fastmath import exp
from tinygrad_seq.kernels.reference.softmax import (check_log_softmax_args, check_log_softmax_grad_args,
                                                    check_softmax_args, check_softmax_grad_args)

_SUM_FLAGS = {"reassoc", "contract", "nsz"}


@intrinsic
def _maxnum(typingctx, a, b):
    """max(a, b) as llvm.maxnum (a NaN operand loses), which LLVM can vectorise in a reduction."""
    if a != b or not isinstance(a, types.Float):
        return None

    def codegen(context, builder, signature, args):
        ty = args[0].type
        fn = builder.module.declare_intrinsic("llvm.maxnum", [ty], ir.FunctionType(ty, [ty, ty]))
        return builder.call(fn, args)

    return a(a, b), codegen


@njit(cache=True)
def _masked_row_max(xr, mr, has_mask, minus_inf):
    m = minus_inf
    for j in range(xr.shape[0]):
        m = _maxnum(m, minus_inf if has_mask and mr[j] else xr[j])
    return m


@njit(cache=True)
def _row_max(a, minus_inf):
    m = minus_inf
    for j in range(a.shape[0]):
        m = _maxnum(m, a[j])
    return m


@njit(cache=True, fastmath=_SUM_FLAGS)
def _row_sum_exp(a, shift, zero):
    """sum exp(a - shift); the max's own term is exp(0) = 1, so _fastmath's exp flushing
    arguments below -87 to 0 changes nothing."""
    total = zero
    for j in range(a.shape[0]):
        total += exp(a[j] - shift)
    return total


@njit(cache=True, fastmath=_SUM_FLAGS)
def _row_sum(a, zero):
    total = zero
    for j in range(a.shape[0]):
        total += a[j]
    return total


@njit(cache=True, fastmath=_SUM_FLAGS)
def _row_dot(a, b, zero):
    total = zero
    for j in range(a.shape[0]):
        total += a[j] * b[j]
    return total


@njit(cache=True, parallel=True, fastmath={"contract"})
def _softmax_forward(x, mask, has_mask, minus_inf, zero):
    # minus_inf and zero arrive typed as x's dtype, so float32 rows stay float32 throughout
    rows, L = x.shape
    y = np.empty_like(x)
    for r in prange(rows):
        xr, yr = x[r], y[r]
        mr = mask[r] if has_mask else mask[0]
        row_max = _masked_row_max(xr, mr, has_mask, minus_inf)
        if row_max == minus_inf:  # every entry masked: any finite shift keeps their exp at 0
            row_max = zero
        for j in range(L):
            e = exp(xr[j] - row_max)
            yr[j] = zero if has_mask and mr[j] else e
        total = _row_sum(yr, zero)
        if total != zero:  # (a NaN total makes the whole row NaN, as in the reference)
            inv = 1 / total
            for j in range(L):
                yr[j] *= inv
    return y


@njit(cache=True, parallel=True, fastmath=_SUM_FLAGS)
def _softmax_backward(dy, y, zero):
    rows, L = y.shape
    dx = np.empty_like(y)
    for r in prange(rows):
        dyr, yr, dxr = dy[r], y[r], dx[r]
        s = _row_dot(dyr, yr, zero)
        for j in range(L):
            dxr[j] = yr[j] * (dyr[j] - s)
    return dx


@njit(cache=True, parallel=True, fastmath={"contract"})
def _log_softmax_forward(x, minus_inf, zero):
    rows, n = x.shape
    y = np.empty_like(x)
    for r in prange(rows):
        xr, yr = x[r], y[r]
        row_max = _row_max(xr, minus_inf)
        log_total = np.log(_row_sum_exp(xr, row_max, zero))
        for j in range(n):
            yr[j] = (xr[j] - row_max) - log_total
    return y


@njit(cache=True, parallel=True, fastmath={"contract"})
def _log_softmax_backward(dy, y, zero):
    rows, n = y.shape
    dx = np.empty_like(y)
    for r in prange(rows):
        dyr, yr, dxr = dy[r], y[r], dx[r]
        total = _row_sum(dyr, zero)
        for j in range(n):
            dxr[j] = dyr[j] - exp(yr[j]) * total
    return dx


def softmax_forward(x, mask):
    """y = softmax(x) over the last axis; mask True excludes an entry; all-masked rows give 0."""
    check_softmax_args(x, mask)
    has_mask = mask is not None
    if not has_mask:
        mask = np.zeros((1, 1), dtype=np.bool_)  # never read
    t = x.dtype.type
    return _softmax_forward(x, mask, has_mask, t(-np.inf), t(0))


def softmax_backward(dy, y):
    """dx = y * (dy - sum(dy * y, axis=-1, keepdims=True))."""
    check_softmax_grad_args(dy, y)
    return _softmax_backward(dy, y, y.dtype.type(0))


def log_softmax_forward(x):
    """y = (x - m) - log(sum(exp(x - m), axis=-1)), m = the row max."""
    check_log_softmax_args(x)
    t = x.dtype.type
    return _log_softmax_forward(x, t(-np.inf), t(0))


def log_softmax_backward(dy, y):
    """dx = dy - exp(y) * sum(dy, axis=-1, keepdims=True)."""
    check_log_softmax_grad_args(dy, y)
    return _log_softmax_backward(dy, y, y.dtype.type(0))
