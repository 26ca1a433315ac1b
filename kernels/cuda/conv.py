"""Convolution and pooling, CUDA backend (NCHW): im2col / col2im kernels around cuBLAS GEMMs.

A kernel tap (i, j) of output pixel (ho, wo) reads the zero-padded input at

    h = ho*sh + i*dh - ph,   w = wo*sw + j*dw - pw      (unpadded coordinates)

so convolution is

    cols[n, (c, i, j), (ho, wo)] = x[n, c, h, w]   (0 outside)        im2col kernel
    y[n] = W2 @ cols[n] + b,          W2 = w reshaped to (F, C*kh*kw)  xp.matmul
    dW2 = sum_n dy[n] @ cols[n]^T,    dcols[n] = W2^T @ dy[n]          xp.matmul
    dx[n, c, h, w] = sum of dcols over the taps that read (h, w)       col2im kernel

col2im gathers (each thread owns one dx element and visits the taps that read it) rather
than scatters, so it needs no atomics and sums in a fixed order.  Pooling kernels have one
thread per output (forward) or per input (average-pool backward); max-pool backward scatters
dy to the recorded argmax with atomic adds, because windows may share a maximum.

Shape checks and their messages come from the reference, as in every backend.
"""
import math

from numba import cuda

from tinygrad_seq.device import xp_of
from tinygrad_seq.kernels.reference.conv import (check_grad_shape, check_maxpool_grad_args,
                                                 conv2d_output_size, pool2d_output_size)

from ._launch import launch


def _pair(p):
    return tuple(int(v) for v in p)


# ----------------------------------------------------------------------------- window arithmetic
# Device functions, which NVVM inlines into each kernel; one thread per flat index k.

@cuda.jit(device=True, cache=True)
def _unravel(k, C, H, W):
    """(n, c, h, w) of flat index k into an (N, C, H, W) array."""
    return k // (C * H * W), (k // (H * W)) % C, (k // W) % H, k % W


@cuda.jit(device=True, cache=True)
def _window_taps(o, stride, pad, kernel, size):
    """Output o's window along one axis: its first input index `start` and the range [lo, hi)
    of taps whose input index start + tap lies inside [0, size); the others read padding."""
    start = o * stride - pad
    return start, max(0, -start), min(kernel, size - start)


@cuda.jit(device=True, cache=True)
def _reading_output(pos, pad, offset, stride, n_out):
    """The output index o whose tap at `offset` (= tap * dilation) reads input position pos
    along one axis (o*stride + offset - pad = pos), or -1 when no output's does."""
    at = pos + pad - offset
    if at < 0 or at % stride != 0 or at // stride >= n_out:
        return -1
    return at // stride


# ----------------------------------------------------------------------------- kernels

@cuda.jit(cache=True)
def _im2col(x, cols, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo):
    """cols (N, C*kh*kw, Ho*Wo)[n, (c, i, j), (ho, wo)] = x[n, c, ho*sh + i*dh - ph, wo*sw + j*dw - pw]."""
    N, C, H, W = x.shape
    for k in range(cuda.grid(1), cols.size, cuda.gridsize(1)):
        n, tap, ho, wo = _unravel(k, C * kh * kw, Ho, Wo)
        c, i, j = tap // (kh * kw), (tap // kw) % kh, tap % kw
        h = ho * sh + i * dh - ph
        w = wo * sw + j * dw - pw
        if 0 <= h < H and 0 <= w < W:
            cols[n, tap, ho * Wo + wo] = x[n, c, h, w]
        else:
            cols[n, tap, ho * Wo + wo] = cols.dtype.type(0)


@cuda.jit(cache=True)
def _col2im(dcols, dx, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo):
    """dx[n, c, h, w] = sum of dcols[n, (c, i, j), (ho, wo)] over every tap with
    ho*sh + i*dh = h + ph and wo*sw + j*dw = w + pw."""
    N, C, H, W = dx.shape
    for k in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        n, c, h, w = _unravel(k, C, H, W)
        total = dx.dtype.type(0)
        for i in range(kh):
            ho = _reading_output(h, ph, i * dh, sh, Ho)
            for j in range(kw):
                wo = _reading_output(w, pw, j * dw, sw, Wo)
                if ho >= 0 and wo >= 0:
                    total += dcols[n, (c * kh + i) * kw + j, ho * Wo + wo]
        dx[n, c, h, w] = total


@cuda.jit(cache=True)
def _maxpool_forward(x, y, argmax, kh, kw, sh, sw, ph, pw):
    """y = max over the window's in-bounds taps (padding is -inf, so never the max), argmax
    = its flat index h*W + w; the first maximum in (i, j) order wins, and NaN wins as in NumPy."""
    N, C, H, W = x.shape
    Ho, Wo = y.shape[2], y.shape[3]
    for k in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        n, c, ho, wo = _unravel(k, C, Ho, Wo)
        top, i_lo, i_hi = _window_taps(ho, sh, ph, kh, H)
        left, j_lo, j_hi = _window_taps(wo, sw, pw, kw, W)
        best = x[n, c, top + i_lo, left + j_lo]     # the first real tap: padding never wins
        best_at = (top + i_lo) * W + left + j_lo
        for i in range(i_lo, i_hi):
            for j in range(j_lo, j_hi):
                v = x[n, c, top + i, left + j]
                if v > best or (v != v and best == best):
                    best = v
                    best_at = (top + i) * W + left + j
        y[n, c, ho, wo] = best
        argmax[n, c, ho, wo] = best_at


@cuda.jit(cache=True)
def _maxpool_backward(dy, argmax, dx_planes):
    """dx_planes (N*C, H*W)[plane, argmax] += dy: atomics, since windows can share a maximum."""
    N, C, Ho, Wo = dy.shape
    for k in range(cuda.grid(1), dy.size, cuda.gridsize(1)):
        n, c, ho, wo = _unravel(k, C, Ho, Wo)
        cuda.atomic.add(dx_planes, (n * C + c, argmax[n, c, ho, wo]), dy[n, c, ho, wo])


@cuda.jit(cache=True)
def _avgpool_forward(x, y, kh, kw, sh, sw, ph, pw):
    """y = (sum of the window's in-bounds taps) / (kh*kw): zero padding counts in the mean."""
    N, C, H, W = x.shape
    Ho, Wo = y.shape[2], y.shape[3]
    area = y.dtype.type(kh * kw)
    for k in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        n, c, ho, wo = _unravel(k, C, Ho, Wo)
        top, i_lo, i_hi = _window_taps(ho, sh, ph, kh, H)
        left, j_lo, j_hi = _window_taps(wo, sw, pw, kw, W)
        total = y.dtype.type(0)
        for i in range(i_lo, i_hi):
            for j in range(j_lo, j_hi):
                total += x[n, c, top + i, left + j]
        y[n, c, ho, wo] = total / area


@cuda.jit(cache=True)
def _avgpool_backward(dy, dx, kh, kw, sh, sw, ph, pw):
    """dx[n, c, h, w] = sum over the windows that cover (h, w) of dy / (kh*kw)."""
    N, C, H, W = dx.shape
    _, _, Ho, Wo = dy.shape
    window = dx.dtype.type(kh * kw)
    for k in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        n, c, h, w = _unravel(k, C, H, W)
        total = dx.dtype.type(0)
        for i in range(kh):
            ho = _reading_output(h, ph, i, sh, Ho)
            for j in range(kw):
                wo = _reading_output(w, pw, j, sw, Wo)
                if ho >= 0 and wo >= 0:
                    total += dy[n, c, ho, wo] / window
        dx[n, c, h, w] = total


# ----------------------------------------------------------------------------- conv2d

def _cols(x, w_shape, stride, padding, dilation, Ho, Wo):
    """im2col of x: (N, C*kh*kw, Ho*Wo)."""
    xp = xp_of(x)
    N, C = x.shape[:2]
    kh, kw = w_shape[2:]
    cols = xp.empty((N, C * kh * kw, Ho * Wo), dtype=x.dtype)
    launch(_im2col, cols.size, x, cols, kh, kw, *stride, *padding, *dilation, Ho, Wo)
    return cols


def conv2d_forward(x, w, b, stride, padding, dilation):
    """y[n, f] = sum_{c,i,j} w[f, c, i, j] * xpad[n, c, ho*sh + i*dh, wo*sw + j*dw] + b[f]."""
    xp = xp_of(x)
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    Ho, Wo = conv2d_output_size(x.shape, w.shape, stride, padding, dilation)
    N, F = x.shape[0], w.shape[0]
    if b is not None and tuple(b.shape) != (F,):
        raise ValueError(f"conv2d: b must have shape ({F},), got {tuple(b.shape)}")
    cols = _cols(x, w.shape, stride, padding, dilation, Ho, Wo)
    y = xp.matmul(w.reshape(F, -1), cols)                   # (N, F, Ho*Wo), batched GEMM
    if b is not None:
        y += b[:, None]
    return y.reshape(N, F, Ho, Wo)


def conv2d_backward(dy, x, w, stride, padding, dilation, need_bias):
    """(dx, dw, db) of conv2d_forward given dy (N, F, Ho, Wo); db is None unless need_bias."""
    xp = xp_of(x)
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    Ho, Wo = conv2d_output_size(x.shape, w.shape, stride, padding, dilation)
    N, F = x.shape[0], w.shape[0]
    kh, kw = w.shape[2:]
    check_grad_shape("conv2d", dy, (N, F, Ho, Wo))
    cols = _cols(x, w.shape, stride, padding, dilation, Ho, Wo)
    dy2 = dy.reshape(N, F, Ho * Wo)
    # sum_n dy[n] @ cols[n]^T: one batched GEMM, then a sum over the batch
    dw = xp.matmul(dy2, cols.transpose(0, 2, 1)).sum(axis=0).reshape(w.shape)
    dcols = xp.matmul(w.reshape(F, -1).T, dy2)              # (N, C*kh*kw, Ho*Wo)
    dx = xp.empty(x.shape, dtype=x.dtype)
    launch(_col2im, dx.size, dcols, dx, kh, kw, *stride, *padding, *dilation, Ho, Wo)
    db = dy.sum(axis=(0, 2, 3)) if need_bias else None
    return dx, dw, db


# ----------------------------------------------------------------------------- max pooling

def maxpool2d_forward(x, kernel_size, stride, padding):
    """(y, argmax): window maxima (-inf padding) and their flat h*W+w index in the input plane."""
    xp = xp_of(x)
    kernel_size, stride, padding = _pair(kernel_size), _pair(stride), _pair(padding)
    Ho, Wo = pool2d_output_size("maxpool2d", x.shape, kernel_size, stride, padding)
    N, C = x.shape[:2]
    y = xp.empty((N, C, Ho, Wo), dtype=x.dtype)
    argmax = xp.empty((N, C, Ho, Wo), dtype=xp.int64)
    launch(_maxpool_forward, y.size, x, y, argmax, *kernel_size, *stride, *padding)
    return y, argmax


def maxpool2d_backward(dy, argmax, x_shape):
    """dx[n, c].flat[argmax[n, c, ho, wo]] += dy[n, c, ho, wo]."""
    xp = xp_of(dy)
    check_maxpool_grad_args(dy, argmax, x_shape)
    N, C, H, W = x_shape
    dx = xp.zeros((N, C, H, W), dtype=dy.dtype)
    launch(_maxpool_backward, dy.size, dy, xp.ascontiguousarray(argmax, dtype=xp.int64),
           dx.reshape(N * C, H * W))
    return dx


# ----------------------------------------------------------------------------- average pooling

def avgpool2d_forward(x, kernel_size, stride, padding):
    """Window means, zero padding counted (count_include_pad=True)."""
    xp = xp_of(x)
    kernel_size, stride, padding = _pair(kernel_size), _pair(stride), _pair(padding)
    Ho, Wo = pool2d_output_size("avgpool2d", x.shape, kernel_size, stride, padding)
    y = xp.empty((x.shape[0], x.shape[1], Ho, Wo), dtype=x.dtype)
    launch(_avgpool_forward, y.size, x, y, *kernel_size, *stride, *padding)
    return y


def avgpool2d_backward(dy, x_shape, kernel_size, stride, padding):
    """Each in-bounds tap of a window gets dy / (kh*kw)."""
    xp = xp_of(dy)
    kernel_size, stride, padding = _pair(kernel_size), _pair(stride), _pair(padding)
    Ho, Wo = pool2d_output_size("avgpool2d", x_shape, kernel_size, stride, padding)
    check_grad_shape("avgpool2d", dy, (x_shape[0], x_shape[1], Ho, Wo))
    dx = xp.empty(tuple(x_shape), dtype=dy.dtype)
    launch(_avgpool_backward, dx.size, dy, dx, *kernel_size, *stride, *padding)
    return dx
