"""Whole-sequence RNN / LSTM / GRU forward and backward, CUDA backend (time-major).

Each time step is one recurrent GEMM through `xp.matmul` (cuBLAS on CuPy) and one fused
@cuda.jit kernel for everything element-wise in that step, with one thread per (b, j):

    forward   rec = h_{t-1} @ W_hh^T            then  gates, c_t, h_t  (one kernel)
    backward  dpre_t from dh_t and the state    then  dh_{t-1} += dpre_t @ W_hh

so a step costs two launches however many gates there are.  The kernels take the
whole (T, B, .) arrays and the step t, which lets them read h_{t-1} (h0 at t = 0)
without slicing per step.  Equations, gate orders (LSTM i,f,g,o; GRU r,z,n) and what
is saved for backward are those of kernels/API.md and the reference, and so are the
argument checks and their messages (`check_rnn_args` etc., imported from the reference).

Float constants in kernels are made with `arr.dtype.type(...)`: a bare 1.0 is a float64
literal and would turn float32 arithmetic into float64.
"""
import math

from numba import cuda

from tinygrad_seq.device import xp_of
from tinygrad_seq.kernels.reference.recurrence import check_gru_args, check_lstm_args, check_rnn_args

from ._launch import kernel_arg, launch


# ----------------------------------------------------------------------------- device helpers

@cuda.jit(device=True, cache=True)
def _sigmoid(a, one):
    """σ(a) = 1 / (1 + e^-a); `one` is 1 in a's float type.  e^-a overflowing gives σ = 0, not NaN."""
    return one / (one + math.exp(-a))


# ----------------------------------------------------------------------------- plain RNN

@cuda.jit(cache=True)
def _rnn_step(xw, rec, hs, t, relu):
    """hs[t] = act(xw[t] + rec),  rec = h_{t-1} W_hh^T."""
    T, B, H = hs.shape
    zero = hs.dtype.type(0)
    for k in range(cuda.grid(1), B * H, cuda.gridsize(1)):
        b = k // H
        j = k % H
        a = xw[t, b, j] + rec[b, j]
        if relu:
            hs[t, b, j] = a if a > zero else zero
        else:
            hs[t, b, j] = math.tanh(a)


@cuda.jit(cache=True)
def _rnn_grad_step(dhs, dh_rec, hs, dpre, t, relu):
    """dpre[t] = (dhs[t] + dh_rec) * act'(a_t), with act' read off h_t:
    tanh' = 1 - h^2, relu' = [h > 0];  dh_rec = dpre[t+1] W_hh (0 at t = T-1)."""
    T, B, H = hs.shape
    one = hs.dtype.type(1)
    zero = hs.dtype.type(0)
    for k in range(cuda.grid(1), B * H, cuda.gridsize(1)):
        b = k // H
        j = k % H
        h = hs[t, b, j]
        dh = dhs[t, b, j] + dh_rec[b, j]
        if relu:
            dpre[t, b, j] = dh if h > zero else zero
        else:
            dpre[t, b, j] = dh * (one - h * h)


def rnn_forward(xw, w_hh, h0, nonlinearity):
    """hs (T, B, H): h_t = act(xw_t + h_{t-1} W_hh^T), act = tanh or relu."""
    xp = xp_of(xw)
    T, B, H = check_rnn_args("rnn_forward", xw, w_hh, h0, nonlinearity)
    relu = nonlinearity == "relu"
    hs = xp.empty((T, B, H), dtype=xw.dtype)
    rec = xp.empty((B, H), dtype=xw.dtype)
    k_xw, k_rec, k_hs = kernel_arg(xw), kernel_arg(rec), kernel_arg(hs)
    for t in range(T):
        xp.matmul(h0 if t == 0 else hs[t - 1], w_hh.T, out=rec)
        launch(_rnn_step, B * H, k_xw, k_rec, k_hs, t, relu)
    return hs


def rnn_backward(dhs, w_hh, h0, hs, nonlinearity):
    """(dpre, dh0): dpre_t = (dhs_t + dpre_{t+1} W_hh) * act'(a_t), dh0 = dpre_0 W_hh."""
    xp = xp_of(dhs)
    T, B, H = check_rnn_args("rnn_backward", dhs, w_hh, h0, nonlinearity, hs=hs)
    relu = nonlinearity == "relu"
    dpre = xp.empty((T, B, H), dtype=hs.dtype)
    dh_rec = xp.zeros((B, H), dtype=hs.dtype)      # dL/dh_t through h_{t+1}; none after the end
    k_dhs, k_rec, k_hs, k_dpre = kernel_arg(dhs), kernel_arg(dh_rec), kernel_arg(hs), kernel_arg(dpre)
    for t in range(T - 1, -1, -1):
        launch(_rnn_grad_step, B * H, k_dhs, k_rec, k_hs, k_dpre, t, relu)
        xp.matmul(dpre[t], w_hh, out=dh_rec)
    return dpre, dh_rec


# ----------------------------------------------------------------------------- LSTM

@cuda.jit(cache=True)
def _lstm_step(xw, rec, c0, cs, hs, gates, t):
    """a = xw[t] + rec (rec = h_{t-1} W_hh^T, columns i,f,g,o);
    i,f,o = σ(a_i,a_f,a_o), g = tanh(a_g);  c_t = f c_{t-1} + i g;  h_t = o tanh(c_t)."""
    T, B, H = hs.shape
    one = hs.dtype.type(1)
    for k in range(cuda.grid(1), B * H, cuda.gridsize(1)):
        b = k // H
        j = k % H
        i = _sigmoid(xw[t, b, j] + rec[b, j], one)
        f = _sigmoid(xw[t, b, H + j] + rec[b, H + j], one)
        g = math.tanh(xw[t, b, 2 * H + j] + rec[b, 2 * H + j])
        o = _sigmoid(xw[t, b, 3 * H + j] + rec[b, 3 * H + j], one)
        c_prev = c0[b, j] if t == 0 else cs[t - 1, b, j]
        c = f * c_prev + i * g
        cs[t, b, j] = c
        hs[t, b, j] = o * math.tanh(c)
        gates[t, b, j] = i
        gates[t, b, H + j] = f
        gates[t, b, 2 * H + j] = g
        gates[t, b, 3 * H + j] = o


@cuda.jit(cache=True)
def _lstm_grad_step(dhs, dh_rec, dc, c0, cs, gates, dpre, t):
    """From dh_t = dhs[t] + dh_rec and the carried dc (= dL/dc_t through c_{t+1}):

        dc_t = dc + dh_t o (1 - tanh²c_t)
        dpre_i = dc_t g i(1-i)   dpre_f = dc_t c_{t-1} f(1-f)
        dpre_g = dc_t i (1-g²)   dpre_o = dh_t tanh(c_t) o(1-o)
        dc <- dc_t f             (dL/dc_{t-1}, updated in place)
    """
    T, B, H = cs.shape
    one = cs.dtype.type(1)
    for k in range(cuda.grid(1), B * H, cuda.gridsize(1)):
        b = k // H
        j = k % H
        i = gates[t, b, j]
        f = gates[t, b, H + j]
        g = gates[t, b, 2 * H + j]
        o = gates[t, b, 3 * H + j]
        c_prev = c0[b, j] if t == 0 else cs[t - 1, b, j]
        tanh_c = math.tanh(cs[t, b, j])
        dh = dhs[t, b, j] + dh_rec[b, j]
        dc_t = dc[b, j] + dh * o * (one - tanh_c * tanh_c)
        dpre[t, b, j] = dc_t * g * i * (one - i)
        dpre[t, b, H + j] = dc_t * c_prev * f * (one - f)
        dpre[t, b, 2 * H + j] = dc_t * i * (one - g * g)
        dpre[t, b, 3 * H + j] = dh * tanh_c * o * (one - o)
        dc[b, j] = dc_t * f


def lstm_forward(xw, w_hh, h0, c0):
    """(hs, cs, gates): hidden and cell states (T, B, H) and the activated i,f,g,o (T, B, 4H)."""
    xp = xp_of(xw)
    T, B, H = check_lstm_args("lstm_forward", xw, w_hh, h0, c0)
    hs = xp.empty((T, B, H), dtype=xw.dtype)
    cs = xp.empty((T, B, H), dtype=xw.dtype)
    gates = xp.empty((T, B, 4 * H), dtype=xw.dtype)
    rec = xp.empty((B, 4 * H), dtype=xw.dtype)
    args = [kernel_arg(a) for a in (xw, rec, c0, cs, hs, gates)]
    for t in range(T):
        xp.matmul(h0 if t == 0 else hs[t - 1], w_hh.T, out=rec)
        launch(_lstm_step, B * H, *args, t)
    return hs, cs, gates


def lstm_backward(dhs, dcT, w_hh, h0, c0, hs, cs, gates):
    """(dpre, dh0, dc0): dpre (T, B, 4H) = dL/da_t, walking t = T-1 .. 0."""
    xp = xp_of(dhs)
    T, B, H = check_lstm_args("lstm_backward", dhs, w_hh, h0, c0, dcT=dcT, hs=hs, cs=cs, gates=gates)
    dpre = xp.empty((T, B, 4 * H), dtype=hs.dtype)
    dh_rec = xp.zeros((B, H), dtype=hs.dtype)      # dL/dh_t through the gates of step t+1
    dc = xp.array(dcT, dtype=hs.dtype)             # dL/dc_t, carried backwards (a fresh copy)
    args = [kernel_arg(a) for a in (dhs, dh_rec, dc, c0, cs, gates, dpre)]
    for t in range(T - 1, -1, -1):
        launch(_lstm_grad_step, B * H, *args, t)
        xp.matmul(dpre[t], w_hh, out=dh_rec)
    return dpre, dh_rec, dc


# ----------------------------------------------------------------------------- GRU

@cuda.jit(cache=True)
def _gru_step(xw, rec, b_hh, h0, hs, gates, hn, t):
    """hh = rec + b_hh (rec = h_{t-1} W_hh^T, columns r,z,n);
    r = σ(xw_r + hh_r), z = σ(xw_z + hh_z), n = tanh(xw_n + r hh_n), h_t = (1-z) n + z h_{t-1}."""
    T, B, H = hs.shape
    one = hs.dtype.type(1)
    for k in range(cuda.grid(1), B * H, cuda.gridsize(1)):
        b = k // H
        j = k % H
        r = _sigmoid(xw[t, b, j] + rec[b, j] + b_hh[j], one)
        z = _sigmoid(xw[t, b, H + j] + rec[b, H + j] + b_hh[H + j], one)
        hh_n = rec[b, 2 * H + j] + b_hh[2 * H + j]
        n = math.tanh(xw[t, b, 2 * H + j] + r * hh_n)
        h_prev = h0[b, j] if t == 0 else hs[t - 1, b, j]
        hs[t, b, j] = (one - z) * n + z * h_prev
        gates[t, b, j] = r
        gates[t, b, H + j] = z
        gates[t, b, 2 * H + j] = n
        hn[t, b, j] = hh_n


@cuda.jit(cache=True)
def _gru_grad_step(dhs, dh_rec, dh_direct, h0, hs, gates, hn, dxw, dhh, t):
    """From dh_t = dhs[t] + dh_rec + dh_direct (dh_rec = dhh[t+1] W_hh, dh_direct = dh_{t+1} z_{t+1}):

        dn = dh_t (1-z) (1-n²)          -> dxw_n = dn,          dhh_n = dn r
        dr = dn hh_n r(1-r)             -> dxw_r = dhh_r = dr
        dz = dh_t (h_{t-1} - n) z(1-z)  -> dxw_z = dhh_z = dz
        dh_direct <- dh_t z             (the path h_{t-1} -> h_t, updated in place)
    """
    T, B, H = hs.shape
    one = hs.dtype.type(1)
    for k in range(cuda.grid(1), B * H, cuda.gridsize(1)):
        b = k // H
        j = k % H
        r = gates[t, b, j]
        z = gates[t, b, H + j]
        n = gates[t, b, 2 * H + j]
        h_prev = h0[b, j] if t == 0 else hs[t - 1, b, j]
        dh = dhs[t, b, j] + dh_rec[b, j] + dh_direct[b, j]
        dn = dh * (one - z) * (one - n * n)
        dr = dn * hn[t, b, j] * r * (one - r)
        dz = dh * (h_prev - n) * z * (one - z)
        dxw[t, b, j] = dr
        dxw[t, b, H + j] = dz
        dxw[t, b, 2 * H + j] = dn
        dhh[t, b, j] = dr
        dhh[t, b, H + j] = dz
        dhh[t, b, 2 * H + j] = dn * r
        dh_direct[b, j] = dh * z


def gru_forward(xw, w_hh, b_hh, h0):
    """(hs, gates, hn): states (T, B, H), activated r,z,n (T, B, 3H), hh_n (T, B, H)."""
    xp = xp_of(xw)
    T, B, H = check_gru_args("gru_forward", xw, w_hh, h0, b_hh=b_hh)
    hs = xp.empty((T, B, H), dtype=xw.dtype)
    gates = xp.empty((T, B, 3 * H), dtype=xw.dtype)
    hn = xp.empty((T, B, H), dtype=xw.dtype)
    rec = xp.empty((B, 3 * H), dtype=xw.dtype)
    args = [kernel_arg(a) for a in (xw, rec, b_hh, h0, hs, gates, hn)]
    for t in range(T):
        xp.matmul(h0 if t == 0 else hs[t - 1], w_hh.T, out=rec)
        launch(_gru_step, B * H, *args, t)
    return hs, gates, hn


def gru_backward(dhs, w_hh, h0, hs, gates, hn):
    """(dxw, dhh, dh0): dL/dxw (T, B, 3H), dL/dhh (T, B, 3H), dL/dh0 (B, H)."""
    xp = xp_of(dhs)
    T, B, H = check_gru_args("gru_backward", dhs, w_hh, h0, hs=hs, gates=gates, hn=hn)
    dxw = xp.empty((T, B, 3 * H), dtype=hs.dtype)
    dhh = xp.empty((T, B, 3 * H), dtype=hs.dtype)
    dh_rec = xp.zeros((B, H), dtype=hs.dtype)
    dh_direct = xp.zeros((B, H), dtype=hs.dtype)
    args = [kernel_arg(a) for a in (dhs, dh_rec, dh_direct, h0, hs, gates, hn, dxw, dhh)]
    for t in range(T - 1, -1, -1):
        launch(_gru_grad_step, B * H, *args, t)
        xp.matmul(dhh[t], w_hh, out=dh_rec)
    return dxw, dhh, dh_rec + dh_direct
