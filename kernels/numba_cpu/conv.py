"""Convolution and pooling kernels compiled with Numba (contract: reference/conv.py).

Convolution is im2col + GEMM one image at a time: image n's columns

    cols[(c, i, j), (ho, wo)] = xpad[n, c, ho*sh + i*dh, wo*sw + j*dw]     (C*kh*kw, Ho*Wo)

are gathered by a compiled loop and multiplied by W2 = w as (F, C*kh*kw) with BLAS
(`np.dot`), straight into y[n].  Per image, because the columns of one image (for the
cnn workload's second layer 144 x 196 floats) stay in the core's cache between the gather
and the GEMM, while the columns of a whole batch (7 MB) would go out to memory and back;
the batch is spread over the cores with `prange` and each BLAS call is small enough to run
on the calling thread.  Backward reuses the same loop:

    dW2 += dy[n] @ cols^T,   dcols = W2^T @ dy[n],   dx[n] = col2im(dcols)

with one dW2 accumulator per thread, summed at the end.  Zero padding is never
materialised: for each tap the range of output pixels that read real input is computed
once ([lo, hi) below) and the rest are zeros.

Pooling is a direct loop over each (n, c) plane, in parallel over planes.
Argument checks and their messages come from the reference module.
"""
import numpy as np
import numba
from numba import njit, prange

from tinygrad_seq.kernels.reference.conv import (check_grad_shape, check_maxpool_grad_args,
                                                 conv2d_output_size, pool2d_output_size)


@njit(cache=True)
def _inside(n_out, stride, offset, n_in):
    """[lo, hi): the output positions o whose input o*stride + offset lies in [0, n_in)."""
    lo = max(0, -((offset) // stride))          # ceil(-offset / stride)
    hi = min(n_out, -((offset - n_in) // stride))  # ceil((n_in - offset) / stride)
    return lo, max(lo, hi)


@njit(cache=True)
def _im2col_image(xn, cols, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo):
    """cols[(c,i,j), ho*Wo + wo] = xn[c, ho*sh + i*dh - ph, wo*sw + j*dw - pw], 0 outside."""
    C, H, W = xn.shape
    for c in range(C):
        for i in range(kh):
            row_offset = i * dh - ph
            h_lo, h_hi = _inside(Ho, sh, row_offset, H)
            for j in range(kw):
                col_offset = j * dw - pw
                w_lo, w_hi = _inside(Wo, sw, col_offset, W)
                out = cols[(c * kh + i) * kw + j]
                out[:h_lo * Wo] = 0
                out[h_hi * Wo:] = 0
                for ho in range(h_lo, h_hi):
                    src = xn[c, ho * sh + row_offset]
                    dst = out[ho * Wo: (ho + 1) * Wo]
                    dst[:w_lo] = 0
                    for wo in range(w_lo, w_hi):
                        dst[wo] = src[wo * sw + col_offset]
                    dst[w_hi:] = 0


@njit(cache=True)
def _col2im_image(dcols, dxn, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo):
    """The adjoint of _im2col_image: dxn[c, h, w] += every dcols entry that read (c, h, w)."""
    C, H, W = dxn.shape
    for c in range(C):
        for i in range(kh):
            row_offset = i * dh - ph
            h_lo, h_hi = _inside(Ho, sh, row_offset, H)
            for j in range(kw):
                col_offset = j * dw - pw
                w_lo, w_hi = _inside(Wo, sw, col_offset, W)
                tap = dcols[(c * kh + i) * kw + j]
                for ho in range(h_lo, h_hi):
                    dst = dxn[c, ho * sh + row_offset]
                    src = tap[ho * Wo: (ho + 1) * Wo]
                    for wo in range(w_lo, w_hi):
                        dst[wo * sw + col_offset] += src[wo]


@njit(cache=True, parallel=True)
def _conv2d_forward(x, w2, b, has_bias, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo):
    N = x.shape[0]
    F, K = w2.shape
    y = np.empty((N, F, Ho * Wo), dtype=x.dtype)
    for n in prange(N):
        cols = np.empty((K, Ho * Wo), dtype=x.dtype)
        _im2col_image(x[n], cols, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo)
        np.dot(w2, cols, y[n])
        if has_bias:
            for f in range(F):
                y[n, f] += b[f]
    return y


@njit(cache=True, parallel=True)
def _conv2d_backward(dy, x, w2, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, threads):
    N = x.shape[0]
    F, K = w2.shape
    P = Ho * Wo
    dy3 = dy.reshape(N, F, P)
    w2t = np.ascontiguousarray(w2.T)
    dx = np.zeros_like(x)
    # contiguous runs of images, one per thread, each with its own dw and db accumulators
    parts = max(1, min(N, threads))
    dw_parts = np.zeros((parts, F, K), dtype=x.dtype)
    db_parts = np.zeros((parts, F), dtype=x.dtype)
    for part in prange(parts):
        cols = np.empty((K, P), dtype=x.dtype)
        dcols = np.empty((K, P), dtype=x.dtype)
        for n in range(part * N // parts, (part + 1) * N // parts):
            _im2col_image(x[n], cols, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo)
            dw_parts[part] += np.dot(dy3[n], cols.T)
            np.dot(w2t, dy3[n], dcols)
            _col2im_image(dcols, dx[n], kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo)
            for f in range(F):
                db_parts[part, f] += dy3[n, f].sum()
    return dx, dw_parts.sum(axis=0), db_parts.sum(axis=0)


def conv2d_forward(x, w, b, stride, padding, dilation):
    """y[n, f] = sum_{c,i,j} w[f, c, i, j] * xpad[n, c, ho*sh + i*dh, wo*sw + j*dw] + b[f]."""
    Ho, Wo = conv2d_output_size(x.shape, w.shape, stride, padding, dilation)
    F, _, kh, kw = w.shape
    if b is not None and tuple(b.shape) != (F,):
        raise ValueError(f"conv2d: b must have shape ({F},), got {tuple(b.shape)}")
    bias = b if b is not None else np.zeros(F, dtype=x.dtype)
    y = _conv2d_forward(x, w.reshape(F, -1), bias, b is not None, kh, kw, *stride, *padding, *dilation, Ho, Wo)
    return y.reshape(x.shape[0], F, Ho, Wo)


def conv2d_backward(dy, x, w, stride, padding, dilation, need_bias):
    """(dx, dw, db) of conv2d_forward; db is None unless need_bias."""
    Ho, Wo = conv2d_output_size(x.shape, w.shape, stride, padding, dilation)
    F, _, kh, kw = w.shape
    check_grad_shape("conv2d", dy, (x.shape[0], F, Ho, Wo))
    dx, dw, db = _conv2d_backward(dy, x, w.reshape(F, -1), kh, kw, *stride, *padding, *dilation, Ho, Wo,
                                  numba.get_num_threads())
    return dx, dw.reshape(w.shape), (db if need_bias else None)


# ----------------------------------------------------------------------------- pooling

@njit(cache=True, parallel=True)
def _maxpool2d_forward(x, kh, kw, sh, sw, ph, pw, Ho, Wo):
    N, C, H, W = x.shape
    planes = x.reshape(N * C, H, W)
    y = np.empty((N * C, Ho, Wo), dtype=x.dtype)
    argmax = np.empty((N * C, Ho, Wo), dtype=np.int64)
    for p in prange(N * C):
        for ho in range(Ho):
            top = ho * sh - ph
            i_lo, i_hi = max(0, -top), min(kh, H - top)
            for wo in range(Wo):
                left = wo * sw - pw
                j_lo, j_hi = max(0, -left), min(kw, W - left)
                # start from the first real tap, so padding never wins (as if it were -inf)
                best_h, best_w = top + i_lo, left + j_lo
                best = planes[p, best_h, best_w]
                for i in range(i_lo, i_hi):
                    for j in range(j_lo, j_hi):
                        v = planes[p, top + i, left + j]
                        # strictly greater keeps the first maximum; a NaN beats any number once
                        if v > best or (v != v and best == best):
                            best, best_h, best_w = v, top + i, left + j
                y[p, ho, wo] = best
                argmax[p, ho, wo] = best_h * W + best_w
    return y.reshape(N, C, Ho, Wo), argmax.reshape(N, C, Ho, Wo)


@njit(cache=True, parallel=True)
def _maxpool2d_backward(dy, argmax, H, W):
    N, C, Ho, Wo = dy.shape
    dy_planes = dy.reshape(N * C, Ho * Wo)
    where = argmax.reshape(N * C, Ho * Wo)
    dx = np.zeros((N * C, H * W), dtype=dy.dtype)
    for p in prange(N * C):
        for o in range(Ho * Wo):
            dx[p, where[p, o]] += dy_planes[p, o]
    return dx.reshape(N, C, H, W)


@njit(cache=True, parallel=True)
def _avgpool2d_forward(x, kh, kw, sh, sw, ph, pw, Ho, Wo, scale):
    N, C, H, W = x.shape
    planes = x.reshape(N * C, H, W)
    y = np.empty((N * C, Ho, Wo), dtype=x.dtype)
    for p in prange(N * C):
        for ho in range(Ho):
            top = ho * sh - ph
            i_lo, i_hi = max(0, -top), min(kh, H - top)
            for wo in range(Wo):
                left = wo * sw - pw
                j_lo, j_hi = max(0, -left), min(kw, W - left)
                total = scale * 0  # a zero of x's dtype
                for i in range(i_lo, i_hi):
                    for j in range(j_lo, j_hi):
                        total += planes[p, top + i, left + j]
                y[p, ho, wo] = total * scale
    return y.reshape(N, C, Ho, Wo)


@njit(cache=True, parallel=True)
def _avgpool2d_backward(dy, H, W, kh, kw, sh, sw, ph, pw, scale):
    N, C, Ho, Wo = dy.shape
    dy_planes = dy.reshape(N * C, Ho, Wo)
    dx = np.zeros((N * C, H, W), dtype=dy.dtype)
    for p in prange(N * C):
        for ho in range(Ho):
            top = ho * sh - ph
            i_lo, i_hi = max(0, -top), min(kh, H - top)
            for wo in range(Wo):
                left = wo * sw - pw
                j_lo, j_hi = max(0, -left), min(kw, W - left)
                share = dy_planes[p, ho, wo] * scale
                for i in range(i_lo, i_hi):
                    for j in range(j_lo, j_hi):
                        dx[p, top + i, left + j] += share
    return dx.reshape(N, C, H, W)


def maxpool2d_forward(x, kernel_size, stride, padding):
    """(y, argmax): the max of each window (padding never wins) and its flat h*W + w index."""
    Ho, Wo = pool2d_output_size("maxpool2d", x.shape, kernel_size, stride, padding)
    return _maxpool2d_forward(x, *kernel_size, *stride, *padding, Ho, Wo)


def maxpool2d_backward(dy, argmax, x_shape):
    """dx[n, c, argmax] += dy  (windows may share a maximum)."""
    check_maxpool_grad_args(dy, argmax, x_shape)
    return _maxpool2d_backward(dy, argmax, x_shape[2], x_shape[3])


def avgpool2d_forward(x, kernel_size, stride, padding):
    """The mean of each window, zero padding counted (count_include_pad=True)."""
    Ho, Wo = pool2d_output_size("avgpool2d", x.shape, kernel_size, stride, padding)
    scale = x.dtype.type(1.0 / (kernel_size[0] * kernel_size[1]))  # typed, so float32 stays float32
    return _avgpool2d_forward(x, *kernel_size, *stride, *padding, Ho, Wo, scale)


def avgpool2d_backward(dy, x_shape, kernel_size, stride, padding):
    """Every input pixel of a window gets dy / (kh*kw)."""
    Ho, Wo = pool2d_output_size("avgpool2d", x_shape, kernel_size, stride, padding)
    check_grad_shape("avgpool2d", dy, (x_shape[0], x_shape[1], Ho, Wo))
    scale = dy.dtype.type(1.0 / (kernel_size[0] * kernel_size[1]))
    return _avgpool2d_backward(dy, x_shape[2], x_shape[3], *kernel_size, *stride, *padding, scale)
