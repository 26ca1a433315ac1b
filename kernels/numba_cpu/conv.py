"""Convolution and pooling kernels compiled with Numba (contract: reference/conv.py).

Convolution is im2col + one GEMM for the whole batch: the columns

    cols[(c, i, j), (n, ho, wo)] = xpad[n, c, ho*sh + i*dh, wo*sw + j*dw]     (C*kh*kw, N*Ho*Wo)

are gathered by a compiled loop (in parallel over images) and multiplied by W2 = w as
(F, C*kh*kw) with BLAS (`np.dot`), outside any parallel loop.  BLAS threads a large GEMM
well on its own; N small GEMMs called from N parallel threads instead each start BLAS's
own threads on top of Numba's, and on a small machine that oversubscription made the cnn
workload's second layer 25x slower.  Backward is two more single GEMMs:

    dW2 = dY @ cols^T,   dcols = W2^T @ dY,   dx = col2im(dcols)        dY: (F, N*Ho*Wo)

The (F, N, P) <-> (N, F, P) transposing copies carry the bias add and the bias gradient.
Zero padding is never materialised: for each tap the range of output pixels that read real
input is computed once ([lo, hi) below) and the rest are zeros.

Pooling is a direct loop over each (n, c) plane, in parallel over planes.
Argument checks and their messages come from the reference module.
"""
import numpy as np
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
def _tap_window(row, plane_shape, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo):
    """Row (c, i, j) of the columns: channel c, and its tap reads input (ho*sh + row_offset,
    wo*sw + col_offset) for output (ho, wo), inside the plane only for outputs [h_lo, h_hi) x
    [w_lo, w_hi).  Returns (c, row_offset, col_offset, h_lo, h_hi, w_lo, w_hi)."""
    H, W = plane_shape[1], plane_shape[2]
    c, tap = row // (kh * kw), row % (kh * kw)
    row_offset = (tap // kw) * dh - ph
    col_offset = (tap % kw) * dw - pw
    h_lo, h_hi = _inside(Ho, sh, row_offset, H)
    w_lo, w_hi = _inside(Wo, sw, col_offset, W)
    return c, row_offset, col_offset, h_lo, h_hi, w_lo, w_hi


@njit(cache=True)
def _im2col_image(xn, cols, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo):
    """cols[(c,i,j), ho*Wo + wo] = xn[c, ho*sh + i*dh - ph, wo*sw + j*dw - pw], 0 outside."""
    for row in range(cols.shape[0]):
        c, row_offset, col_offset, h_lo, h_hi, w_lo, w_hi = _tap_window(row, xn.shape, kh, kw, sh, sw, ph, pw,
                                                                        dh, dw, Ho, Wo)
        out = cols[row]
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
    for row in range(dcols.shape[0]):
        c, row_offset, col_offset, h_lo, h_hi, w_lo, w_hi = _tap_window(row, dxn.shape, kh, kw, sh, sw, ph, pw,
                                                                        dh, dw, Ho, Wo)
        for ho in range(h_lo, h_hi):
            dst = dxn[c, ho * sh + row_offset]
            src = dcols[row, ho * Wo: (ho + 1) * Wo]
            for wo in range(w_lo, w_hi):
                dst[wo * sw + col_offset] += src[wo]


@njit(cache=True, parallel=True)
def _im2col_batch(x, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo):
    N, C = x.shape[0], x.shape[1]
    P = Ho * Wo
    cols = np.empty((C * kh * kw, N * P), dtype=x.dtype)
    for n in prange(N):
        _im2col_image(x[n], cols[:, n * P:(n + 1) * P], kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo)
    return cols


@njit(cache=True, parallel=True)
def _col2im_batch(dcols, x_shape, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, dtype):
    P = Ho * Wo
    dx = np.zeros(x_shape, dtype=dtype)
    for n in prange(x_shape[0]):
        _col2im_image(dcols[:, n * P:(n + 1) * P], dx[n], kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo)
    return dx


@njit(cache=True)
def _conv2d_forward(x, w2, b, has_bias, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo):
    N = x.shape[0]
    F = w2.shape[0]
    P = Ho * Wo
    out = np.dot(w2, _im2col_batch(x, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo))   # (F, N*P)
    return _gemm_to_nchw(out, b, has_bias, N, F, P)


@njit(cache=True, parallel=True)
def _gemm_to_nchw(out, b, has_bias, N, F, P):
    y = np.empty((N, F, P), dtype=out.dtype)
    for n in prange(N):
        for f in range(F):
            bias = b[f] if has_bias else out.dtype.type(0)
            row = out[f, n * P:(n + 1) * P]
            for p in range(P):
                y[n, f, p] = row[p] + bias
    return y


@njit(cache=True, parallel=True)
def _nchw_to_gemm(dy3):
    """dY (F, N*P) from dy (N, F, P), and db[f] = the sum of dy[:, f]."""
    N, F, P = dy3.shape
    out = np.empty((F, N * P), dtype=dy3.dtype)
    db = np.zeros(F, dtype=dy3.dtype)
    for f in prange(F):
        total = dy3.dtype.type(0)
        for n in range(N):
            for p in range(P):
                v = dy3[n, f, p]
                out[f, n * P + p] = v
                total += v
        db[f] = total
    return out, db


@njit(cache=True)
def _conv2d_backward(dy, x, w2, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo):
    N = x.shape[0]
    F = w2.shape[0]
    P = Ho * Wo
    dY, db = _nchw_to_gemm(dy.reshape(N, F, P))
    cols = _im2col_batch(x, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo)
    dw2 = np.dot(dY, cols.T)
    dcols = np.dot(np.ascontiguousarray(w2.T), dY)
    dx = _col2im_batch(dcols, x.shape, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, x.dtype)
    return dx, dw2, db


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
    dx, dw, db = _conv2d_backward(np.ascontiguousarray(dy), x, w.reshape(F, -1), kh, kw, *stride, *padding,
                                  *dilation, Ho, Wo)
    return dx, dw.reshape(w.shape), (db if need_bias else None)


# ----------------------------------------------------------------------------- pooling

@njit(cache=True)
def _window_taps(o, stride, pad, kernel, size):
    """Output o's window along one axis: its first input index `start` and the range [lo, hi)
    of its taps that lie inside the input (start + lo .. start + hi - 1); the rest is padding."""
    start = o * stride - pad
    return start, max(0, -start), min(kernel, size - start)


@njit(cache=True)
def _window(H, W, ho, wo, kh, kw, sh, sw, ph, pw):
    """The real taps of window (ho, wo) of an (H, W) plane, padding left out: rows
    [h_lo, h_hi) and columns [w_lo, w_hi) of the plane."""
    top, i_lo, i_hi = _window_taps(ho, sh, ph, kh, H)
    left, j_lo, j_hi = _window_taps(wo, sw, pw, kw, W)
    return top + i_lo, top + i_hi, left + j_lo, left + j_hi


@njit(cache=True)
def _window_max(plane, ho, wo, kh, kw, sh, sw, ph, pw):
    """(max, flat h*W + w index) of window (ho, wo) of one plane over its real taps, so padding
    never wins (as if it were -inf): strictly greater keeps the first maximum, and a NaN beats
    any number once."""
    h_lo, h_hi, w_lo, w_hi = _window(plane.shape[0], plane.shape[1], ho, wo, kh, kw, sh, sw, ph, pw)
    best_h, best_w = h_lo, w_lo
    best = plane[best_h, best_w]
    for h in range(h_lo, h_hi):
        for w in range(w_lo, w_hi):
            v = plane[h, w]
            if v > best or (v != v and best == best):
                best, best_h, best_w = v, h, w
    return best, best_h * plane.shape[1] + best_w


@njit(cache=True, parallel=True)
def _maxpool2d_forward(x, kh, kw, sh, sw, ph, pw, Ho, Wo):
    N, C, H, W = x.shape
    planes = x.reshape(N * C, H, W)
    y = np.empty((N * C, Ho, Wo), dtype=x.dtype)
    argmax = np.empty((N * C, Ho, Wo), dtype=np.int64)
    for p in prange(N * C):
        for ho in range(Ho):
            for wo in range(Wo):
                y[p, ho, wo], argmax[p, ho, wo] = _window_max(planes[p], ho, wo, kh, kw, sh, sw, ph, pw)
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
            for wo in range(Wo):   # zero padding adds nothing to the sum
                h_lo, h_hi, w_lo, w_hi = _window(H, W, ho, wo, kh, kw, sh, sw, ph, pw)
                y[p, ho, wo] = planes[p, h_lo:h_hi, w_lo:w_hi].sum() * scale
    return y.reshape(N, C, Ho, Wo)


@njit(cache=True, parallel=True)
def _avgpool2d_backward(dy, H, W, kh, kw, sh, sw, ph, pw, scale):
    N, C, Ho, Wo = dy.shape
    dx = np.zeros((N * C, H, W), dtype=dy.dtype)
    dy_planes = dy.reshape(N * C, Ho, Wo)
    for p in prange(N * C):
        for ho in range(Ho):
            for wo in range(Wo):   # every real tap of the window receives dy / (kh*kw)
                h_lo, h_hi, w_lo, w_hi = _window(H, W, ho, wo, kh, kw, sh, sw, ph, pw)
                dx[p, h_lo:h_hi, w_lo:w_hi] += dy_planes[p, ho, wo] * scale
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
