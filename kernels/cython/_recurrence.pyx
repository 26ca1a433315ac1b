"""Whole-sequence RNN / LSTM / GRU forward and backward (contract: kernels/API.md).

Each call runs the entire time loop in C without the GIL. Per time step there is one
BLAS GEMM for the recurrent product (h_{t-1} W_hh^T forward, dpre_t W_hh backward) and one
fused, vectorised pass over the gates (by batch row; an OpenMP loop, serial unless
TGS_CYTHON_THREADS says otherwise, see _common.pxi). Inputs are validated by the
Python wrappers in recurrence.py; these functions assume consistent, C-contiguous shapes.
"""
include "_common.pxi"

import numpy as np
from cython.parallel cimport prange
from libc.string cimport memcpy, memset

# ---------------------------------------------------------------------------------------
# Elman RNN: h_t = act(xw_t + h_{t-1} W_hh^T)

cdef inline void rnn_cell_backward(floating* dh, const floating* h, const floating* dh_below,
                                   floating* dpre, Py_ssize_t H, bint relu) noexcept nogil:
    """dpre = dh * act'(pre) with act' from the output (tanh: 1-h², relu: h>0); then dh is
    reset to dL/dh_{t-1} from above (dh_below, or 0 at t=0) for the recurrent GEMM to add to."""
    cdef Py_ssize_t j
    if relu:
        for j in range(H):
            dpre[j] = dh[j] if h[j] > 0 else 0
    else:
        for j in range(H):
            dpre[j] = dh[j] * (1 - h[j] * h[j])
    if dh_below != NULL:
        memcpy(dh, dh_below, H * sizeof(floating))
    else:
        memset(dh, 0, H * sizeof(floating))


def rnn_forward(const floating[:, :, ::1] xw, const floating[:, ::1] w_hh,
                const floating[:, ::1] h0, bint relu):
    cdef Py_ssize_t T = xw.shape[0], B = xw.shape[1], H = xw.shape[2], t, b, j
    out = np.empty((T, B, H), dtype=np.float32 if floating is float else np.float64)
    cdef floating[:, :, ::1] hs = out
    cdef const floating* h_prev
    cdef floating* h
    if T == 0 or B == 0 or H == 0:
        return out
    with nogil:
        memcpy(&hs[0, 0, 0], &xw[0, 0, 0], T * B * H * sizeof(floating))
        for t in range(T):
            h_prev = &h0[0, 0] if t == 0 else &hs[t - 1, 0, 0]
            h = &hs[t, 0, 0]
            gemm(False, True, <int>B, <int>H, <int>H, 1, h_prev, <int>H, &w_hh[0, 0], <int>H,
                 1, h, <int>H)
            for b in prange(B, schedule="static", num_threads=_threads):
                if relu:
                    for j in range(b * H, (b + 1) * H):
                        h[j] = h[j] if h[j] > 0 else 0
                else:
                    for j in range(b * H, (b + 1) * H):
                        h[j] = tanh_(h[j])
    return out


def rnn_backward(const floating[:, :, ::1] dhs, const floating[:, ::1] w_hh,
                 const floating[:, ::1] h0, const floating[:, :, ::1] hs, bint relu):
    cdef Py_ssize_t T = dhs.shape[0], B = dhs.shape[1], H = dhs.shape[2], t, b
    dtype = np.float32 if floating is float else np.float64
    dpre_out = np.empty((T, B, H), dtype=dtype)
    dh_out = np.zeros((B, H), dtype=dtype)  # becomes dh0
    cdef floating[:, :, ::1] dpre = dpre_out
    cdef floating[:, ::1] dh = dh_out
    cdef const floating* below
    if T == 0 or B == 0 or H == 0:
        return dpre_out, dh_out
    with nogil:
        memcpy(&dh[0, 0], &dhs[T - 1, 0, 0], B * H * sizeof(floating))
        for t in range(T - 1, -1, -1):
            below = &dhs[t - 1, 0, 0] if t > 0 else NULL
            for b in prange(B, schedule="static", num_threads=_threads):
                rnn_cell_backward(&dh[b, 0], &hs[t, b, 0], below + b * H if below != NULL else NULL,
                                  &dpre[t, b, 0], H, relu)
            # dL/dh_{t-1} += dpre_t @ W_hh
            gemm(False, False, <int>B, <int>H, <int>H, 1, &dpre[t, 0, 0], <int>H, &w_hh[0, 0],
                 <int>H, 1, &dh[0, 0], <int>H)
    return dpre_out, dh_out


# ---------------------------------------------------------------------------------------
# LSTM, gate order i, f, g, o: c_t = f*c_{t-1} + i*g,  h_t = o*tanh(c_t)

cdef inline void lstm_cell_forward(floating* a, const floating* c_prev, floating* c, floating* h,
                                   Py_ssize_t H) noexcept nogil:
    """One batch row: pre-activations a (4H) are replaced by the activated gates."""
    cdef Py_ssize_t j
    cdef floating i, f, g, o, c_t
    for j in range(H):
        i = sigmoid(a[j])
        f = sigmoid(a[H + j])
        g = tanh_(a[2 * H + j])
        o = sigmoid(a[3 * H + j])
        a[j] = i
        a[H + j] = f
        a[2 * H + j] = g
        a[3 * H + j] = o
        c_t = f * c_prev[j] + i * g
        c[j] = c_t
        h[j] = o * tanh_(c_t)


cdef inline void lstm_cell_backward(floating* dh, floating* dc, const floating* gate,
                                    const floating* c_prev, const floating* c,
                                    const floating* dh_below, floating* dpre,
                                    Py_ssize_t H) noexcept nogil:
    """One batch row, step t: from dh = dL/dh_t and dc = dL/dc_t (carried), write
    dpre = dL/da_t and leave dc = dL/dc_{t-1}, dh = dL/dh_{t-1} from above (no recurrent part)."""
    cdef Py_ssize_t j
    cdef floating i, f, g, o, tc, dh_j, dc_j
    for j in range(H):
        i = gate[j]
        f = gate[H + j]
        g = gate[2 * H + j]
        o = gate[3 * H + j]
        tc = tanh_(c[j])
        dh_j = dh[j]
        dc_j = dc[j] + dh_j * o * (1 - tc * tc)
        dpre[j] = dc_j * g * i * (1 - i)                  # di * σ'
        dpre[H + j] = dc_j * c_prev[j] * f * (1 - f)      # df * σ'
        dpre[2 * H + j] = dc_j * i * (1 - g * g)          # dg * tanh'
        dpre[3 * H + j] = dh_j * tc * o * (1 - o)         # do * σ'
        dc[j] = dc_j * f
        dh[j] = dh_below[j] if dh_below != NULL else 0


def lstm_forward(const floating[:, :, ::1] xw, const floating[:, ::1] w_hh,
                 const floating[:, ::1] h0, const floating[:, ::1] c0):
    cdef Py_ssize_t T = xw.shape[0], B = xw.shape[1], H = h0.shape[1], t, b
    dtype = np.float32 if floating is float else np.float64
    hs_out = np.empty((T, B, H), dtype=dtype)
    cs_out = np.empty((T, B, H), dtype=dtype)
    gates_out = np.empty((T, B, 4 * H), dtype=dtype)
    cdef floating[:, :, ::1] hs = hs_out, cs = cs_out, gates = gates_out
    cdef const floating* h_prev
    cdef const floating* c_prev
    if T == 0 or B == 0 or H == 0:
        return hs_out, cs_out, gates_out
    with nogil:
        memcpy(&gates[0, 0, 0], &xw[0, 0, 0], T * B * 4 * H * sizeof(floating))
        for t in range(T):
            h_prev = &h0[0, 0] if t == 0 else &hs[t - 1, 0, 0]
            c_prev = &c0[0, 0] if t == 0 else &cs[t - 1, 0, 0]
            # a_t = xw_t + h_{t-1} W_hh^T, accumulated in place in gates[t]
            gemm(False, True, <int>B, <int>(4 * H), <int>H, 1, h_prev, <int>H, &w_hh[0, 0], <int>H,
                 1, &gates[t, 0, 0], <int>(4 * H))
            for b in prange(B, schedule="static", num_threads=_threads):
                lstm_cell_forward(&gates[t, b, 0], c_prev + b * H, &cs[t, b, 0], &hs[t, b, 0], H)
    return hs_out, cs_out, gates_out


def lstm_backward(const floating[:, :, ::1] dhs, const floating[:, ::1] dcT,
                  const floating[:, ::1] w_hh, const floating[:, ::1] h0,
                  const floating[:, ::1] c0, const floating[:, :, ::1] hs,
                  const floating[:, :, ::1] cs, const floating[:, :, ::1] gates):
    cdef Py_ssize_t T = dhs.shape[0], B = dhs.shape[1], H = dhs.shape[2], t, b
    dtype = np.float32 if floating is float else np.float64
    dpre_out = np.empty((T, B, 4 * H), dtype=dtype)
    dh_out = np.zeros((B, H), dtype=dtype)            # becomes dh0
    dc_out = np.array(dcT, dtype=dtype, copy=True)    # becomes dc0
    cdef floating[:, :, ::1] dpre = dpre_out
    cdef floating[:, ::1] dh = dh_out, dc = dc_out
    cdef const floating* below
    cdef const floating* c_prev
    if T == 0 or B == 0 or H == 0:
        return dpre_out, dh_out, dc_out
    with nogil:
        memcpy(&dh[0, 0], &dhs[T - 1, 0, 0], B * H * sizeof(floating))
        for t in range(T - 1, -1, -1):
            below = &dhs[t - 1, 0, 0] if t > 0 else NULL
            c_prev = &c0[0, 0] if t == 0 else &cs[t - 1, 0, 0]
            for b in prange(B, schedule="static", num_threads=_threads):
                lstm_cell_backward(&dh[b, 0], &dc[b, 0], &gates[t, b, 0], c_prev + b * H,
                                   &cs[t, b, 0], below + b * H if below != NULL else NULL,
                                   &dpre[t, b, 0], H)
            # dL/dh_{t-1} += dpre_t @ W_hh
            gemm(False, False, <int>B, <int>H, <int>(4 * H), 1, &dpre[t, 0, 0], <int>(4 * H),
                 &w_hh[0, 0], <int>H, 1, &dh[0, 0], <int>H)
    return dpre_out, dh_out, dc_out


# ---------------------------------------------------------------------------------------
# GRU, gate order r, z, n: n = tanh(xw_n + r*hh_n),  h_t = (1-z)*n + z*h_{t-1}

cdef inline void gru_cell_forward(const floating* xw, floating* hh, const floating* b_hh,
                                  const floating* h_prev, floating* h, floating* gate,
                                  floating* hn, Py_ssize_t H) noexcept nogil:
    """One batch row: hh (3H) holds h_{t-1} W_hh^T; b_hh is added here, not by the GEMM."""
    cdef Py_ssize_t j
    cdef floating r, z, n, hh_n
    for j in range(H):
        r = sigmoid(xw[j] + hh[j] + b_hh[j])
        z = sigmoid(xw[H + j] + hh[H + j] + b_hh[H + j])
        hh_n = hh[2 * H + j] + b_hh[2 * H + j]
        n = tanh_(xw[2 * H + j] + r * hh_n)
        h[j] = n + z * (h_prev[j] - n)
        gate[j] = r
        gate[H + j] = z
        gate[2 * H + j] = n
        hn[j] = hh_n


cdef inline void gru_cell_backward(floating* dh, const floating* gate, const floating* h_prev,
                                   const floating* hn, const floating* dh_below,
                                   floating* dxw, floating* dhh, Py_ssize_t H) noexcept nogil:
    """One batch row: from dh = dL/dh_t write dxw_t, dhh_t and leave in dh the part of
    dL/dh_{t-1} that does not go through W_hh (z*dh plus the gradient from above)."""
    cdef Py_ssize_t j
    cdef floating r, z, n, dh_j, da_n, da_r, da_z
    for j in range(H):
        r = gate[j]
        z = gate[H + j]
        n = gate[2 * H + j]
        dh_j = dh[j]
        da_n = dh_j * (1 - z) * (1 - n * n)
        da_r = da_n * hn[j] * r * (1 - r)
        da_z = dh_j * (h_prev[j] - n) * z * (1 - z)
        dxw[j] = da_r
        dxw[H + j] = da_z
        dxw[2 * H + j] = da_n
        dhh[j] = da_r
        dhh[H + j] = da_z
        dhh[2 * H + j] = da_n * r
        dh[j] = dh_j * z + (dh_below[j] if dh_below != NULL else 0)


def gru_forward(const floating[:, :, ::1] xw, const floating[:, ::1] w_hh,
                const floating[::1] b_hh, const floating[:, ::1] h0):
    cdef Py_ssize_t T = xw.shape[0], B = xw.shape[1], H = h0.shape[1], t, b
    dtype = np.float32 if floating is float else np.float64
    hs_out = np.empty((T, B, H), dtype=dtype)
    gates_out = np.empty((T, B, 3 * H), dtype=dtype)
    hn_out = np.empty((T, B, H), dtype=dtype)
    hh_scratch = np.empty((B, 3 * H), dtype=dtype)
    cdef floating[:, :, ::1] hs = hs_out, gates = gates_out, hn = hn_out
    cdef floating[:, ::1] hh = hh_scratch
    cdef const floating* h_prev
    if T == 0 or B == 0 or H == 0:
        return hs_out, gates_out, hn_out
    with nogil:
        for t in range(T):
            h_prev = &h0[0, 0] if t == 0 else &hs[t - 1, 0, 0]
            gemm(False, True, <int>B, <int>(3 * H), <int>H, 1, h_prev, <int>H, &w_hh[0, 0], <int>H,
                 0, &hh[0, 0], <int>(3 * H))
            for b in prange(B, schedule="static", num_threads=_threads):
                gru_cell_forward(&xw[t, b, 0], &hh[b, 0], &b_hh[0], h_prev + b * H, &hs[t, b, 0],
                                 &gates[t, b, 0], &hn[t, b, 0], H)
    return hs_out, gates_out, hn_out


def gru_backward(const floating[:, :, ::1] dhs, const floating[:, ::1] w_hh,
                 const floating[:, ::1] h0, const floating[:, :, ::1] hs,
                 const floating[:, :, ::1] gates, const floating[:, :, ::1] hn):
    cdef Py_ssize_t T = dhs.shape[0], B = dhs.shape[1], H = dhs.shape[2], t, b
    dtype = np.float32 if floating is float else np.float64
    dxw_out = np.empty((T, B, 3 * H), dtype=dtype)
    dhh_out = np.empty((T, B, 3 * H), dtype=dtype)
    dh_out = np.zeros((B, H), dtype=dtype)            # becomes dh0
    cdef floating[:, :, ::1] dxw = dxw_out, dhh = dhh_out
    cdef floating[:, ::1] dh = dh_out
    cdef const floating* below
    cdef const floating* h_prev
    if T == 0 or B == 0 or H == 0:
        return dxw_out, dhh_out, dh_out
    with nogil:
        memcpy(&dh[0, 0], &dhs[T - 1, 0, 0], B * H * sizeof(floating))
        for t in range(T - 1, -1, -1):
            below = &dhs[t - 1, 0, 0] if t > 0 else NULL
            h_prev = &h0[0, 0] if t == 0 else &hs[t - 1, 0, 0]
            for b in prange(B, schedule="static", num_threads=_threads):
                gru_cell_backward(&dh[b, 0], &gates[t, b, 0], h_prev + b * H, &hn[t, b, 0],
                                  below + b * H if below != NULL else NULL,
                                  &dxw[t, b, 0], &dhh[t, b, 0], H)
            # dL/dh_{t-1} += dhh_t @ W_hh
            gemm(False, False, <int>B, <int>H, <int>(3 * H), 1, &dhh[t, 0, 0], <int>(3 * H),
                 &w_hh[0, 0], <int>H, 1, &dh[0, 0], <int>H)
    return dxw_out, dhh_out, dh_out
