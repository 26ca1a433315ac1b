"""Recurrence kernels (RNN, LSTM, GRU time loops) compiled with Numba.

Same functions, arguments, equations and ValueError messages as
`tinygrad_seq.kernels.reference.recurrence` (read its docstring for the maths); each public
function checks its arguments with the reference's checks, allocates the outputs and hands the
whole time loop to ONE compiled call, so Python runs once per sequence, not once per step.

Inside a step:
  * the recurrent GEMM is `np.dot` with an output array, which Numba lowers to a BLAS sgemm/dgemm
    call (SciPy's OpenBLAS) with no allocation.  The forward multiplies by a row-major copy of
    W_hh^T made once per call: the "NN" product is ~1.5x faster than "NT" at these shapes.
  * the gate arithmetic is one pass over each batch row, written as plain loops over the hidden
    units that LLVM vectorises (AVX2/AVX-512), with the vectorisable exp/sigmoid/tanh of
    `_fastmath` (libm calls would block vectorisation and cost ~10x).

Compilation flags: `error_model="numpy"` (Python's would add a ZeroDivisionError branch to every
division, which stops vectorisation) and `fastmath={"contract"}` (a*b+c may become one FMA,
which only adds precision; no reassociation or finite-math assumptions).  The loops are
serial on purpose: OpenBLAS already spreads each step's GEMM over the cores, and a parallel
region per step would cost more than the gate arithmetic it splits (measured when these kernels
were written; that script is not kept: bench/bench_cython_kernels.py times every backend now).
"""
import numpy as np
from numba import njit

from tinygrad_seq.kernels.reference.recurrence import (check_gru_args, check_lstm_args, check_rnn_args,
                                                       projecting_first, states_out)

from ._fastmath import one_of, sigmoid, tanh, zero_of

_JIT = dict(cache=True, error_model="numpy", fastmath={"contract"})


def _state(a):
    """A C-contiguous, aligned, writeable array: h0/c0 then type the same as a row of hs/cs
    inside the kernel, so one variable can hold either (the kernel never writes to it)."""
    return np.require(a, requirements=("C", "A", "W"))


# ----------------------------------------------------------------------------- RNN

@njit(**_JIT)
def _rnn_forward(xw, w, h0, relu, hs):
    T, B, H = xw.shape
    zero = zero_of(xw)
    h_prev = h0
    for t in range(T):
        h = hs[t]
        np.dot(h_prev, w, h)
        for b in range(B):
            hb, xb = h[b], xw[t, b]
            if relu:
                for j in range(H):
                    hb[j] = max(hb[j] + xb[j], zero)
            else:
                for j in range(H):
                    hb[j] = tanh(hb[j] + xb[j])
        h_prev = h


@njit(**_JIT)
def _rnn_backward(dhs, w_hh, hs, relu, dpre, dh):
    """dh (B,H) holds dL/dh from the step above (the recurrent part); ends as dh0."""
    T, B, H = dhs.shape
    zero, one = zero_of(dhs), one_of(dhs)
    dh[:] = 0
    for t in range(T - 1, -1, -1):
        for b in range(B):
            d, up, rec, h = dpre[t, b], dhs[t, b], dh[b], hs[t, b]
            if relu:
                for j in range(H):
                    d[j] = (up[j] + rec[j]) * (one if h[j] > zero else zero)   # as the reference: keeps NaN/inf
            else:
                for j in range(H):
                    d[j] = (up[j] + rec[j]) * (one - h[j] * h[j])
        np.dot(dpre[t], w_hh, dh)


def rnn_forward(xw, w_hh, h0, nonlinearity, *, hs_out=None):
    """hs[t] = act(xw[t] + hs[t-1] W_hh^T), hs[-1] = h0; act = tanh or relu.  A given hs_out gets a
    copy: the compiled loop is typed for C-contiguous arrays."""
    T, B, H = check_rnn_args("rnn_forward", xw, w_hh, h0, nonlinearity)
    out = states_out("rnn_forward", hs_out, xw, T, B, H)
    hs = out if out.flags.c_contiguous else np.empty((T, B, H), dtype=xw.dtype)
    _rnn_forward(xw, np.ascontiguousarray(w_hh.T), _state(h0), nonlinearity == "relu", hs)
    if hs is not out:
        out[...] = hs
    return out


def rnn_backward(dhs, w_hh, h0, hs, nonlinearity):
    """dpre[t] = (dhs[t] + dpre[t+1] W_hh) * act'(t);  dh0 = dpre[0] W_hh."""
    T, B, H = check_rnn_args("rnn_backward", dhs, w_hh, h0, nonlinearity, hs=hs)
    hs = np.ascontiguousarray(hs)   # a forward's hs_out may be strided
    dpre = np.empty_like(dhs)
    dh0 = np.empty((B, H), dtype=dhs.dtype)
    _rnn_backward(dhs, w_hh, hs, nonlinearity == "relu", dpre, dh0)
    return dpre, dh0


# ----------------------------------------------------------------------------- LSTM

@njit(**_JIT)
def _lstm_cell_forward(a, x, c_prev, c, h):
    """One batch row: a (4H) holds h_prev W_hh^T on entry and the activated i, f, g, o on exit."""
    H = c.shape[0]
    a_i, a_f, a_g, a_o = a[:H], a[H:2 * H], a[2 * H:3 * H], a[3 * H:]
    x_i, x_f, x_g, x_o = x[:H], x[H:2 * H], x[2 * H:3 * H], x[3 * H:]
    for j in range(H):
        i = sigmoid(a_i[j] + x_i[j])
        f = sigmoid(a_f[j] + x_f[j])
        g = tanh(a_g[j] + x_g[j])
        o = sigmoid(a_o[j] + x_o[j])
        c_j = f * c_prev[j] + i * g
        a_i[j], a_f[j], a_g[j], a_o[j] = i, f, g, o
        c[j] = c_j
        h[j] = o * tanh(c_j)


@njit(**_JIT)
def _lstm_forward(xw, w, h0, c0, hs, cs, gates):
    T, B, _ = xw.shape
    h_prev, c_prev = h0, c0
    for t in range(T):
        np.dot(h_prev, w, gates[t])
        for b in range(B):
            _lstm_cell_forward(gates[t, b], xw[t, b], c_prev[b], cs[t, b], hs[t, b])
        h_prev, c_prev = hs[t], cs[t]


@njit(**_JIT)
def _lstm_cell_backward(up, rec, gate, c, c_prev, dc, d):
    """One batch row: dh = up + rec; dc (H) carries dL/dc from step t+1 in and to step t-1 out;
    d (4H) receives dL/da."""
    H = c.shape[0]
    one = one_of(c)
    g_i, g_f, g_g, g_o = gate[:H], gate[H:2 * H], gate[2 * H:3 * H], gate[3 * H:]
    d_i, d_f, d_g, d_o = d[:H], d[H:2 * H], d[2 * H:3 * H], d[3 * H:]
    for j in range(H):
        i, f, g, o = g_i[j], g_f[j], g_g[j], g_o[j]
        dh = up[j] + rec[j]
        tanh_c = tanh(c[j])
        dc_j = dc[j] + dh * o * (one - tanh_c * tanh_c)
        d_i[j] = dc_j * g * i * (one - i)
        d_f[j] = dc_j * c_prev[j] * f * (one - f)
        d_g[j] = dc_j * i * (one - g * g)
        d_o[j] = dh * tanh_c * o * (one - o)
        dc[j] = dc_j * f


@njit(**_JIT)
def _lstm_backward(dhs, w_hh, c0, cs, gates, dpre, dh, dc):
    """dh (B,H): recurrent dL/dh, ends as dh0; dc (B,H): dL/dc_T in, dc0 out."""
    T, B, _ = dhs.shape
    dh[:] = 0
    for t in range(T - 1, -1, -1):
        c_prev = cs[t - 1] if t > 0 else c0
        for b in range(B):
            _lstm_cell_backward(dhs[t, b], dh[b], gates[t, b], cs[t, b], c_prev[b], dc[b], dpre[t, b])
        np.dot(dpre[t], w_hh, dh)


def lstm_forward(xw, w_hh, h0, c0, *, hs_out=None):
    """One LSTM layer over the sequence -> hs, cs (T,B,H), activated gates i,f,g,o (T,B,4H).  A
    given hs_out gets a copy of hs: the compiled loop is typed for C-contiguous arrays."""
    T, B, H = check_lstm_args("lstm_forward", xw, w_hh, h0, c0)
    out = states_out("lstm_forward", hs_out, xw, T, B, H)
    hs = out if out.flags.c_contiguous else np.empty((T, B, H), dtype=xw.dtype)
    cs = np.empty((T, B, H), dtype=xw.dtype)
    gates = np.empty((T, B, 4 * H), dtype=xw.dtype)
    _lstm_forward(xw, np.ascontiguousarray(w_hh.T), _state(h0), _state(c0), hs, cs, gates)
    if hs is not out:
        out[...] = hs
    return out, cs, gates


def lstm_forward_xh(xh, w_x, w_hh, c0):
    """(cs, gates) of lstm_forward on the engine's rows [x_t | 1 | h_{t-1}] (kernels/API.md): the
    inputs projected by one GEMM first, then lstm_forward above."""
    return projecting_first(lstm_forward, xh, w_x, w_hh, c0)


def lstm_backward(dhs, dcT, w_hh, h0, c0, hs, cs, gates):
    """dpre (T,B,4H) = dL/da_t, dh0, dc0 by backpropagation through time."""
    T, B, H = check_lstm_args("lstm_backward", dhs, w_hh, h0, c0, dcT=dcT, hs=hs, cs=cs, gates=gates)
    dpre = np.empty((T, B, 4 * H), dtype=dhs.dtype)
    dh0 = np.empty((B, H), dtype=dhs.dtype)
    dc0 = np.array(dcT, dtype=dhs.dtype, order="C", copy=True)
    _lstm_backward(dhs, w_hh, _state(c0), cs, gates, dpre, dh0, dc0)
    return dpre, dh0, dc0


# ----------------------------------------------------------------------------- GRU

@njit(**_JIT)
def _gru_cell_forward(x, hh, b_hh, h_prev, gate, hn, h):
    """One batch row: hh (3H) = h_prev W_hh^T on entry (b_hh is added here)."""
    H = h.shape[0]
    x_r, x_z, x_n = x[:H], x[H:2 * H], x[2 * H:]
    hh_r, hh_z, hh_n = hh[:H], hh[H:2 * H], hh[2 * H:]
    b_r, b_z, b_n = b_hh[:H], b_hh[H:2 * H], b_hh[2 * H:]
    g_r, g_z, g_n = gate[:H], gate[H:2 * H], gate[2 * H:]
    for j in range(H):
        r = sigmoid(x_r[j] + hh_r[j] + b_r[j])
        z = sigmoid(x_z[j] + hh_z[j] + b_z[j])
        hn_j = hh_n[j] + b_n[j]
        n = tanh(x_n[j] + r * hn_j)
        g_r[j], g_z[j], g_n[j] = r, z, n
        hn[j] = hn_j
        h[j] = n + z * (h_prev[j] - n)


@njit(**_JIT)
def _gru_forward(xw, w, b_hh, h0, hs, gates, hn):
    T, B, G = xw.shape
    hh = np.empty((B, G), dtype=xw.dtype)
    h_prev = h0
    for t in range(T):
        np.dot(h_prev, w, hh)
        for b in range(B):
            _gru_cell_forward(xw[t, b], hh[b], b_hh, h_prev[b], gates[t, b], hn[t, b], hs[t, b])
        h_prev = hs[t]


@njit(**_JIT)
def _gru_cell_backward(up, dh, gate, hn, h_prev, dx, dhh):
    """One batch row: dh (H) holds dL/dh_t minus dhs on entry, dL/dh_{t-1} minus the GEMM
    part on exit; dx, dhh (3H) receive dL/dxw and dL/dhh."""
    H = hn.shape[0]
    one = one_of(hn)
    g_r, g_z, g_n = gate[:H], gate[H:2 * H], gate[2 * H:]
    dx_r, dx_z, dx_n = dx[:H], dx[H:2 * H], dx[2 * H:]
    dhh_r, dhh_z, dhh_n = dhh[:H], dhh[H:2 * H], dhh[2 * H:]
    for j in range(H):
        r, z, n = g_r[j], g_z[j], g_n[j]
        d = up[j] + dh[j]
        da_n = d * (one - z) * (one - n * n)
        da_z = d * (h_prev[j] - n) * z * (one - z)
        da_r = da_n * hn[j] * r * (one - r)
        dx_r[j], dx_z[j], dx_n[j] = da_r, da_z, da_n
        dhh_r[j], dhh_z[j], dhh_n[j] = da_r, da_z, da_n * r
        dh[j] = d * z


@njit(**_JIT)
def _gru_backward(dhs, w_hh, h0, hs, gates, hn, dxw, dhh, dh):
    """dh (B,H): dL/dh from the step above, ends as dh0."""
    T, B, H = dhs.shape
    dh[:] = 0
    rec = np.empty((B, H), dtype=dhs.dtype)
    for t in range(T - 1, -1, -1):
        h_prev = hs[t - 1] if t > 0 else h0
        for b in range(B):
            _gru_cell_backward(dhs[t, b], dh[b], gates[t, b], hn[t, b], h_prev[b], dxw[t, b], dhh[t, b])
        np.dot(dhh[t], w_hh, rec)
        dh += rec


def gru_forward(xw, w_hh, b_hh, h0):
    """One GRU layer over the sequence -> hs (T,B,H), activated gates r,z,n (T,B,3H), hn (T,B,H)."""
    T, B, H = check_gru_args("gru_forward", xw, w_hh, h0, b_hh=b_hh)
    hs = np.empty((T, B, H), dtype=xw.dtype)
    gates = np.empty((T, B, 3 * H), dtype=xw.dtype)
    hn = np.empty_like(hs)
    _gru_forward(xw, np.ascontiguousarray(w_hh.T), b_hh, _state(h0), hs, gates, hn)
    return hs, gates, hn


def gru_backward(dhs, w_hh, h0, hs, gates, hn):
    """dxw, dhh (T,B,3H) and dh0 by backpropagation through time."""
    T, B, H = check_gru_args("gru_backward", dhs, w_hh, h0, hs=hs, gates=gates, hn=hn)
    dxw = np.empty((T, B, 3 * H), dtype=dhs.dtype)
    dhh = np.empty_like(dxw)
    dh0 = np.empty((B, H), dtype=dhs.dtype)
    _gru_backward(dhs, w_hh, _state(h0), hs, gates, hn, dxw, dhh, dh0)
    return dxw, dhh, dh0
