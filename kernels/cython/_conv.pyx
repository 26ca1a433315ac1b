"""conv2d (im2col + GEMM per image) and max/avg pooling, forward and backward, NCHW.

Contract and notation: kernels/API.md and kernels/reference/conv.py. The Python wrappers in
conv.py check shapes (with the reference's messages) before calling in here.

conv2d runs image by image on a team of threads (one per core), each image's work staying in
the core's cache: im2col of the image, cols (C*kh*kw, Ho*Wo), is packed into the panels of
_panel_gemm.h and multiplied by w (F, C*kh*kw) with the register-blocked GEMM; the backward
likewise forms dw += dy[n] @ cols^T (in a per-thread sum) and dcols = w^T @ dy[n], scattered
back by col2im.  One whole-batch im2col and BLAS GEMMs (the previous design) wrote and read a
batch-sized column matrix (7 MB for the cnn workload's second layer) and transposed y and dy
between layouts; per image the cnn step went 31 -> ~20 ms on 2 cores.

Threads: each OpenMP region is one per call over the whole batch, on every core.
"""
include "_common.pxi"
include "_panel_gemm.pxi"

import numpy as np
from cython.parallel cimport parallel, prange
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

cdef inline Py_ssize_t ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """ceil(a / b) for b > 0 (C division truncates toward zero, i.e. ceil for a < 0)."""
    return (a + b - 1) // b if a >= 0 else -((-a) // b)


cdef inline void valid_outputs(Py_ssize_t n_out, Py_ssize_t n_in, Py_ssize_t stride,
                               Py_ssize_t offset, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """[lo, hi): the outputs o whose input index o*stride + offset lies inside [0, n_in),
    so the loops below never test for padding element by element.  Always
    0 <= lo <= hi <= n_out: when the padding is wider than the window reaches, a tap may see
    no input at all (lo would pass n_out), and the callers size memsets and loops by lo."""
    lo[0] = min(n_out, max(<Py_ssize_t>0, ceil_div(-offset, stride)))
    hi[0] = min(n_out, ceil_div(n_in - offset, stride))
    if hi[0] < lo[0]:
        hi[0] = lo[0]


# ----------------------------------------------------------------------------- im2col / col2im

cdef inline void tap_window(Py_ssize_t tap, Py_ssize_t kw, Py_ssize_t H, Py_ssize_t W,
                            Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t sh, Py_ssize_t sw,
                            Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                            Py_ssize_t* h0, Py_ssize_t* w0, Py_ssize_t* ho_lo, Py_ssize_t* ho_hi,
                            Py_ssize_t* wo_lo, Py_ssize_t* wo_hi) noexcept nogil:
    """Kernel tap (i, j) = divmod(tap, kw) reads input (ho*sh + h0, wo*sw + w0) for output
    (ho, wo); the outputs [ho_lo, ho_hi) x [wo_lo, wo_hi) read inside the plane, the others
    read padding (im2col and col2im share this window arithmetic)."""
    h0[0] = (tap // kw) * dh - ph
    w0[0] = (tap % kw) * dw - pw
    valid_outputs(Ho, H, sh, h0[0], ho_lo, ho_hi)
    valid_outputs(Wo, W, sw, w0[0], wo_lo, wo_hi)


cdef void im2col_plane(const floating* x, floating* cols, Py_ssize_t row0, Py_ssize_t ld,
                       Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo,
                       Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                       Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw) noexcept nogil:
    """Gather one input plane x (H, W) into kh*kw rows of cols starting at row row0
    (row stride ld); cols already points at this image's (ho, wo) block."""
    cdef Py_ssize_t tap, ho, wo, h0, w0, ho_lo, ho_hi, wo_lo, wo_hi
    cdef floating* out
    cdef floating* dst
    cdef const floating* src
    for tap in range(kh * kw):
        tap_window(tap, kw, H, W, Ho, Wo, sh, sw, ph, pw, dh, dw, &h0, &w0, &ho_lo, &ho_hi, &wo_lo, &wo_hi)
        out = cols + (row0 + tap) * ld
        memset(out, 0, ho_lo * Wo * sizeof(floating))
        for ho in range(ho_lo, ho_hi):
            src = x + (ho * sh + h0) * W + w0
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
    cdef Py_ssize_t tap, ho, wo, h0, w0, ho_lo, ho_hi, wo_lo, wo_hi
    cdef const floating* src
    cdef floating* dst
    for tap in range(kh * kw):
        tap_window(tap, kw, H, W, Ho, Wo, sh, sw, ph, pw, dh, dw, &h0, &w0, &ho_lo, &ho_hi, &wo_lo, &wo_hi)
        for ho in range(ho_lo, ho_hi):
            src = dcols + (row0 + tap) * ld + ho * Wo
            dst = dx + (ho * sh + h0) * W + w0
            for wo in range(wo_lo, wo_hi):
                dst[wo * sw] += src[wo]


cdef void im2col_image(const floating* x, floating* cols, Py_ssize_t C,
                      Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo,
                      Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                      Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw) noexcept nogil:
    """cols (C*kh*kw, Ho*Wo) of one image x (C, H, W)."""
    cdef Py_ssize_t c
    for c in range(C):
        im2col_plane(x + c * H * W, cols, c * kh * kw, Ho * Wo,
                     H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw)


# ----------------------------------------------------------------------------- conv2d

cdef void conv_forward_share(const floating* x, const floating* w, const floating* b, floating* y,
                             Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t F,
                             Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t Ho, Py_ssize_t Wo,
                             Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                             Py_ssize_t dh, Py_ssize_t dw, int* failed) noexcept nogil:
    """This thread's images n = rank, rank + size, ...: y[n] = w @ cols(x[n]) + b."""
    cdef Py_ssize_t K = C * kh * kw, P = Ho * Wo, lanes = panel_width(x, P)
    cdef Py_ssize_t panels = (P + lanes - 1) // lanes, width = panels * lanes, n, f, p
    cdef floating* cols = scratch(x, K * P, failed)
    cdef floating* packed = scratch(x, K * width, failed)
    cdef floating* out = scratch(x, F * width, failed)
    cdef floating bias
    if cols != NULL and packed != NULL and out != NULL:
        n = team_rank()
        while n < N:
            im2col_image(x + n * C * H * W, cols, C, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw)
            pack_panels(cols, K, P, P, 1, packed, lanes)
            panel_gemm(F, K, panels, lanes, w, K, packed, out, width)
            for f in range(F):
                bias = b[f] if b != NULL else 0
                for p in range(P):
                    y[(n * F + f) * P + p] = out[f * width + p] + bias
            n += team_size()
    free(cols)
    free(packed)
    free(out)


def conv2d_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                   const floating[::1] b, stride, padding, dilation, Py_ssize_t Ho, Py_ssize_t Wo):
    """y (N, F, Ho, Wo) = w (F, C*kh*kw) @ cols + b, image by image."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = w.shape[0], kh = w.shape[2], kw = w.shape[3], K = C * kh * kw
    cdef Py_ssize_t sh = stride[0], sw = stride[1], ph = padding[0], pw = padding[1]
    cdef Py_ssize_t dh = dilation[0], dw = dilation[1]
    cdef const floating* bias = NULL
    cdef int failed = 0
    dtype = np.float32 if floating is float else np.float64
    if K == 0:   # no input channels: y is the bias alone
        y_out = np.zeros((N, F, Ho, Wo), dtype=dtype)
        return y_out + np.asarray(b).reshape(1, F, 1, 1) if b is not None else y_out
    y_out = np.empty((N, F, Ho, Wo), dtype=dtype)
    if y_out.size == 0:
        return y_out
    cdef floating[:, :, :, ::1] y = y_out
    if b is not None:
        bias = &b[0]
    with nogil, parallel(num_threads=_threads):
        conv_forward_share(&x[0, 0, 0, 0], &w[0, 0, 0, 0], bias, &y[0, 0, 0, 0], N, C, H, W, F,
                           kh, kw, Ho, Wo, sh, sw, ph, pw, dh, dw, &failed)
    if failed:
        raise MemoryError("conv2d_forward: out of memory for one image's columns")
    return y_out


cdef void conv_backward_share(const floating* dy, const floating* x, const floating* w,
                              floating* dx, floating* dw_parts, floating* db_parts,
                              Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t F,
                              Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t Ho, Py_ssize_t Wo,
                              Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                              Py_ssize_t dh, Py_ssize_t dw, int* failed) noexcept nogil:
    """This thread's images: dw_parts[rank] += dy[n] @ cols^T, db_parts[rank] += sums of
    dy[n] (when db_parts is not NULL), dx[n] = col2im(w^T @ dy[n])."""
    cdef Py_ssize_t K = C * kh * kw, P = Ho * Wo
    cdef Py_ssize_t lanes_k = panel_width(x, K), lanes_p = panel_width(x, P)
    cdef Py_ssize_t panels_k = (K + lanes_k - 1) // lanes_k, width_k = panels_k * lanes_k
    cdef Py_ssize_t panels_p = (P + lanes_p - 1) // lanes_p, width_p = panels_p * lanes_p
    cdef Py_ssize_t rank = team_rank(), n, f, k, p
    cdef floating* my_dw = dw_parts + rank * F * K
    cdef floating* cols = scratch(x, K * P, failed)
    cdef floating* cols_t = scratch(x, P * width_k, failed)     # cols^T, packed
    cdef floating* dw_n = scratch(x, F * width_k, failed)       # dy[n] @ cols^T
    cdef floating* w_t = scratch(x, K * F, failed)              # w^T, rows contiguous
    cdef floating* dy_packed = scratch(x, F * width_p, failed)
    cdef floating* dcols = scratch(x, K * width_p, failed)
    cdef const floating* dy_n
    if (cols != NULL and cols_t != NULL and dw_n != NULL and w_t != NULL and dy_packed != NULL
            and dcols != NULL):
        for f in range(F):
            for k in range(K):
                w_t[k * F + f] = w[f * K + k]
        n = rank
        while n < N:
            dy_n = dy + n * F * P
            im2col_image(x + n * C * H * W, cols, C, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw)
            pack_panels(cols, P, K, 1, P, cols_t, lanes_k)   # cols^T
            panel_gemm(F, P, panels_k, lanes_k, dy_n, P, cols_t, dw_n, width_k)
            for f in range(F):
                for k in range(K):
                    my_dw[f * K + k] += dw_n[f * width_k + k]
            if db_parts != NULL:
                for f in range(F):
                    db_parts[rank * F + f] += row_sum(dy_n + f * P, P)
            pack_panels(dy_n, F, P, P, 1, dy_packed, lanes_p)
            panel_gemm(K, F, panels_p, lanes_p, w_t, F, dy_packed, dcols, width_p)
            memset(dx + n * C * H * W, 0, C * H * W * sizeof(floating))   # dx is np.empty
            for k in range(C):
                col2im_plane(dcols, dx + (n * C + k) * H * W, k * kh * kw, width_p,
                             H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw)
            n += team_size()
    free(cols)
    free(cols_t)
    free(dw_n)
    free(w_t)
    free(dy_packed)
    free(dcols)


def conv2d_backward(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] x,
                    const floating[:, :, :, ::1] w, stride, padding, dilation, bint need_bias):
    """dw = sum_n dy[n] @ cols[n]^T,  dx[n] = col2im(w^T @ dy[n]),  db = sum of dy over n, ho, wo."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = w.shape[0], kh = w.shape[2], kw = w.shape[3], K = C * kh * kw
    cdef Py_ssize_t Ho = dy.shape[2], Wo = dy.shape[3], P = Ho * Wo
    cdef Py_ssize_t sh = stride[0], sw = stride[1], ph = padding[0], pw = padding[1]
    cdef Py_ssize_t dh = dilation[0], dw = dilation[1]
    cdef int failed = 0, threads = _threads
    dtype = np.float32 if floating is float else np.float64
    if N * P == 0 or F == 0 or K == 0:
        return (np.zeros((N, C, H, W), dtype=dtype), np.zeros((F, C, kh, kw), dtype=dtype),
                np.asarray(dy).sum(axis=(0, 2, 3)).astype(dtype) if need_bias else None)
    # each thread zeroes its images' dx just before col2im adds into them
    dx_out = np.empty((N, C, H, W), dtype=dtype)
    # one partial sum per thread, added up here in a fixed order (no atomics, same result
    # for the same thread count)
    dw_parts_out = np.zeros((threads, F, K), dtype=dtype)
    db_parts_out = np.zeros((threads, F), dtype=dtype)
    cdef floating[:, :, :, ::1] dx = dx_out
    cdef floating[:, :, ::1] dw_parts = dw_parts_out
    cdef floating[:, ::1] db_parts = db_parts_out
    cdef floating* db_ptr = &db_parts[0, 0] if need_bias else NULL
    with nogil, parallel(num_threads=threads):
        conv_backward_share(&dy[0, 0, 0, 0], &x[0, 0, 0, 0], &w[0, 0, 0, 0], &dx[0, 0, 0, 0],
                            &dw_parts[0, 0, 0], db_ptr, N, C, H, W, F, kh, kw, Ho, Wo,
                            sh, sw, ph, pw, dh, dw, &failed)
    if failed:
        raise MemoryError("conv2d_backward: out of memory for one image's columns")
    dw_out = dw_parts_out.sum(axis=0).reshape(F, C, kh, kw)
    return dx_out, dw_out, db_parts_out.sum(axis=0) if need_bias else None


# ----------------------------------------------------------------------------- max pooling

cdef extern from "_maxpool.h":
    void maxpool_row_2x2_f "tgs_maxpool_row_2x2_f"(const float* top, const float* bottom,
                                                   float* y, int64_t* arg, Py_ssize_t Wo,
                                                   int64_t W, int64_t first) noexcept nogil
    void maxpool_row_2x2_d "tgs_maxpool_row_2x2_d"(const double* top, const double* bottom,
                                                   double* y, int64_t* arg, Py_ssize_t Wo,
                                                   int64_t W, int64_t first) noexcept nogil


cdef inline bint takes_over(floating v, floating m) noexcept nogil:
    """v replaces the running maximum m of a window scanned in (i, j) order: it is larger, or
    it is the window's first NaN (a NaN wins, like numpy's argmax and PyTorch, so NaNs
    propagate); on ties the first maximum stays."""
    return (v > m) | ((v != v) & (m == m))


cdef void maxpool_plane_2x2(const floating* x, floating* y, int64_t* arg, Py_ssize_t W,
                            Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil:
    """maxpool_plane for the usual 2x2 window, stride 2, no padding, row by row in the
    vectorised loop of _maxpool.h (the general loop below costs several times more)."""
    cdef Py_ssize_t ho
    for ho in range(Ho):
        if floating is float:
            maxpool_row_2x2_f(x + 2 * ho * W, x + (2 * ho + 1) * W, y + ho * Wo, arg + ho * Wo,
                              Wo, W, 2 * ho * W)
        else:
            maxpool_row_2x2_d(x + 2 * ho * W, x + (2 * ho + 1) * W, y + ho * Wo, arg + ho * Wo,
                              Wo, W, 2 * ho * W)


cdef void maxpool_plane(const floating* x, floating* y, int64_t* arg,
                        Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo,
                        Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                        Py_ssize_t ph, Py_ssize_t pw) noexcept nogil:
    """Max over each window's in-bounds taps (the -inf padding never wins, and every window
    holds at least one real tap: pool2d_output_size caps the padding at half the window),
    scanned in (i, j) order from the window's top-left in-bounds tap (takes_over)."""
    cdef Py_ssize_t ho, wo, h, w, h_lo, h_hi, w_lo, w_hi, idx, best
    cdef floating m, v
    if kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0:
        maxpool_plane_2x2(x, y, arg, W, Ho, Wo)
        return
    for ho in range(Ho):
        h_lo = max(ho * sh - ph, <Py_ssize_t>0)
        h_hi = min(ho * sh - ph + kh, H)
        for wo in range(Wo):
            w_lo = max(wo * sw - pw, <Py_ssize_t>0)
            w_hi = min(wo * sw - pw + kw, W)
            best = h_lo * W + w_lo
            m = x[best]
            for h in range(h_lo, h_hi):
                for w in range(w_lo, w_hi):
                    idx = h * W + w
                    v = x[idx]
                    if takes_over(v, m):
                        m = v
                        best = idx
            y[ho * Wo + wo] = m
            arg[ho * Wo + wo] = best


def maxpool2d_forward(const floating[:, :, :, ::1] x, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                      Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t Ho, Py_ssize_t Wo):
    """(y, argmax) of every (n, c) plane, the planes shared out over the cores."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3], nc
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
    """dx[n, c].flat[argmax] += dy: windows may share a maximum, so it adds.  Each thread zeroes
    its own planes just before adding into them (not np.zeros: one serial pass over the whole
    gradient, and its pages first touched by one thread, before the scatter reads them again)."""
    cdef Py_ssize_t N = dy.shape[0], C = dy.shape[1], P = dy.shape[2] * dy.shape[3], nc, p
    cdef int64_t a
    cdef int bad = 0
    if N * C * P == 0:
        return np.zeros((N, C, H, W), dtype=np.float32 if floating is float else np.float64)
    dx_out = np.empty((N, C, H, W), dtype=np.float32 if floating is float else np.float64)
    cdef floating[:, :, :, ::1] dx_view = dx_out
    cdef floating* dx = &dx_view[0, 0, 0, 0]
    cdef const floating* g = &dy[0, 0, 0, 0]
    cdef const int64_t* arg = &argmax[0, 0, 0, 0]
    with nogil:
        for nc in prange(N * C, schedule="static", num_threads=_threads):
            memset(dx + nc * H * W, 0, H * W * sizeof(floating))
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


def avgpool2d_forward(const floating[:, :, :, ::1] x, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                      Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t Ho, Py_ssize_t Wo):
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3], nc
    y_out = np.empty((N, C, Ho, Wo), dtype=np.float32 if floating is float else np.float64)
    if y_out.size == 0:
        return y_out
    cdef floating[:, :, :, ::1] y = y_out
    with nogil:
        for nc in prange(N * C, schedule="static", num_threads=_threads):
            avgpool_plane(&x[0, 0, 0, 0] + nc * H * W, &y[0, 0, 0, 0] + nc * Ho * Wo,
                          H, W, Ho, Wo, kh, kw, sh, sw, ph, pw)
    return y_out


def avgpool2d_backward(const floating[:, :, :, ::1] dy, Py_ssize_t H, Py_ssize_t W, Py_ssize_t kh,
                       Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw):
    cdef Py_ssize_t N = dy.shape[0], C = dy.shape[1], Ho = dy.shape[2], Wo = dy.shape[3], nc
    if N * C * Ho * Wo == 0 or H * W == 0:
        return np.zeros((N, C, H, W), dtype=np.float32 if floating is float else np.float64)
    dx_out = np.empty((N, C, H, W), dtype=np.float32 if floating is float else np.float64)
    cdef floating[:, :, :, ::1] dx = dx_out
    with nogil:   # each thread zeroes its planes just before adding into them (as max pooling)
        for nc in prange(N * C, schedule="static", num_threads=_threads):
            memset(&dx[0, 0, 0, 0] + nc * H * W, 0, H * W * sizeof(floating))
            avgpool_plane_backward(&dy[0, 0, 0, 0] + nc * Ho * Wo, &dx[0, 0, 0, 0] + nc * H * W,
                                   H, W, Ho, Wo, kh, kw, sh, sw, ph, pw)
    return dx_out
