"""conv2d (im2col + one BLAS GEMM) and max/avg pooling, forward and backward, NCHW.

Contract and notation: kernels/API.md and kernels/reference/conv.py. The Python wrappers in
conv.py check shapes (with the reference's messages) before calling in here.

Layout choice: the whole batch is unrolled into one column matrix
    cols[(c, i, j), (n, ho, wo)] = xpad[n, c, ho*sh + i*dh, wo*sw + j*dw]
so that forward and both backward products are single large GEMMs (which BLAS threads
well) instead of N small ones; the price is one transposing copy of y / dy between the
(F, N, P) GEMM layout and NCHW, which also carries the bias add and the bias gradient.

Threads: each OpenMP loop is one region per call over the whole batch, on every core
(cnn step 37 -> 31 ms on 2 cores against the serial loops of before).
"""
include "_common.pxi"

import numpy as np
from cython.parallel cimport prange
from libc.stdint cimport int64_t
from libc.string cimport memcpy, memset

cdef inline Py_ssize_t ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """ceil(a / b) for b > 0 (C division truncates toward zero, i.e. ceil for a < 0)."""
    return (a + b - 1) // b if a >= 0 else -((-a) // b)


cdef inline void valid_outputs(Py_ssize_t n_out, Py_ssize_t n_in, Py_ssize_t stride,
                               Py_ssize_t offset, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """[lo, hi): the outputs o whose input index o*stride + offset lies inside [0, n_in),
    so the loops below never test for padding element by element."""
    lo[0] = max(<Py_ssize_t>0, ceil_div(-offset, stride))
    hi[0] = min(n_out, ceil_div(n_in - offset, stride))
    if hi[0] < lo[0]:
        hi[0] = lo[0]


# ----------------------------------------------------------------------------- im2col / col2im

cdef void im2col_plane(const floating* x, floating* cols, Py_ssize_t row0, Py_ssize_t ld,
                       Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo,
                       Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                       Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw) noexcept nogil:
    """Gather one input plane x (H, W) into kh*kw rows of cols starting at row row0
    (row stride ld); cols already points at this image's (ho, wo) block."""
    cdef Py_ssize_t i, j, ho, wo, ho_lo, ho_hi, wo_lo, wo_hi, w0
    cdef floating* out
    cdef floating* dst
    cdef const floating* src
    for i in range(kh):
        valid_outputs(Ho, H, sh, i * dh - ph, &ho_lo, &ho_hi)
        for j in range(kw):
            valid_outputs(Wo, W, sw, j * dw - pw, &wo_lo, &wo_hi)
            out = cols + (row0 + i * kw + j) * ld
            w0 = j * dw - pw
            memset(out, 0, ho_lo * Wo * sizeof(floating))
            for ho in range(ho_lo, ho_hi):
                src = x + (ho * sh + i * dh - ph) * W + w0
                dst = out + ho * Wo
                for wo in range(wo_lo):
                    dst[wo] = 0
                if sw == 1:   # a plain copy, which GCC vectorises (rows are often too short for memcpy)
                    for wo in range(wo_lo, wo_hi):
                        dst[wo] = src[wo]
                else:
                    for wo in range(wo_lo, wo_hi):
                        dst[wo] = src[wo * sw]
                for wo in range(wo_hi, Wo):
                    dst[wo] = 0
            memset(out + ho_hi * Wo, 0, (Ho - ho_hi) * Wo * sizeof(floating))


cdef void col2im_plane(const floating* dcols, floating* dx, Py_ssize_t row0, Py_ssize_t ld,
                       Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo,
                       Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                       Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw) noexcept nogil:
    """The adjoint of im2col_plane: add the kh*kw rows back onto the plane dx (H, W)."""
    cdef Py_ssize_t i, j, ho, wo, ho_lo, ho_hi, wo_lo, wo_hi, h, w0
    cdef const floating* src
    for i in range(kh):
        valid_outputs(Ho, H, sh, i * dh - ph, &ho_lo, &ho_hi)
        for j in range(kw):
            valid_outputs(Wo, W, sw, j * dw - pw, &wo_lo, &wo_hi)
            src = dcols + (row0 + i * kw + j) * ld
            w0 = j * dw - pw
            for ho in range(ho_lo, ho_hi):
                h = ho * sh + i * dh - ph
                for wo in range(wo_lo, wo_hi):
                    dx[h * W + wo * sw + w0] += src[ho * Wo + wo]


cdef void im2col(const floating* x, floating* cols, Py_ssize_t N, Py_ssize_t C,
                 Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo,
                 Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                 Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw) noexcept nogil:
    """cols (C*kh*kw, N*Ho*Wo) from x (N, C, H, W); one (image, channel) plane per task."""
    cdef Py_ssize_t nc, n, c, P = Ho * Wo
    for nc in prange(N * C, schedule="static", num_threads=_threads):
        n = nc // C
        c = nc % C
        im2col_plane(x + nc * H * W, cols + n * P, c * kh * kw, N * P,
                     H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw)


# ----------------------------------------------------------------------------- conv2d

cdef inline void copy_add(const floating* src, floating* dst, Py_ssize_t n,
                          floating bias) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        dst[i] = src[i] + bias


def conv2d_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                   const floating[::1] b, stride, padding, dilation, Py_ssize_t Ho, Py_ssize_t Wo):
    """y (N, F, Ho, Wo) = w (F, C*kh*kw) @ cols + b."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = w.shape[0], kh = w.shape[2], kw = w.shape[3], K = C * kh * kw
    cdef Py_ssize_t sh = stride[0], sw = stride[1], ph = padding[0], pw = padding[1]
    cdef Py_ssize_t dh = dilation[0], dw = dilation[1], P = Ho * Wo, n, f, p
    cdef bint has_bias = b is not None
    dtype = np.float32 if floating is float else np.float64
    y_out = np.empty((N, F, Ho, Wo), dtype=dtype)
    cols_buf = np.empty((K, N * P), dtype=dtype)
    fnp_buf = np.empty((F, N * P), dtype=dtype)
    cdef floating[:, :, :, ::1] y = y_out
    cdef floating[:, ::1] cols = cols_buf, ynp = fnp_buf
    if y_out.size == 0:
        return y_out
    if K == 0:
        ynp[:, :] = 0
    with nogil:
        if K > 0:
            im2col(&x[0, 0, 0, 0], &cols[0, 0], N, C, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw)
            gemm(False, False, <int>F, <int>(N * P), <int>K, 1, &w[0, 0, 0, 0], <int>K,
                 &cols[0, 0], <int>(N * P), 0, &ynp[0, 0], <int>(N * P))
        # (F, N, P) -> (N, F, P), adding the bias on the way
        for n in prange(N, schedule="static", num_threads=_threads):
            for f in range(F):
                copy_add(&ynp[f, n * P], &y[n, f, 0, 0], P, b[f] if has_bias else 0)
    return y_out


def conv2d_backward(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] x,
                    const floating[:, :, :, ::1] w, stride, padding, dilation, bint need_bias):
    """dw = dY @ cols^T,  dcols = w^T @ dY (then col2im),  db = sum of dy over n, ho, wo."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = w.shape[0], kh = w.shape[2], kw = w.shape[3], K = C * kh * kw
    cdef Py_ssize_t Ho = dy.shape[2], Wo = dy.shape[3], P = Ho * Wo
    cdef Py_ssize_t sh = stride[0], sw = stride[1], ph = padding[0], pw = padding[1]
    cdef Py_ssize_t dh = dilation[0], dw_ = dilation[1], n, f, p, nc, c
    cdef floating total
    dtype = np.float32 if floating is float else np.float64
    dx_out = np.zeros((N, C, H, W), dtype=dtype)
    dw_out = np.zeros((F, C, kh, kw), dtype=dtype)
    db_out = np.zeros(F, dtype=dtype) if need_bias else None
    if N * P == 0 or F == 0 or K == 0:
        return dx_out, dw_out, db_out
    cols_buf = np.empty((K, N * P), dtype=dtype)
    fnp_buf = np.empty((F, N * P), dtype=dtype)
    cdef floating[:, :, :, ::1] dx = dx_out, dwv = dw_out
    cdef floating[:, ::1] cols = cols_buf, dynp = fnp_buf
    cdef floating[::1] db
    if need_bias:
        db = db_out
    with nogil:
        # dy (N, F, P) -> dY (F, N, P)
        for n in prange(N, schedule="static", num_threads=_threads):
            for f in range(F):
                memcpy(&dynp[f, n * P], &dy[n, f, 0, 0], P * sizeof(floating))
        if need_bias:
            for f in prange(F, schedule="static", num_threads=_threads):
                total = 0
                for p in range(N * P):
                    total = total + dynp[f, p]
                db[f] = total
        im2col(&x[0, 0, 0, 0], &cols[0, 0], N, C, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw_)
        gemm(False, True, <int>F, <int>K, <int>(N * P), 1, &dynp[0, 0], <int>(N * P),
             &cols[0, 0], <int>(N * P), 0, &dwv[0, 0, 0, 0], <int>K)
        # dcols (K, N*P) = w^T @ dY, written over cols (no longer needed)
        gemm(True, False, <int>K, <int>(N * P), <int>F, 1, &w[0, 0, 0, 0], <int>K,
             &dynp[0, 0], <int>(N * P), 0, &cols[0, 0], <int>(N * P))
        for nc in prange(N * C, schedule="static", num_threads=_threads):
            n = nc // C
            c = nc % C
            col2im_plane(&cols[0, n * P], &dx[n, c, 0, 0], c * kh * kw, N * P,
                         H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw_)
    return dx_out, dw_out, db_out


# ----------------------------------------------------------------------------- max pooling

cdef void maxpool_plane(const floating* x, floating* y, int64_t* arg,
                        Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo,
                        Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                        Py_ssize_t ph, Py_ssize_t pw) noexcept nogil:
    """Max over each window's in-bounds taps (the -inf padding never wins); first max wins,
    and a NaN wins like numpy's argmax (and PyTorch) so NaNs propagate.

    One output row at a time, tap by tap across the whole row, so the inner loop runs over
    wo and vectorises (a loop over each small window would not)."""
    cdef Py_ssize_t ho, wo, h, j, h_lo, h_hi, wo_lo, wo_hi, idx
    cdef floating v, m
    cdef bint take
    cdef floating* y_row
    cdef int64_t* arg_row
    for ho in range(Ho):
        h_lo = max(ho * sh - ph, <Py_ssize_t>0)
        h_hi = min(ho * sh - ph + kh, H)
        y_row = y + ho * Wo
        arg_row = arg + ho * Wo
        for wo in range(Wo):   # start from each window's first in-bounds tap
            idx = h_lo * W + max(wo * sw - pw, <Py_ssize_t>0)
            y_row[wo] = x[idx]
            arg_row[wo] = idx
        for h in range(h_lo, h_hi):
            for j in range(kw):
                valid_outputs(Wo, W, sw, j - pw, &wo_lo, &wo_hi)
                for wo in range(wo_lo, wo_hi):
                    idx = h * W + wo * sw + j - pw
                    v = x[idx]
                    m = y_row[wo]
                    take = (v > m) | ((v != v) & (m == m))
                    y_row[wo] = v if take else m
                    arg_row[wo] = idx if take else arg_row[wo]


def maxpool2d_forward(const floating[:, :, :, ::1] x, kernel_size, stride, padding,
                      Py_ssize_t Ho, Py_ssize_t Wo):
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3], nc
    cdef Py_ssize_t kh = kernel_size[0], kw = kernel_size[1], sh = stride[0], sw = stride[1]
    cdef Py_ssize_t ph = padding[0], pw = padding[1]
    y_out = np.empty((N, C, Ho, Wo), dtype=np.float32 if floating is float else np.float64)
    arg_out = np.empty((N, C, Ho, Wo), dtype=np.int64)
    cdef floating[:, :, :, ::1] y = y_out
    cdef int64_t[:, :, :, ::1] arg = arg_out
    if y_out.size == 0:
        return y_out, arg_out
    with nogil:
        for nc in prange(N * C, schedule="static", num_threads=_threads):
            maxpool_plane(&x[0, 0, 0, 0] + nc * H * W, &y[0, 0, 0, 0] + nc * Ho * Wo,
                          &arg[0, 0, 0, 0] + nc * Ho * Wo, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw)
    return y_out, arg_out


def maxpool2d_backward(const floating[:, :, :, ::1] dy, const int64_t[:, :, :, ::1] argmax,
                       Py_ssize_t H, Py_ssize_t W):
    """dx[n, c].flat[argmax] += dy: windows may share a maximum, so it adds."""
    cdef Py_ssize_t N = dy.shape[0], C = dy.shape[1], P = dy.shape[2] * dy.shape[3], nc, p
    cdef int64_t a
    cdef int bad = 0
    dx_out = np.zeros((N, C, H, W), dtype=np.float32 if floating is float else np.float64)
    if N * C * P == 0:
        return dx_out
    cdef floating[:, :, :, ::1] dx_view = dx_out
    cdef floating* dx = &dx_view[0, 0, 0, 0]
    cdef const floating* g = &dy[0, 0, 0, 0]
    cdef const int64_t* arg = &argmax[0, 0, 0, 0]
    with nogil:
        for nc in prange(N * C, schedule="static", num_threads=_threads):
            for p in range(nc * P, (nc + 1) * P):
                a = arg[p]
                if a < 0 or a >= H * W:
                    bad += 1   # a reduction: reported below, never written outside the plane
                else:
                    dx[nc * H * W + a] += g[p]
    if bad:
        raise ValueError(f"maxpool2d: argmax holds an index outside the {H}x{W} input plane")
    return dx_out


# ----------------------------------------------------------------------------- average pooling

cdef void avgpool_plane(const floating* x, floating* y, Py_ssize_t H, Py_ssize_t W,
                        Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t kh, Py_ssize_t kw,
                        Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw) noexcept nogil:
    """Window sums of the in-bounds taps over kh*kw, tap by tap across each output row."""
    cdef Py_ssize_t ho, wo, h, j, wo_lo, wo_hi
    cdef floating area = kh * kw
    cdef floating* y_row
    cdef const floating* x_row
    for ho in range(Ho):
        y_row = y + ho * Wo
        for wo in range(Wo):
            y_row[wo] = 0
        for h in range(max(ho * sh - ph, <Py_ssize_t>0), min(ho * sh - ph + kh, H)):
            for j in range(kw):
                valid_outputs(Wo, W, sw, j - pw, &wo_lo, &wo_hi)
                x_row = x + h * W + j - pw
                for wo in range(wo_lo, wo_hi):
                    y_row[wo] += x_row[wo * sw]
        for wo in range(Wo):
            y_row[wo] = y_row[wo] / area


cdef void avgpool_plane_backward(const floating* dy, floating* dx, Py_ssize_t H, Py_ssize_t W,
                                 Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t kh, Py_ssize_t kw,
                                 Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
                                 Py_ssize_t pw) noexcept nogil:
    """The adjoint of avgpool_plane: every in-bounds tap receives dy / (kh*kw)."""
    cdef Py_ssize_t ho, wo, h, j, wo_lo, wo_hi
    cdef floating area = kh * kw
    cdef const floating* dy_row
    cdef floating* dx_row
    for ho in range(Ho):
        dy_row = dy + ho * Wo
        for h in range(max(ho * sh - ph, <Py_ssize_t>0), min(ho * sh - ph + kh, H)):
            for j in range(kw):
                valid_outputs(Wo, W, sw, j - pw, &wo_lo, &wo_hi)
                dx_row = dx + h * W + j - pw
                for wo in range(wo_lo, wo_hi):
                    dx_row[wo * sw] += dy_row[wo] / area


def avgpool2d_forward(const floating[:, :, :, ::1] x, kernel_size, stride, padding,
                      Py_ssize_t Ho, Py_ssize_t Wo):
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3], nc
    cdef Py_ssize_t kh = kernel_size[0], kw = kernel_size[1], sh = stride[0], sw = stride[1]
    cdef Py_ssize_t ph = padding[0], pw = padding[1]
    y_out = np.empty((N, C, Ho, Wo), dtype=np.float32 if floating is float else np.float64)
    if y_out.size == 0:
        return y_out
    cdef floating[:, :, :, ::1] y = y_out
    with nogil:
        for nc in prange(N * C, schedule="static", num_threads=_threads):
            avgpool_plane(&x[0, 0, 0, 0] + nc * H * W, &y[0, 0, 0, 0] + nc * Ho * Wo,
                          H, W, Ho, Wo, kh, kw, sh, sw, ph, pw)
    return y_out


def avgpool2d_backward(const floating[:, :, :, ::1] dy, Py_ssize_t H, Py_ssize_t W,
                       kernel_size, stride, padding):
    cdef Py_ssize_t N = dy.shape[0], C = dy.shape[1], Ho = dy.shape[2], Wo = dy.shape[3], nc
    cdef Py_ssize_t kh = kernel_size[0], kw = kernel_size[1], sh = stride[0], sw = stride[1]
    cdef Py_ssize_t ph = padding[0], pw = padding[1]
    dx_out = np.zeros((N, C, H, W), dtype=np.float32 if floating is float else np.float64)
    if N * C * Ho * Wo == 0 or dx_out.size == 0:
        return dx_out
    cdef floating[:, :, :, ::1] dx = dx_out
    with nogil:
        for nc in prange(N * C, schedule="static", num_threads=_threads):
            avgpool_plane_backward(&dy[0, 0, 0, 0] + nc * Ho * Wo, &dx[0, 0, 0, 0] + nc * H * W,
                                   H, W, Ho, Wo, kh, kw, sh, sw, ph, pw)
    return dx_out
