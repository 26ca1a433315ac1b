"""Masked softmax over the last axis, written once against `xp` (NumPy or CuPy).

    y[r, j] = exp(x[r, j] - m_r) / sum_{k not masked} exp(x[r, k] - m_r)   for j not masked
    y[r, j] = 0                                                            for j masked

with m_r = max of the row's unmasked entries (subtracted so exp cannot overflow; it
cancels).  A row whose every entry is masked has nothing to normalise and gives zeros,
where the textbook formula (and PyTorch's masked_fill(-inf)) would give 0/0 = NaN.

Backward, with s_r = sum_j dy[r, j] y[r, j]:

    dx[r, j] = y[r, j] * (dy[r, j] - s_r)

Masked entries have y = 0, so they get no gradient, without needing the mask again.

Log-softmax (no mask), the first half of every cross-entropy loss:

    y[r, j] = (x[r, j] - m_r) - log sum_k exp(x[r, k] - m_r),   m_r = max_k x[r, k]
    dx[r, j] = dy[r, j] - exp(y[r, j]) * sum_k dy[r, k]

evaluated exactly so in IEEE arithmetic, which gives PyTorch's special values: a row holding a
NaN or a +inf is all NaN (inf - inf), a row of nothing but -inf is all NaN (-inf - -inf), a -inf
beside a finite maximum gives -inf, and a row of one finite entry gives 0.

The ValueError messages here are the ones every backend copies (`check_softmax_args`,
`check_log_softmax_args`).
"""
from tinygrad_seq.device import xp_of


def check_softmax_args(x, mask):
    if x.ndim != 2:
        raise ValueError(f"softmax: x must be 2-D (rows, L), got shape {tuple(x.shape)}")
    if mask is not None and tuple(mask.shape) != tuple(x.shape):
        raise ValueError(f"softmax: mask has shape {tuple(mask.shape)} but x has shape {tuple(x.shape)}")


def check_softmax_grad_args(dy, y):
    if y.ndim != 2 or tuple(dy.shape) != tuple(y.shape):
        raise ValueError(f"softmax: dy {tuple(dy.shape)} and y {tuple(y.shape)} must be 2-D of one shape")


def check_log_softmax_args(x):
    if x.ndim != 2:
        raise ValueError(f"log_softmax: x must be 2-D (rows, n), got shape {tuple(x.shape)}")


def check_log_softmax_grad_args(dy, y):
    if y.ndim != 2 or tuple(dy.shape) != tuple(y.shape):
        raise ValueError(f"log_softmax: dy {tuple(dy.shape)} and y {tuple(y.shape)} must be 2-D of one shape")


def softmax_forward(x, mask):
    """y = softmax(x) over the last axis, masked entries (mask True) excluded; see the module doc."""
    xp = xp_of(x)
    check_softmax_args(x, mask)
    if mask is not None:
        x = xp.where(mask, -xp.inf, x)
    row_max = x.max(axis=-1, keepdims=True)
    # a fully masked row has max -inf; any finite shift keeps its exp() at exactly 0
    row_max = xp.where(row_max == -xp.inf, 0, row_max).astype(x.dtype)
    e = xp.exp(x - row_max)
    total = e.sum(axis=-1, keepdims=True)
    return e / xp.where(total == 0, 1, total).astype(x.dtype)


def softmax_backward(dy, y):
    """dx = y * (dy - sum(dy * y, axis=-1, keepdims=True))."""
    check_softmax_grad_args(dy, y)
    return y * (dy - (dy * y).sum(axis=-1, keepdims=True))


def log_softmax_forward(x):
    """y = (x - m) - log(sum(exp(x - m), axis=-1)), m = the row max; see the module doc."""
    xp = xp_of(x)
    check_log_softmax_args(x)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))


def log_softmax_backward(dy, y):
    """dx = dy - exp(y) * sum(dy, axis=-1, keepdims=True)."""
    check_log_softmax_grad_args(dy, y)
    return dy - xp_of(y).exp(y) * dy.sum(axis=-1, keepdims=True)
