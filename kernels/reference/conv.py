"""Convolution and pooling kernels, NCHW, written once against `xp` (NumPy or CuPy).

This module states the contract every other backend copies, including the exact
ValueError messages: the shape checks below (`conv2d_output_size`,
`pool2d_output_size`) are plain Python on shapes, and the compiled backends call them
rather than repeating them.

Notation: x (N, C, H, W) input, w (F, C, kh, kw) filters, stride (sh, sw), symmetric zero
padding (ph, pw), dilation (dh, dw).  A kernel tap (i, j) of output pixel (ho, wo) reads
the padded input at

    h = ho*sh + i*dh,  w = wo*sw + j*dw,

so the output has

    Ho = floor((H + 2*ph - dh*(kh-1) - 1) / sh) + 1       (the same for Wo)

pixels per column; with no dilation that is the familiar floor((n + 2p - f)/s) + 1.

Convolution is im2col + GEMM: gather every tap into

    cols[n, (c, i, j), (ho, wo)] = xpad[n, c, ho*sh + i*dh, wo*sw + j*dw]

and then y[n] = W2 @ cols[n] with W2 = w reshaped to (F, C*kh*kw).  The backward pass is
the same GEMM read the other two ways,

    dW2 = sum_n dy[n] @ cols[n]^T,   dcols[n] = W2^T @ dy[n],   db = sum_{n,ho,wo} dy,

and col2im scatters dcols back onto the padded input (taps that overlap add up).
The gather is a loop over the kh*kw taps, each a strided slice of the whole batch, so it
runs as a handful of large array operations on either NumPy or CuPy.
"""
from tinygrad_seq.device import xp_of


# ----------------------------------------------------------------------------- shape checks

def _pair_checks(op, **pairs):
    """stride/dilation/kernel_size must be >= 1, padding >= 0 (each an (int, int))."""
    for name, pair in pairs.items():
        lowest = 0 if name == "padding" else 1
        if len(pair) != 2 or min(pair) < lowest:
            raise ValueError(f"{op}: {name} must be a pair of ints >= {lowest}, got {tuple(pair)}")


def conv2d_output_size(x_shape, w_shape, stride, padding, dilation):
    """(Ho, Wo) of conv2d, after checking that the arguments make sense."""
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ValueError(f"conv2d: x must be (N, C, H, W) and w (F, C, kh, kw), "
                         f"got shapes {tuple(x_shape)} and {tuple(w_shape)}")
    _pair_checks("conv2d", stride=stride, padding=padding, dilation=dilation)
    _, C, H, W = x_shape
    _, Cw, kh, kw = w_shape
    if C != Cw:
        raise ValueError(f"conv2d: x has {C} channels but w expects {Cw} (w has shape {tuple(w_shape)})")
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    padded = (H + 2 * ph, W + 2 * pw)
    if kh < 1 or kw < 1 or span[0] > padded[0] or span[1] > padded[1]:
        raise ValueError(f"conv2d: kernel size (dilated) {span} is larger than the padded input {padded}")
    return (padded[0] - span[0]) // sh + 1, (padded[1] - span[1]) // sw + 1


def pool2d_output_size(op, x_shape, kernel_size, stride, padding):
    """(Ho, Wo) of maxpool2d/avgpool2d (`op` names it in messages), after the checks."""
    if len(x_shape) != 4:
        raise ValueError(f"{op}: x must be (N, C, H, W), got shape {tuple(x_shape)}")
    _pair_checks(op, kernel_size=kernel_size, stride=stride, padding=padding)
    _, _, H, W = x_shape
    if H == 0 or W == 0:  # every window would lie in the padding: no input value to pool
        raise ValueError(f"{op}: input of shape {tuple(x_shape)} has no rows or columns to pool; H and W must be >= 1")
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    if 2 * ph > kh or 2 * pw > kw:
        raise ValueError(f"{op}: padding {tuple(padding)} must be at most half the kernel size {tuple(kernel_size)}")
    padded = (H + 2 * ph, W + 2 * pw)
    if kh > padded[0] or kw > padded[1]:
        raise ValueError(f"{op}: kernel size {tuple(kernel_size)} is larger than the padded input {padded}")
    return (padded[0] - kh) // sh + 1, (padded[1] - kw) // sw + 1


def check_grad_shape(op, dy, expected):
    if tuple(dy.shape) != tuple(expected):
        raise ValueError(f"{op}: dy has shape {tuple(dy.shape)} but the output has shape {tuple(expected)}")


def check_maxpool_grad_args(dy, argmax, x_shape):
    if len(x_shape) != 4 or tuple(argmax.shape) != tuple(dy.shape) or tuple(dy.shape[:2]) != tuple(x_shape[:2]):
        raise ValueError(f"maxpool2d: dy {tuple(dy.shape)} and argmax {tuple(argmax.shape)} "
                         f"do not match the input shape {tuple(x_shape)}")


# ----------------------------------------------------------------------------- helpers

def _pad(x, padding, value=0.0):
    """x with `padding` rows/columns of `value` on every side of H and W."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    xp = xp_of(x)
    N, C, H, W = x.shape
    out = xp.full((N, C, H + 2 * ph, W + 2 * pw), value, dtype=x.dtype)
    out[:, :, ph:ph + H, pw:pw + W] = x
    return out


def _tap(xpad, i, j, out_size, stride, dilation):
    """The (N, C, Ho, Wo) view of what kernel tap (i, j) reads at every output pixel."""
    (Ho, Wo), (sh, sw), (dh, dw) = out_size, stride, dilation
    return xpad[:, :, i * dh: i * dh + sh * (Ho - 1) + 1: sh,
                      j * dw: j * dw + sw * (Wo - 1) + 1: sw]


def _im2col(x, kernel_size, stride, padding, dilation, out_size):
    """cols (N, C, kh, kw, Ho, Wo): cols[n, c, i, j, ho, wo] = xpad[n, c, ho*sh+i*dh, wo*sw+j*dw]."""
    xp = xp_of(x)
    N, C = x.shape[:2]
    kh, kw = kernel_size
    xpad = _pad(x, padding)
    cols = xp.empty((N, C, kh, kw) + tuple(out_size), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = _tap(xpad, i, j, out_size, stride, dilation)
    return cols


def _col2im(cols, x_shape, stride, padding, dilation):
    """The adjoint of _im2col: add every tap of cols back where it was read from."""
    xp = xp_of(cols)
    N, C, kh, kw, Ho, Wo = cols.shape
    H, W = x_shape[2:]
    ph, pw = padding
    dxpad = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            # one tap's strided view holds each padded pixel at most once, so += is safe
            _tap(dxpad, i, j, (Ho, Wo), stride, dilation)[...] += cols[:, :, i, j]
    return dxpad[:, :, ph:ph + H, pw:pw + W]


# ----------------------------------------------------------------------------- conv2d

def conv2d_forward(x, w, b, stride, padding, dilation):
    """y[n, f] = sum_{c,i,j} w[f, c, i, j] * xpad[n, c, ho*sh + i*dh, wo*sw + j*dw] + b[f].

    x (N, C, H, W), w (F, C, kh, kw), b (F,) or None  ->  y (N, F, Ho, Wo).
    """
    Ho, Wo = conv2d_output_size(x.shape, w.shape, stride, padding, dilation)
    N = x.shape[0]
    F = w.shape[0]
    if b is not None and tuple(b.shape) != (F,):
        raise ValueError(f"conv2d: b must have shape ({F},), got {tuple(b.shape)}")
    cols = _im2col(x, w.shape[2:], stride, padding, dilation, (Ho, Wo)).reshape(N, -1, Ho * Wo)
    y = w.reshape(F, -1) @ cols                                   # (N, F, Ho*Wo)
    if b is not None:
        y += b[:, None]
    return y.reshape(N, F, Ho, Wo)


def conv2d_backward(dy, x, w, stride, padding, dilation, need_bias):
    """dx, dw, db of conv2d_forward given dy = dL/dy (N, F, Ho, Wo).

    dw[f, c, i, j] = sum_{n,ho,wo} dy[n, f, ho, wo] * xpad[n, c, ho*sh + i*dh, wo*sw + j*dw]
    dxpad[n, c, ho*sh + i*dh, wo*sw + j*dw] += sum_f w[f, c, i, j] * dy[n, f, ho, wo]
    db[f] = sum_{n,ho,wo} dy[n, f, ho, wo]   (None unless need_bias)
    """
    xp = xp_of(x)
    Ho, Wo = conv2d_output_size(x.shape, w.shape, stride, padding, dilation)
    N = x.shape[0]
    F, C, kh, kw = w.shape
    check_grad_shape("conv2d", dy, (N, F, Ho, Wo))
    cols = _im2col(x, (kh, kw), stride, padding, dilation, (Ho, Wo)).reshape(N, -1, Ho * Wo)
    dy2 = dy.reshape(N, F, Ho * Wo)
    dw = xp.tensordot(dy2, cols, axes=([0, 2], [0, 2])).reshape(w.shape)
    dcols = (w.reshape(F, -1).T @ dy2).reshape(N, C, kh, kw, Ho, Wo)
    dx = xp.ascontiguousarray(_col2im(dcols, x.shape, stride, padding, dilation))
    db = dy.sum(axis=(0, 2, 3)) if need_bias else None
    return dx, dw, db


# ----------------------------------------------------------------------------- max pooling

def maxpool2d_forward(x, kernel_size, stride, padding):
    """y[n, c, ho, wo] = max_{i,j} xpad[n, c, ho*sh + i, wo*sw + j], padding = -inf.

    Returns (y, argmax); argmax (N, C, Ho, Wo) int64 is the flat index h*W + w of the
    maximum in the unpadded (H, W) plane, the first one in (i, j) order on ties.
    """
    xp = xp_of(x)
    Ho, Wo = pool2d_output_size("maxpool2d", x.shape, kernel_size, stride, padding)
    N, C, H, W = x.shape
    kh, kw = kernel_size
    xpad = _pad(x, padding, value=-xp.inf)
    taps = xp.stack([_tap(xpad, i, j, (Ho, Wo), stride, (1, 1))
                     for i in range(kh) for j in range(kw)], axis=2)      # (N, C, kh*kw, Ho, Wo)
    k = taps.argmax(axis=2)                                               # first max wins
    y = xp.take_along_axis(taps, k[:, :, None], axis=2)[:, :, 0]
    # tap k = (i, j) of output (ho, wo) sits at unpadded (ho*sh - ph + i, wo*sw - pw + j)
    top = xp.arange(Ho).reshape(Ho, 1) * stride[0] - padding[0]
    left = xp.arange(Wo).reshape(1, Wo) * stride[1] - padding[1]
    rows, cols = top + k // kw, left + k % kw
    # a padding tap wins only when every real value of the window is -inf too; then the
    # window's first real tap (its top-left in-bounds corner) is the first maximum
    outside = (rows < 0) | (rows >= H) | (cols < 0) | (cols >= W)
    rows = xp.where(outside, xp.maximum(top, 0), rows)
    cols = xp.where(outside, xp.maximum(left, 0), cols)
    return xp.ascontiguousarray(y), (rows * W + cols).astype(xp.int64)


def maxpool2d_backward(dy, argmax, x_shape):
    """dx[n, c, argmax[n, c, ho, wo]] += dy[n, c, ho, wo]  (windows may share a maximum)."""
    xp = xp_of(dy)
    N, C, H, W = x_shape
    check_maxpool_grad_args(dy, argmax, x_shape)
    plane_start = (xp.arange(N * C, dtype=xp.int64) * (H * W)).reshape(N, C, 1, 1)
    # bincount sums repeated indices (in float64), which a fancy-indexed += would not
    dx = xp.bincount((argmax + plane_start).ravel(), weights=dy.ravel(), minlength=N * C * H * W)
    return dx.astype(dy.dtype).reshape(N, C, H, W)


# ----------------------------------------------------------------------------- average pooling

def avgpool2d_forward(x, kernel_size, stride, padding):
    """y[n, c, ho, wo] = sum_{i,j} xpad[n, c, ho*sh + i, wo*sw + j] / (kh*kw), zero padding counted."""
    xp = xp_of(x)
    Ho, Wo = pool2d_output_size("avgpool2d", x.shape, kernel_size, stride, padding)
    N, C = x.shape[:2]
    kh, kw = kernel_size
    xpad = _pad(x, padding)
    y = xp.zeros((N, C, Ho, Wo), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            y += _tap(xpad, i, j, (Ho, Wo), stride, (1, 1))
    return y / x.dtype.type(kh * kw)


def avgpool2d_backward(dy, x_shape, kernel_size, stride, padding):
    """dxpad[n, c, ho*sh + i, wo*sw + j] += dy[n, c, ho, wo] / (kh*kw) for every tap (i, j)."""
    xp = xp_of(dy)
    Ho, Wo = pool2d_output_size("avgpool2d", x_shape, kernel_size, stride, padding)
    N, C, H, W = x_shape
    check_grad_shape("avgpool2d", dy, (N, C, Ho, Wo))
    kh, kw = kernel_size
    ph, pw = padding
    share = dy / dy.dtype.type(kh * kw)
    dxpad = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=dy.dtype)
    for i in range(kh):
        for j in range(kw):
            _tap(dxpad, i, j, (Ho, Wo), stride, (1, 1))[...] += share
    return xp.ascontiguousarray(dxpad[:, :, ph:ph + H, pw:pw + W])
