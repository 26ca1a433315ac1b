"""Whole-sequence RNN / LSTM / GRU forward and backward (contract: kernels/API.md).

Each call runs the entire time loop in C without the GIL, on a team of threads (one per
core, see _common.pxi) that stays together for the whole sequence:

  * each thread owns a slice [j0, j0+n) of the hidden units;
  * it packs its share of W_hh once, into the panel layout of _panel_gemm.h: the forward
    needs the gate rows of its units (as columns of W_hh^T), the backward the columns of its
    units (dL/dh_{t-1}[:, j] = dL/da_t @ W_hh[:, j]).  BLAS would repack the whole matrix at
    every step, which at B ~ 32 rows costs as much as the product itself;
  * per step it multiplies the full h_{t-1} (or dL/da_t) by its packed share, then does the
    gate arithmetic of its own units (vectorised by GCC; float32 tanh and sigmoid written
    inline, _fastmath.h, so no call breaks the vector loop);
  * the threads meet at one barrier per step, once the step's h_t (or dL/da_t) is complete.

The LSTM's lstm_forward_xh packs [W_ih | b] above W_hh instead and multiplies the engine's rows
[x_t | 1 | h_{t-1}] in place, writing h_t into the next row: the input projection becomes part
of each step's product, at the panel GEMM's speed, and no (T, B, 4H) xw is written or read.

Each thread's share of W_hh (0.5 MB for an LSTM with H=256 on 2 cores) stays in its core's
cache for all T steps. lstm_lm training step on 2 cores: 93 -> 55 ms.

Inputs are validated by the Python wrappers in recurrence.py; these functions assume
consistent, C-contiguous shapes. Every thread meets every barrier, also one that owns no
units (H smaller than the team's share size) or could not allocate its scratch (which then
raises MemoryError after the loop).
"""
include "_common.pxi"
include "_panel_gemm.pxi"

import numpy as np
from cython.parallel cimport parallel
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset


# ----------------------------------------------------------------------------- packing

cdef void pack_gate_rows(const floating* w_x, Py_ssize_t lead, const floating* w_hh, Py_ssize_t H,
                         Py_ssize_t gates, Py_ssize_t j0, Py_ssize_t n, floating* packed,
                         Py_ssize_t pw) noexcept nogil:
    """Forward share: packed column c = row r = (c // n)*H + j0 + c % n (gate c // n of unit
    j0 + c % n) of [w_x | w_hh], for c < gates*n (zero columns pad the last panel): K = lead + H
    packed rows, the `lead` entries of w_x's row r (lstm_forward_xh's [W_ih | b]; none
    elsewhere) above the H of w_hh's."""
    cdef Py_ssize_t col, k, r, K = lead + H, width = ((gates * n + pw - 1) // pw) * pw
    cdef floating* dst
    memset(packed, 0, K * width * sizeof(floating))
    for col in range(gates * n):
        r = (col // n) * H + j0 + col % n
        dst = packed + (col // pw) * K * pw + col % pw
        for k in range(lead):
            dst[k * pw] = w_x[r * lead + k]
        for k in range(H):
            dst[(lead + k) * pw] = w_hh[r * H + k]


cdef inline bint take_share(const floating* w_x, Py_ssize_t lead, const floating* w_hh, Py_ssize_t H,
                            Py_ssize_t gates, Py_ssize_t B, bint backward, Py_ssize_t* j0, Py_ssize_t* n,
                            Py_ssize_t* panels, Py_ssize_t* lanes, Py_ssize_t* width, floating** packed,
                            floating** product, int* failed) noexcept nogil:
    """The team skeleton every kernel below starts with: this thread's units [j0, j0+n)
    (team_share) and its part of W_hh packed once into `panels` panels of _panel_gemm.h
    (`lanes` columns each, `width` in all): the forward's gate rows of its units (gates*n columns,
    K = lead + H long: pack_gate_rows), so that h_{t-1} @ packed (or [x_t | 1 | h_{t-1}] @ packed
    with lstm_forward_xh's w_x = [W_ih | b]) is its gates' pre-activations; the backward's
    columns j0..j0+n of W_hh (K = gates*H), so that dL/da_t @ packed is its units of dL/dh_{t-1}.  `product` is the
    B x width scratch for that product, zero in the backward (nothing comes back from after
    step T-1).  Returns whether this thread has work; it meets every barrier either way, and
    frees *packed and *product at the end (they may be NULL after a failed allocation)."""
    team_share(H, j0, n)
    cdef Py_ssize_t cols = n[0] if backward else gates * n[0]
    cdef Py_ssize_t pw = panel_width(w_hh, cols)
    lanes[0] = pw
    panels[0] = (cols + pw - 1) // pw
    width[0] = panels[0] * pw
    packed[0] = scratch(w_hh, (gates * H if backward else lead + H) * width[0], failed)
    product[0] = scratch(w_hh, B * width[0], failed)
    if packed[0] == NULL or product[0] == NULL or n[0] == 0:
        return False
    if backward:
        pack_panels(w_hh + j0[0], gates * H, n[0], H, 1, packed[0], pw)
        memset(product[0], 0, B * width[0] * sizeof(floating))
    else:
        pack_gate_rows(w_x, lead, w_hh, H, gates, j0[0], n[0], packed[0], pw)
    return True


cdef inline void hand_back(floating* rec, Py_ssize_t width, floating* dh0, Py_ssize_t B,
                           Py_ssize_t H, Py_ssize_t j0, Py_ssize_t n, bint active,
                           floating* packed) noexcept nogil:
    """The end of a backward share (take_share): this thread's units of dL/dh0 are the last
    product rec = dL/da_0 @ packed; then its scratch goes."""
    cdef Py_ssize_t b
    if active:
        for b in range(B):
            memcpy(dh0 + b * H + j0, rec + b * width, n * sizeof(floating))
    free(packed)
    free(rec)


# ----------------------------------------------------------------------------- Elman RNN
# h_t = act(xw_t + h_{t-1} W_hh^T), act = tanh or relu

cdef void rnn_forward_share(const floating* xw, const floating* w_hh, const floating* h0,
                            floating* hs, Py_ssize_t hs_step, Py_ssize_t hs_row, Py_ssize_t T,
                            Py_ssize_t B, Py_ssize_t H, bint relu, int* failed) noexcept nogil:
    """h_t = act(xw_t + h_{t-1} W_hh^T) for this thread's units, step by step; h_t's row b at
    hs + t*hs_step + b*hs_row (the caller's hs_out may be strided)."""
    cdef Py_ssize_t j0, n, panels, lanes, width, t, b, j
    cdef floating zero = 0
    cdef floating* packed
    cdef floating* a
    cdef bint active = take_share(NULL, 0, w_hh, H, 1, B, False, &j0, &n, &panels, &lanes, &width, &packed, &a, failed)
    cdef const floating* x
    cdef floating* h
    cdef floating* a_b
    for t in range(T):
        if active:
            if t == 0:
                panel_gemm(B, H, panels, lanes, h0, H, packed, a, width)
            else:
                panel_gemm(B, H, panels, lanes, hs + (t - 1) * hs_step, hs_row, packed, a, width)
            for b in range(B):
                a_b = a + b * width
                x = xw + (t * B + b) * H + j0
                h = hs + t * hs_step + b * hs_row + j0
                if relu:   # max(a, 0) that keeps a NaN a (NaN < 0 is false), as np.maximum
                    for j in range(n):
                        h[j] = zero if a_b[j] + x[j] < zero else a_b[j] + x[j]
                else:
                    for j in range(n):
                        h[j] = tanh_(a_b[j] + x[j])
        barrier()  # h_t complete before any thread multiplies it by W_hh
    free(packed)
    free(a)


cdef void rnn_backward_share(const floating* dhs, const floating* w_hh, const floating* hs,
                             floating* dpre, floating* dh0, Py_ssize_t T, Py_ssize_t B,
                             Py_ssize_t H, bint relu, int* failed) noexcept nogil:
    """dpre_t = (dhs_t + dpre_{t+1} W_hh) * act'(t) for this thread's units; dh0 = dpre_0 W_hh."""
    cdef Py_ssize_t j0, n, panels, lanes, width, t, b, j
    cdef floating one = 1, zero = 0   # a bare 1 would promote float32 to double
    cdef floating* packed
    cdef floating* rec   # dpre_{t+1} W_hh, own columns
    cdef bint active = take_share(NULL, 0, w_hh, H, 1, B, True, &j0, &n, &panels, &lanes, &width, &packed, &rec, failed)
    cdef const floating* up
    cdef const floating* h
    cdef const floating* r
    cdef floating* d
    for t in range(T - 1, -1, -1):
        if active:
            for b in range(B):
                up = dhs + (t * B + b) * H + j0
                h = hs + (t * B + b) * H + j0
                r = rec + b * width
                d = dpre + (t * B + b) * H + j0
                if relu:   # times [h > 0], as the reference: a NaN or inf gradient is kept
                    for j in range(n):
                        d[j] = (up[j] + r[j]) * (one if h[j] > 0 else zero)
                else:
                    for j in range(n):
                        d[j] = (up[j] + r[j]) * (one - h[j] * h[j])
        barrier()  # dpre_t complete before any thread multiplies it by W_hh
        if active:
            panel_gemm(B, H, panels, lanes, dpre + t * B * H, H, packed, rec, width)
    hand_back(rec, width, dh0, B, H, j0, n, active, packed)


def rnn_forward(const floating[:, :, ::1] xw, const floating[:, ::1] w_hh,
                const floating[:, ::1] h0, bint relu, floating[:, :, :] hs):
    """Fills hs (T, B, H), whose rows have unit stride (the wrapper checks it)."""
    cdef Py_ssize_t T = xw.shape[0], B = xw.shape[1], H = xw.shape[2]
    if T == 0 or B == 0 or H == 0:
        return
    cdef Py_ssize_t hs_step = hs.strides[0] // sizeof(floating), hs_row = hs.strides[1] // sizeof(floating)
    cdef int failed = 0
    with nogil, parallel(num_threads=_threads):
        rnn_forward_share(&xw[0, 0, 0], &w_hh[0, 0], &h0[0, 0], &hs[0, 0, 0], hs_step, hs_row, T, B, H,
                          relu, &failed)
    if failed:
        raise MemoryError("rnn_forward: out of memory for the packed recurrent weights")


def rnn_backward(const floating[:, :, ::1] dhs, const floating[:, ::1] w_hh,
                 const floating[:, ::1] h0, const floating[:, :, ::1] hs, bint relu):
    cdef Py_ssize_t T = dhs.shape[0], B = dhs.shape[1], H = dhs.shape[2]
    dtype = np.float32 if floating is float else np.float64
    dpre_out = np.empty((T, B, H), dtype=dtype)
    dh_out = np.zeros((B, H), dtype=dtype)  # becomes dh0
    if T == 0 or B == 0 or H == 0:
        return dpre_out, dh_out
    cdef floating[:, :, ::1] dpre = dpre_out
    cdef floating[:, ::1] dh = dh_out
    cdef int failed = 0
    with nogil, parallel(num_threads=_threads):
        rnn_backward_share(&dhs[0, 0, 0], &w_hh[0, 0], &hs[0, 0, 0], &dpre[0, 0, 0], &dh[0, 0],
                           T, B, H, relu, &failed)
    if failed:
        raise MemoryError("rnn_backward: out of memory for the packed recurrent weights")
    return dpre_out, dh_out


# ----------------------------------------------------------------------------- LSTM
# gate order i, f, g, o: c_t = f*c_{t-1} + i*g,  h_t = o*tanh(c_t)

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


cdef void lstm_forward_share(const floating* xw, Py_ssize_t xw_row, const floating* w_x, Py_ssize_t lead,
                             const floating* w_hh, const floating* first, Py_ssize_t first_row, const floating* c0,
                             floating* hs, Py_ssize_t hs_step, Py_ssize_t hs_row,
                             floating* cs, floating* gates, Py_ssize_t T, Py_ssize_t B, Py_ssize_t H,
                             int* failed) noexcept nogil:
    """c_t, h_t and the activated gates i, f, g, o of this thread's units, step by step; h_t's
    row b at hs + t*hs_step + b*hs_row (the caller's hs_out may be strided).

    Two forms.  lstm_forward: no w_x (lead = 0), the step's product is h_{t-1} @ W_hh's share
    (`first` = h0 at t = 0) and xw's rows (xw_row = 4H apart) are added in the cell.
    lstm_forward_xh: w_x = [W_ih | b] (lead columns) packed above W_hh, and every h_t row sits
    `lead` columns after its x_{t+1} row, so the product reads [x_t | 1 | h_{t-1}] in place
    (`first` = row 0 of xh) and there is no xw (a row of zeros, xw_row = 0)."""
    cdef Py_ssize_t j0, n, panels, lanes, width, t, b
    cdef Py_ssize_t K = lead + H
    cdef floating* packed
    cdef floating* a
    cdef bint active = take_share(w_x, lead, w_hh, H, 4, B, False, &j0, &n, &panels, &lanes, &width, &packed, &a, failed)
    cdef const floating* c_prev
    for t in range(T):
        if active:
            c_prev = c0 if t == 0 else cs + (t - 1) * B * H
            if t == 0:
                panel_gemm(B, K, panels, lanes, first, first_row, packed, a, width)
            else:
                panel_gemm(B, K, panels, lanes, hs + (t - 1) * hs_step - lead, hs_row, packed, a, width)
            for b in range(B):
                lstm_cell_forward(a + b * width, xw + (t * B + b) * xw_row + j0, c_prev + b * H + j0,
                                  cs + (t * B + b) * H + j0, hs + t * hs_step + b * hs_row + j0,
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
    cdef floating i, f, g, o, tc, dh_j, dc_j, one = 1   # a bare 1 would promote to double
    for j in range(n):
        i = gate[j]
        f = gate[H + j]
        g = gate[2 * H + j]
        o = gate[3 * H + j]
        tc = tanh_(c[j])
        dh_j = dh_up[j] + dh_rec[j]
        dc_j = dc[j] + dh_j * o * (one - tc * tc)
        dpre[j] = dc_j * g * i * (one - i)                  # di * σ'
        dpre[H + j] = dc_j * c_prev[j] * f * (one - f)      # df * σ'
        dpre[2 * H + j] = dc_j * i * (one - g * g)          # dg * tanh'
        dpre[3 * H + j] = dh_j * tc * o * (one - o)         # do * σ'
        dc[j] = dc_j * f


cdef void lstm_backward_share(const floating* dhs, const floating* w_hh, const floating* c0,
                              const floating* cs, const floating* gates, floating* dpre,
                              floating* dh0, floating* dc, Py_ssize_t T, Py_ssize_t B,
                              Py_ssize_t H, int* failed) noexcept nogil:
    """dL/da_t for this thread's units, and their columns of dL/dh_{t-1} = dpre_t W_hh."""
    cdef Py_ssize_t j0, n, panels, lanes, width, t, b
    cdef floating* packed
    cdef floating* rec   # dpre_{t+1} W_hh, own columns
    cdef bint active = take_share(NULL, 0, w_hh, H, 4, B, True, &j0, &n, &panels, &lanes, &width, &packed, &rec, failed)
    cdef const floating* c_prev
    for t in range(T - 1, -1, -1):
        if active:
            c_prev = c0 if t == 0 else cs + (t - 1) * B * H
            for b in range(B):
                lstm_cell_backward(dhs + (t * B + b) * H + j0, rec + b * width, dc + b * H + j0,
                                   gates + (t * B + b) * 4 * H + j0, c_prev + b * H + j0,
                                   cs + (t * B + b) * H + j0, dpre + (t * B + b) * 4 * H + j0, n, H)
        barrier()  # dpre_t complete before any thread multiplies it by W_hh
        if active:
            panel_gemm(B, 4 * H, panels, lanes, dpre + t * B * 4 * H, 4 * H, packed, rec, width)
    hand_back(rec, width, dh0, B, H, j0, n, active, packed)


cdef object lstm_forward_team(const floating* xw, Py_ssize_t xw_row, const floating* w_x, Py_ssize_t lead,
                              const floating* w_hh, const floating* first, Py_ssize_t first_row, const floating* c0,
                              floating* hs, Py_ssize_t hs_step, Py_ssize_t hs_row, Py_ssize_t T,
                              Py_ssize_t B, Py_ssize_t H, str op):
    """(cs, gates) of both LSTM forwards: lstm_forward_share on the team (its arguments)."""
    dtype = np.float32 if floating is float else np.float64
    cs_out = np.empty((T, B, H), dtype=dtype)
    gates_out = np.empty((T, B, 4 * H), dtype=dtype)
    if T == 0 or B == 0 or H == 0:    # (the callers' pointers were never read)
        return cs_out, gates_out
    cdef floating[:, :, ::1] cs = cs_out, gates = gates_out
    cdef int failed = 0
    with nogil, parallel(num_threads=_threads):
        lstm_forward_share(xw, xw_row, w_x, lead, w_hh, first, first_row, c0, hs, hs_step, hs_row,
                           &cs[0, 0, 0], &gates[0, 0, 0], T, B, H, &failed)
    if failed:
        raise MemoryError(f"{op}: out of memory for the packed weights")
    return cs_out, gates_out


def lstm_forward(const floating[:, :, ::1] xw, const floating[:, ::1] w_hh,
                 const floating[:, ::1] h0, const floating[:, ::1] c0, floating[:, :, :] hs):
    """(cs, gates), filling hs (T, B, H), whose rows have unit stride (the wrapper checks it)."""
    cdef Py_ssize_t T = xw.shape[0], B = xw.shape[1], H = h0.shape[1]
    return lstm_forward_team(&xw[0, 0, 0], 4 * H, NULL, 0, &w_hh[0, 0], &h0[0, 0], H, &c0[0, 0], &hs[0, 0, 0],
                             hs.strides[0] // sizeof(floating), hs.strides[1] // sizeof(floating), T, B, H,
                             "lstm_forward")


def lstm_forward_xh(floating[:, :, ::1] xh, const floating[:, ::1] w_x, const floating[:, ::1] w_hh,
                    const floating[:, ::1] c0):
    """(cs, gates) for xh (T+1, B, K+H) holding [x_t | 1 | ...] in row t's first K columns and h0
    in row 0's last H, w_x = [W_ih | b] (4H, K) and w_hh (4H, H): writes h_t into row t+1's
    last H.  The cell adds a row of zeros where lstm_forward adds xw."""
    cdef Py_ssize_t T = xh.shape[0] - 1, B = xh.shape[1], H = c0.shape[1]
    cdef Py_ssize_t width = xh.shape[2], lead = width - H
    cdef floating[::1] no_xw = np.zeros(4 * H, dtype=np.float32 if floating is float else np.float64)
    return lstm_forward_team(&no_xw[0], 0, &w_x[0, 0], lead, &w_hh[0, 0], &xh[0, 0, 0], width, &c0[0, 0],
                             &xh[1, 0, lead], B * width, width, T, B, H, "lstm_forward_xh")


def lstm_backward(const floating[:, :, ::1] dhs, const floating[:, ::1] dcT,
                  const floating[:, ::1] w_hh, const floating[:, ::1] h0,
                  const floating[:, ::1] c0, const floating[:, :, ::1] cs,
                  const floating[:, :, ::1] gates):
    """(dpre, dh0, dc0).  hs is not needed: dL/da_t comes from the gates and c alone."""
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
    with nogil, parallel(num_threads=_threads):
        lstm_backward_share(&dhs[0, 0, 0], &w_hh[0, 0], &c0[0, 0], &cs[0, 0, 0], &gates[0, 0, 0],
                            &dpre[0, 0, 0], &dh[0, 0], &dc[0, 0], T, B, H, &failed)
    if failed:
        raise MemoryError("lstm_backward: out of memory for the packed recurrent weights")
    return dpre_out, dh_out, dc_out


# ----------------------------------------------------------------------------- GRU
# gate order r, z, n: hh = h_{t-1} W_hh^T + b_hh,  n = tanh(xw_n + r*hh_n),
# h_t = (1-z)*n + z*h_{t-1}

cdef inline void gru_cell_forward(const floating* a, const floating* xw, const floating* b_hh,
                                  const floating* h_prev, floating* h, floating* gate,
                                  floating* hn, Py_ssize_t n, Py_ssize_t H) noexcept nogil:
    """One batch row, units j0..j0+n (pointers but `a` offset by j0): a (3n) holds this slice
    of h_{t-1} W_hh^T gate by gate; b_hh is added here, not by the GEMM."""
    cdef Py_ssize_t j
    cdef floating r, z, hh_n, n_j
    for j in range(n):
        r = sigmoid(xw[j] + a[j] + b_hh[j])
        z = sigmoid(xw[H + j] + a[n + j] + b_hh[H + j])
        hh_n = a[2 * n + j] + b_hh[2 * H + j]
        n_j = tanh_(xw[2 * H + j] + r * hh_n)
        h[j] = n_j + z * (h_prev[j] - n_j)
        gate[j] = r
        gate[H + j] = z
        gate[2 * H + j] = n_j
        hn[j] = hh_n


cdef void gru_forward_share(const floating* xw, const floating* w_hh, const floating* b_hh,
                            const floating* h0, floating* hs, floating* gates, floating* hn,
                            Py_ssize_t T, Py_ssize_t B, Py_ssize_t H, int* failed) noexcept nogil:
    """h_t, the gates r, z, n and hn_t = (h_{t-1} W_hh^T + b_hh)_n of this thread's units, step
    by step; the GEMM leaves b_hh to the cell (r multiplies only the n part of it)."""
    cdef Py_ssize_t j0, n, panels, lanes, width, t, b
    cdef floating* packed
    cdef floating* a
    cdef bint active = take_share(NULL, 0, w_hh, H, 3, B, False, &j0, &n, &panels, &lanes, &width, &packed, &a, failed)
    cdef const floating* h_prev
    for t in range(T):
        if active:
            h_prev = h0 if t == 0 else hs + (t - 1) * B * H
            panel_gemm(B, H, panels, lanes, h_prev, H, packed, a, width)
            for b in range(B):
                gru_cell_forward(a + b * width, xw + (t * B + b) * 3 * H + j0, b_hh + j0,
                                 h_prev + b * H + j0, hs + (t * B + b) * H + j0,
                                 gates + (t * B + b) * 3 * H + j0, hn + (t * B + b) * H + j0, n, H)
        barrier()  # h_t complete before any thread multiplies it by W_hh
    free(packed)
    free(a)


cdef inline void gru_cell_backward(const floating* up, floating* direct, const floating* rec,
                                   const floating* gate, const floating* h_prev,
                                   const floating* hn, floating* dxw, floating* dhh,
                                   Py_ssize_t n, Py_ssize_t H) noexcept nogil:
    """One batch row, units j0..j0+n (pointers but `rec` offset by j0): dL/dh_t = up (from
    above) + direct (z * dL/dh_{t+1}) + rec (dhh_{t+1} W_hh); writes dxw_t and dhh_t (3H wide)
    and leaves in `direct` the z-path part of dL/dh_{t-1}."""
    cdef Py_ssize_t j
    cdef floating r, z, n_j, d, da_n, da_r, da_z, one = 1
    for j in range(n):
        r = gate[j]
        z = gate[H + j]
        n_j = gate[2 * H + j]
        d = up[j] + direct[j] + rec[j]
        da_n = d * (one - z) * (one - n_j * n_j)
        da_r = da_n * hn[j] * r * (one - r)
        da_z = d * (h_prev[j] - n_j) * z * (one - z)
        dxw[j] = da_r
        dxw[H + j] = da_z
        dxw[2 * H + j] = da_n
        dhh[j] = da_r
        dhh[H + j] = da_z
        dhh[2 * H + j] = da_n * r
        direct[j] = d * z


cdef void gru_backward_share(const floating* dhs, const floating* w_hh, const floating* h0,
                             const floating* hs, const floating* gates, const floating* hn,
                             floating* dxw, floating* dhh, floating* dh0, Py_ssize_t T,
                             Py_ssize_t B, Py_ssize_t H, int* failed) noexcept nogil:
    """dxw_t, dhh_t for this thread's units, and their columns of dL/dh_{t-1}
    = z * dL/dh_t + dhh_t W_hh."""
    cdef Py_ssize_t j0, n, panels, lanes, width, t, b, j
    cdef floating* packed
    cdef floating* rec   # dhh_{t+1} W_hh, own columns
    cdef bint active = take_share(NULL, 0, w_hh, H, 3, B, True, &j0, &n, &panels, &lanes, &width, &packed, &rec, failed)
    cdef floating* direct = scratch(dhs, B * n, failed)        # z_{t+1} * dL/dh_{t+1}
    cdef const floating* h_prev
    active = active and direct != NULL
    if active:
        memset(direct, 0, B * n * sizeof(floating))
    for t in range(T - 1, -1, -1):
        if active:
            h_prev = h0 if t == 0 else hs + (t - 1) * B * H
            for b in range(B):
                gru_cell_backward(dhs + (t * B + b) * H + j0, direct + b * n, rec + b * width,
                                  gates + (t * B + b) * 3 * H + j0, h_prev + b * H + j0,
                                  hn + (t * B + b) * H + j0, dxw + (t * B + b) * 3 * H + j0,
                                  dhh + (t * B + b) * 3 * H + j0, n, H)
        barrier()  # dhh_t complete before any thread multiplies it by W_hh
        if active:
            panel_gemm(B, 3 * H, panels, lanes, dhh + t * B * 3 * H, 3 * H, packed, rec, width)
    if active:
        for b in range(B):
            for j in range(n):
                dh0[b * H + j0 + j] = direct[b * n + j] + rec[b * width + j]
    free(packed)
    free(rec)
    free(direct)


def gru_forward(const floating[:, :, ::1] xw, const floating[:, ::1] w_hh,
                const floating[::1] b_hh, const floating[:, ::1] h0):
    cdef Py_ssize_t T = xw.shape[0], B = xw.shape[1], H = h0.shape[1]
    dtype = np.float32 if floating is float else np.float64
    hs_out = np.empty((T, B, H), dtype=dtype)
    gates_out = np.empty((T, B, 3 * H), dtype=dtype)
    hn_out = np.empty((T, B, H), dtype=dtype)
    if T == 0 or B == 0 or H == 0:
        return hs_out, gates_out, hn_out
    cdef floating[:, :, ::1] hs = hs_out, gates = gates_out, hn = hn_out
    cdef int failed = 0
    with nogil, parallel(num_threads=_threads):
        gru_forward_share(&xw[0, 0, 0], &w_hh[0, 0], &b_hh[0], &h0[0, 0], &hs[0, 0, 0],
                          &gates[0, 0, 0], &hn[0, 0, 0], T, B, H, &failed)
    if failed:
        raise MemoryError("gru_forward: out of memory for the packed recurrent weights")
    return hs_out, gates_out, hn_out


def gru_backward(const floating[:, :, ::1] dhs, const floating[:, ::1] w_hh,
                 const floating[:, ::1] h0, const floating[:, :, ::1] hs,
                 const floating[:, :, ::1] gates, const floating[:, :, ::1] hn):
    cdef Py_ssize_t T = dhs.shape[0], B = dhs.shape[1], H = dhs.shape[2]
    dtype = np.float32 if floating is float else np.float64
    dxw_out = np.empty((T, B, 3 * H), dtype=dtype)
    dhh_out = np.empty((T, B, 3 * H), dtype=dtype)
    dh_out = np.zeros((B, H), dtype=dtype)            # becomes dh0
    if T == 0 or B == 0 or H == 0:
        return dxw_out, dhh_out, dh_out
    cdef floating[:, :, ::1] dxw = dxw_out, dhh = dhh_out
    cdef floating[:, ::1] dh = dh_out
    cdef int failed = 0
    with nogil, parallel(num_threads=_threads):
        gru_backward_share(&dhs[0, 0, 0], &w_hh[0, 0], &h0[0, 0], &hs[0, 0, 0], &gates[0, 0, 0],
                           &hn[0, 0, 0], &dxw[0, 0, 0], &dhh[0, 0, 0], &dh[0, 0], T, B, H, &failed)
    if failed:
        raise MemoryError("gru_backward: out of memory for the packed recurrent weights")
    return dxw_out, dhh_out, dh_out
