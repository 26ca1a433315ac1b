"""Whole-sequence RNN / LSTM / GRU forward and backward (contract: kernels/API.md).

Each call runs the entire time loop in C without the GIL. RNN and GRU: per time step one
BLAS GEMM for the recurrent product (h_{t-1} W_hh^T forward, dpre_t W_hh backward) and one
fused, vectorised pass over the gates (by batch row; an OpenMP loop, serial unless
TGS_CYTHON_THREADS says otherwise, see _common.pxi). LSTM: a team of threads, one per core,
each owning a slice of the hidden units and its share of W_hh packed once for the whole
sequence (see below; lstm_lm step 93 -> 55 ms on 2 cores). Inputs are validated by the
Python wrappers in recurrence.py; these functions assume consistent, C-contiguous shapes.
"""
include "_common.pxi"

import numpy as np
from cython.parallel cimport parallel, prange
from libc.stdlib cimport free, malloc
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

# The LSTM time loop runs on a team of threads (one per core) that stays together for the
# whole sequence: each thread owns a slice [j0, j0+n) of the hidden units, packs its share of
# W_hh once into the panel layout of _panel_gemm.h (which BLAS would redo at every step), and
# per step multiplies the full h_{t-1} (or dL/da_t) by it and does the gate arithmetic of its
# own units; the threads meet at one barrier per step. Each thread's share of W_hh (0.5 MB at
# H=256 on 2 cores) stays in its core's cache for all T steps.

include "_panel_gemm.pxi"


cdef inline void lstm_cell_forward(const floating* a, const floating* xw, const floating* c_prev,
                                   floating* c, floating* h, floating* gate,
                                   Py_ssize_t n, Py_ssize_t H) noexcept nogil:
    """One batch row, hidden units j0..j0+n (every pointer but `a` already offset by j0):
    a (4n) holds this slice of h_{t-1} W_hh^T gate by gate; xw and gate rows are 4H wide."""
    cdef Py_ssize_t j
    cdef floating i, f, g, o, c_t
    for j in range(n):
        i = sigmoid(a[j] + xw[j])
        f = sigmoid(a[n + j] + xw[H + j])
        g = tanh_(a[2 * n + j] + xw[2 * H + j])
        o = sigmoid(a[3 * n + j] + xw[3 * H + j])
        c_t = f * c_prev[j] + i * g
        gate[j] = i
        gate[H + j] = f
        gate[2 * H + j] = g
        gate[3 * H + j] = o
        c[j] = c_t
        h[j] = o * tanh_(c_t)


cdef void lstm_forward_share(const floating* xw, const floating* w_hh, const floating* h0,
                             const floating* c0, floating* hs, floating* cs, floating* gates,
                             Py_ssize_t T, Py_ssize_t B, Py_ssize_t H, int* failed) noexcept nogil:
    """One thread's share of the forward: hidden units [j0, j0+n) at every step."""
    cdef Py_ssize_t j0, n, t, b, col, k
    cdef const floating* h_prev
    cdef const floating* c_prev
    cdef const floating* row
    team_share(H, &j0, &n)
    cdef Py_ssize_t pw = panel_width(xw)
    cdef Py_ssize_t panels = (4 * n + pw - 1) // pw, width = panels * pw
    cdef floating* packed = <floating*> malloc(max(1, H * width) * sizeof(floating))
    cdef floating* a = <floating*> malloc(max(1, B * width) * sizeof(floating))
    cdef bint ok = packed != NULL and a != NULL
    if not ok:
        failed[0] = 1
    elif n > 0:
        # column col of this share = W_hh row g*H + j0 + j for gate g = col // n, unit j = col % n
        memset(packed, 0, H * width * sizeof(floating))
        for col in range(4 * n):
            row = w_hh + ((col // n) * H + j0 + col % n) * H
            for k in range(H):
                packed[((col // pw) * H + k) * pw + col % pw] = row[k]
    for t in range(T):
        if ok and n > 0:
            h_prev = h0 if t == 0 else hs + (t - 1) * B * H
            c_prev = c0 if t == 0 else cs + (t - 1) * B * H
            panel_gemm(B, H, panels, h_prev, H, packed, a, width)
            for b in range(B):
                lstm_cell_forward(a + b * width, xw + (t * B + b) * 4 * H + j0, c_prev + b * H + j0,
                                  cs + (t * B + b) * H + j0, hs + (t * B + b) * H + j0,
                                  gates + (t * B + b) * 4 * H + j0, n, H)
        barrier()  # h_t complete before any thread multiplies it by W_hh
    free(packed)
    free(a)


cdef inline void lstm_cell_backward(const floating* dh_up, const floating* dh_rec, floating* dc,
                                    const floating* gate, const floating* c_prev,
                                    const floating* c, floating* dpre,
                                    Py_ssize_t n, Py_ssize_t H) noexcept nogil:
    """One batch row, hidden units j0..j0+n (pointers but dh_rec offset by j0):
    dL/dh_t = dh_up (from above) + dh_rec (from step t+1 through W_hh); dc carries dL/dc_t in
    and dL/dc_{t-1} out; dpre (4H wide) receives dL/da_t."""
    cdef Py_ssize_t j
    cdef floating i, f, g, o, tc, dh_j, dc_j
    for j in range(n):
        i = gate[j]
        f = gate[H + j]
        g = gate[2 * H + j]
        o = gate[3 * H + j]
        tc = tanh_(c[j])
        dh_j = dh_up[j] + dh_rec[j]
        dc_j = dc[j] + dh_j * o * (1 - tc * tc)
        dpre[j] = dc_j * g * i * (1 - i)                  # di * σ'
        dpre[H + j] = dc_j * c_prev[j] * f * (1 - f)      # df * σ'
        dpre[2 * H + j] = dc_j * i * (1 - g * g)          # dg * tanh'
        dpre[3 * H + j] = dh_j * tc * o * (1 - o)         # do * σ'
        dc[j] = dc_j * f


cdef void lstm_backward_share(const floating* dhs, const floating* w_hh, const floating* c0,
                              const floating* cs, const floating* gates, floating* dpre,
                              floating* dh0, floating* dc, Py_ssize_t T, Py_ssize_t B,
                              Py_ssize_t H, int* failed) noexcept nogil:
    """One thread's share of backpropagation through time: dL/da_t for hidden units
    [j0, j0+n) and the columns [j0, j0+n) of dL/dh_{t-1} = dpre_t W_hh (+ dhs_{t-1})."""
    cdef Py_ssize_t j0, n, t, b, col, k
    cdef const floating* c_prev
    team_share(H, &j0, &n)
    cdef Py_ssize_t pw = panel_width(dhs)
    cdef Py_ssize_t panels = (n + pw - 1) // pw, width = panels * pw
    cdef floating* packed = <floating*> malloc(max(1, 4 * H * width) * sizeof(floating))
    cdef floating* rec = <floating*> malloc(max(1, B * width) * sizeof(floating))
    cdef bint ok = packed != NULL and rec != NULL
    if not ok:
        failed[0] = 1
    elif n > 0:
        memset(packed, 0, 4 * H * width * sizeof(floating))
        for k in range(4 * H):
            for col in range(n):
                packed[((col // pw) * 4 * H + k) * pw + col % pw] = w_hh[k * H + j0 + col]
        memset(rec, 0, B * width * sizeof(floating))  # nothing comes back from after step T-1
    for t in range(T - 1, -1, -1):
        if ok and n > 0:
            c_prev = c0 if t == 0 else cs + (t - 1) * B * H
            for b in range(B):
                lstm_cell_backward(dhs + (t * B + b) * H + j0, rec + b * width, dc + b * H + j0,
                                   gates + (t * B + b) * 4 * H + j0, c_prev + b * H + j0,
                                   cs + (t * B + b) * H + j0, dpre + (t * B + b) * 4 * H + j0, n, H)
        barrier()  # dpre_t complete before any thread multiplies it by W_hh
        if ok and n > 0:
            panel_gemm(B, 4 * H, panels, dpre + t * B * 4 * H, 4 * H, packed, rec, width)
    if ok:
        for b in range(B):
            memcpy(dh0 + b * H + j0, rec + b * width, n * sizeof(floating))
    free(packed)
    free(rec)


def lstm_forward(const floating[:, :, ::1] xw, const floating[:, ::1] w_hh,
                 const floating[:, ::1] h0, const floating[:, ::1] c0):
    cdef Py_ssize_t T = xw.shape[0], B = xw.shape[1], H = h0.shape[1]
    dtype = np.float32 if floating is float else np.float64
    hs_out = np.empty((T, B, H), dtype=dtype)
    cs_out = np.empty((T, B, H), dtype=dtype)
    gates_out = np.empty((T, B, 4 * H), dtype=dtype)
    if T == 0 or B == 0 or H == 0:
        return hs_out, cs_out, gates_out
    cdef floating[:, :, ::1] hs = hs_out, cs = cs_out, gates = gates_out
    cdef int failed = 0
    with nogil, parallel(num_threads=_team):
        lstm_forward_share(&xw[0, 0, 0], &w_hh[0, 0], &h0[0, 0], &c0[0, 0], &hs[0, 0, 0],
                           &cs[0, 0, 0], &gates[0, 0, 0], T, B, H, &failed)
    if failed:
        raise MemoryError("lstm_forward: out of memory for the packed recurrent weights")
    return hs_out, cs_out, gates_out


def lstm_backward(const floating[:, :, ::1] dhs, const floating[:, ::1] dcT,
                  const floating[:, ::1] w_hh, const floating[:, ::1] h0,
                  const floating[:, ::1] c0, const floating[:, :, ::1] hs,
                  const floating[:, :, ::1] cs, const floating[:, :, ::1] gates):
    cdef Py_ssize_t T = dhs.shape[0], B = dhs.shape[1], H = dhs.shape[2]
    dtype = np.float32 if floating is float else np.float64
    dpre_out = np.empty((T, B, 4 * H), dtype=dtype)
    dh_out = np.zeros((B, H), dtype=dtype)            # becomes dh0
    dc_out = np.array(dcT, dtype=dtype, copy=True)    # becomes dc0
    if T == 0 or B == 0 or H == 0:
        return dpre_out, dh_out, dc_out
    cdef floating[:, :, ::1] dpre = dpre_out
    cdef floating[:, ::1] dh = dh_out, dc = dc_out
    cdef int failed = 0
    with nogil, parallel(num_threads=_team):
        lstm_backward_share(&dhs[0, 0, 0], &w_hh[0, 0], &c0[0, 0], &cs[0, 0, 0], &gates[0, 0, 0],
                            &dpre[0, 0, 0], &dh[0, 0], &dc[0, 0], T, B, H, &failed)
    if failed:
        raise MemoryError("lstm_backward: out of memory for the packed recurrent weights")
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
