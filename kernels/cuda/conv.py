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


# ----------------------------------------------------------------------------- kernels

@cuda.jit(cache=True)
def _im2col(x, cols, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo):
    """cols (N, C*kh*kw, Ho*Wo)[n, (c, i, j), (ho, wo)] = x[n, c, ho*sh + i*dh - ph, wo*sw + j*dw - pw]."""
    N, C, H, W = x.shape
    n_taps = C * kh * kw
    n_out = Ho * Wo
    for k in range(cuda.grid(1), N * n_taps * n_out, cuda.gridsize(1)):
        n = k // (n_taps * n_out)
        tap = (k // n_out) % n_taps
        pixel = k % n_out
        c = tap // (kh * kw)
        i = (tap // kw) % kh
        j = tap % kw
        h = (pixel // Wo) * sh + i * dh - ph
        w = (pixel % Wo) * sw + j * dw - pw
        if 0 <= h < H and 0 <= w < W:
            cols[n, tap, pixel] = x[n, c, h, w]
        else:
            cols[n, tap, pixel] = cols.dtype.type(0)


@cuda.jit(cache=True)
def _col2im(dcols, dx, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo):
    """dx[n, c, h, w] = sum of dcols[n, (c, i, j), (ho, wo)] over every tap with
    ho*sh + i*dh = h + ph and wo*sw + j*dw = w + pw."""
    N, C, H, W = dx.shape
    for k in range(cuda.grid(1), N * C * H * W, cuda.gridsize(1)):
        n = k // (C * H * W)
        c = (k // (H * W)) % C
        h = (k // W) % H
        w = k % W
        total = dx.dtype.type(0)
        for i in range(kh):
            row = h + ph - i * dh          # = ho*sh if tap row i reads h
            if row < 0 or row % sh != 0 or row // sh >= Ho:
                continue
            for j in range(kw):
                col = w + pw - j * dw
                if col < 0 or col % sw != 0 or col // sw >= Wo:
                    continue
                total += dcols[n, (c * kh + i) * kw + j, (row // sh) * Wo + col // sw]
        dx[n, c, h, w] = total


@cuda.jit(cache=True)
def _maxpool_forward(x, y, argmax, kh, kw, sh, sw, ph, pw):
    """y = max over the window's in-bounds taps (padding is -inf, so never the max), argmax
    = its flat index h*W + w; the first maximum in (i, j) order wins, and NaN wins as in NumPy."""
    N, C, H, W = x.shape
    Ho, Wo = y.shape[2], y.shape[3]
    for k in range(cuda.grid(1), N * C * Ho * Wo, cuda.gridsize(1)):
        n = k // (C * Ho * Wo)
        c = (k // (Ho * Wo)) % C
        ho = (k // Wo) % Ho
        wo = k % Wo
        best = y.dtype.type(-math.inf)
        best_at = -1
        for i in range(kh):
            h = ho * sh + i - ph
            if h < 0 or h >= H:
                continue
            for j in range(kw):
                w = wo * sw + j - pw
                if w < 0 or w >= W:
                    continue
                v = x[n, c, h, w]
                if best_at < 0 or v > best or (v != v and best == best):
                    best = v
                    best_at = h * W + w
        y[n, c, ho, wo] = best
        argmax[n, c, ho, wo] = best_at


@cuda.jit(cache=True)
def _maxpool_backward(dy, argmax, dx_planes):
    """dx_planes (N*C, H*W)[plane, argmax] += dy: atomics, since windows can share a maximum."""
    N, C, Ho, Wo = dy.shape
    for k in range(cuda.grid(1), N * C * Ho * Wo, cuda.gridsize(1)):
        plane = k // (Ho * Wo)
        ho = (k // Wo) % Ho
        wo = k % Wo
        n = plane // C
        c = plane % C
        cuda.atomic.add(dx_planes, (plane, argmax[n, c, ho, wo]), dy[n, c, ho, wo])


@cuda.jit(cache=True)
def _avgpool_forward(x, y, kh, kw, sh, sw, ph, pw):
    """y = (sum of the window's in-bounds taps) / (kh*kw): zero padding counts in the mean."""
    N, C, H, W = x.shape
    Ho, Wo = y.shape[2], y.shape[3]
    for k in range(cuda.grid(1), N * C * Ho * Wo, cuda.gridsize(1)):
        n = k // (C * Ho * Wo)
        c = (k // (Ho * Wo)) % C
        ho = (k // Wo) % Ho
        wo = k % Wo
        total = y.dtype.type(0)
        for i in range(kh):
            h = ho * sh + i - ph
            if 0 <= h < H:
                for j in range(kw):
                    w = wo * sw + j - pw
                    if 0 <= w < W:
                        total += x[n, c, h, w]
        y[n, c, ho, wo] = total / y.dtype.type(kh * kw)


@cuda.jit(cache=True)
def _avgpool_backward(dy, dx, kh, kw, sh, sw, ph, pw):
    """dx[n, c, h, w] = sum over the windows that cover (h, w) of dy / (kh*kw)."""
    N, C, H, W = dx.shape
    Ho, Wo = dy.shape[2], dy.shape[3]
    window = dx.dtype.type(kh * kw)
    for k in range(cuda.grid(1), N * C * H * W, cuda.gridsize(1)):
        n = k // (C * H * W)
        c = (k // (H * W)) % C
        h = (k // W) % H
        w = k % W
        total = dx.dtype.type(0)
        for i in range(kh):
            row = h + ph - i               # = ho*sh if window row i is h
            if row < 0 or row % sh != 0 or row // sh >= Ho:
                continue
            for j in range(kw):
                col = w + pw - j
                if col < 0 or col % sw != 0 or col // sw >= Wo:
                    continue
                total += dy[n, c, row // sh, col // sw] / window
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
