"""Whole-sequence RNN / LSTM / GRU forward and backward, CUDA backend (time-major).

Each time step is one recurrent GEMM through `xp.matmul` (cuBLAS on CuPy) and one fused
@cuda.jit kernel for everything element-wise in that step, with one thread per (b, j):

    forward   rec = h_{t-1} @ W_hh^T            then  gates, c_t, h_t  (one kernel)
    backward  dpre_t from dh_t and the state    then  dh_{t-1} += dpre_t @ W_hh

so a step costs two launches however many gates there are.  Equations, gate orders (LSTM
i,f,g,o; GRU r,z,n) and what is saved for backward are those of kernels/API.md and the
reference, and so are the argument checks and their messages (`check_rnn_args` etc.,
imported from the reference).

Launch cost: Numba's host-side cost per launch grows with the number of array arguments,
and at T = 128 a layer makes 256 launches per training step.  So each pass allocates one
flat `work` array and carves everything it writes (states, gates, gradients, the GEMM's
output, the carried dh/dc) into contiguous views of it, with the initial state copied in
as row 0 of the states (h_{t-1} is then states[t], no t == 0 branch).  A step kernel
takes the pass's inputs, `work` and t; its offsets into `work` follow the order of the
`_carve` call beside it.  The returned arrays are views of `work`.

Float constants in kernels are made with `arr.dtype.type(...)`: a bare 1.0 is a float64
literal and would turn float32 arithmetic into float64.
"""
import math

from numba import cuda

from tinygrad_seq.device import xp_of
from tinygrad_seq.kernels.reference.recurrence import (check_gru_args, check_lstm_args, check_rnn_args,
                                                       projecting_first, states_out)

from ._launch import step_launcher


def _carve(xp, dtype, *shapes):
    """(work, views): one flat array and contiguous views of it with `shapes`, in order."""
    sizes = [math.prod(shape) for shape in shapes]
    work = xp.empty(sum(sizes), dtype=dtype)
    views, start = [], 0
    for shape, size in zip(shapes, sizes):
        views.append(work[start:start + size].reshape(shape))
        start += size
    return work, views


# ----------------------------------------------------------------------------- device helpers

@cuda.jit(device=True, cache=True)
def _grad_layout(T, B, H, gates, big_arrays):
    """(G, BH, rec, carry, state0): G = gates*H, BH = B*H and the offsets in a backward step's
    work buffer, which holds `big_arrays` arrays (T, B, G) from 0, then three (B, H) ones: the
    gradient through W_hh from step t+1, the gradient carried past the GEMM, the initial state."""
    G = gates * H
    BH = B * H
    rec = big_arrays * T * B * G
    return G, BH, rec, rec + BH, rec + 2 * BH


@cuda.jit(device=True, cache=True)
def _sigmoid(a, one):
    """σ(a) = 1 / (1 + e^-a); `one` is 1 in a's float type.  e^-a overflowing gives σ = 0, not NaN."""
    return one / (one + math.exp(-a))


# ----------------------------------------------------------------------------- plain RNN

@cuda.jit(cache=True)
def _rnn_step(xw, work, t, relu):
    """h_t = act(xw[t] + rec),  rec = h_{t-1} W_hh^T.
    work: states (T+1, B, H) with h0 as row 0, then rec (B, H)."""
    T, B, H = xw.shape
    BH = B * H
    states = 0
    rec = (T + 1) * BH
    zero = work.dtype.type(0)
    for k in range(cuda.grid(1), BH, cuda.gridsize(1)):
        a = xw[t, k // H, k % H] + work[rec + k]
        if relu:
            # `a <= 0`, not `a > 0`: a NaN fails both tests and must come out as NaN
            work[states + (t + 1) * BH + k] = zero if a <= zero else a
        else:
            work[states + (t + 1) * BH + k] = math.tanh(a)


@cuda.jit(cache=True)
def _rnn_grad_step(dhs, hs, work, t, relu):
    """dpre[t] = (dhs[t] + dh_rec) * act'(a_t), with act' read off h_t:
    tanh' = 1 - h^2, relu' = [h > 0];  dh_rec = dpre[t+1] W_hh (0 at t = T-1).
    work: dpre (T, B, H), then dh_rec (B, H)."""
    T, B, H = hs.shape
    BH = B * H
    dpre = 0
    dh_rec = T * BH
    one = work.dtype.type(1)
    zero = work.dtype.type(0)
    for k in range(cuda.grid(1), BH, cuda.gridsize(1)):
        b = k // H
        j = k % H
        h = hs[t, b, j]
        dh = dhs[t, b, j] + work[dh_rec + k]
        if relu:
            # times relu' as the reference does: 0 * NaN and 0 * inf stay NaN
            work[dpre + t * BH + k] = dh * (one if h > zero else zero)
        else:
            work[dpre + t * BH + k] = dh * (one - h * h)


def rnn_forward(xw, w_hh, h0, nonlinearity, *, hs_out=None):
    """hs (T, B, H): h_t = act(xw_t + h_{t-1} W_hh^T), act = tanh or relu; copied into hs_out
    when given (the steps read h_{t-1} from their own work buffer)."""
    xp = xp_of(xw)
    T, B, H = check_rnn_args("rnn_forward", xw, w_hh, h0, nonlinearity)
    out = None if hs_out is None else states_out("rnn_forward", hs_out, xw, T, B, H)
    work, (states, rec) = _carve(xp, xw.dtype, (T + 1, B, H), (B, H))
    states[0] = h0
    step = step_launcher(_rnn_step, B * H, xw, work)
    relu = nonlinearity == "relu"
    w_hh_t = w_hh.T
    for t in range(T):
        xp.matmul(states[t], w_hh_t, out=rec)
        step(t, relu)
    if out is None:
        return states[1:]
    out[...] = states[1:]
    return out


def rnn_backward(dhs, w_hh, h0, hs, nonlinearity):
    """(dpre, dh0): dpre_t = (dhs_t + dpre_{t+1} W_hh) * act'(a_t), dh0 = dpre_0 W_hh."""
    xp = xp_of(dhs)
    T, B, H = check_rnn_args("rnn_backward", dhs, w_hh, h0, nonlinearity, hs=hs)
    hs = xp.ascontiguousarray(hs)   # a forward's hs_out may be strided
    work, (dpre, dh_rec) = _carve(xp, hs.dtype, (T, B, H), (B, H))
    dh_rec[...] = 0                                 # dL/dh_t through h_{t+1}; none after the end
    step = step_launcher(_rnn_grad_step, B * H, dhs, hs, work)
    relu = nonlinearity == "relu"
    for t in range(T - 1, -1, -1):
        step(t, relu)
        xp.matmul(dpre[t], w_hh, out=dh_rec)
    return dpre, dh_rec


# ----------------------------------------------------------------------------- LSTM

@cuda.jit(cache=True)
def _lstm_step(xw, work, t):
    """a = xw[t] + rec (rec = h_{t-1} W_hh^T, columns i,f,g,o);
    i,f,o = σ(a_i,a_f,a_o), g = tanh(a_g);  c_t = f c_{t-1} + i g;  h_t = o tanh(c_t).
    work: h states (T+1, B, H) with h0 as row 0, c states (T+1, B, H) with c0 as row 0,
    gates (T, B, 4H), rec (B, 4H)."""
    T, B, G = xw.shape
    H = G // 4
    BH = B * H
    hs = 0
    cs = (T + 1) * BH
    gates = 2 * (T + 1) * BH
    rec = gates + T * B * G
    one = work.dtype.type(1)
    for k in range(cuda.grid(1), BH, cuda.gridsize(1)):
        b = k // H
        j = k % H
        r = rec + b * G + j
        i = _sigmoid(xw[t, b, j] + work[r], one)
        f = _sigmoid(xw[t, b, H + j] + work[r + H], one)
        g = math.tanh(xw[t, b, 2 * H + j] + work[r + 2 * H])
        o = _sigmoid(xw[t, b, 3 * H + j] + work[r + 3 * H], one)
        c = f * work[cs + t * BH + k] + i * g
        work[cs + (t + 1) * BH + k] = c
        work[hs + (t + 1) * BH + k] = o * math.tanh(c)
        gt = gates + (t * B + b) * G + j
        work[gt] = i
        work[gt + H] = f
        work[gt + 2 * H] = g
        work[gt + 3 * H] = o


@cuda.jit(cache=True)
def _lstm_grad_step(dhs, cs, gates, work, t):
    """From dh_t = dhs[t] + dh_rec and the carried dc (= dL/dc_t through c_{t+1}):

        dc_t = dc + dh_t o (1 - tanh²c_t)
        dpre_i = dc_t g i(1-i)   dpre_f = dc_t c_{t-1} f(1-f)
        dpre_g = dc_t i (1-g²)   dpre_o = dh_t tanh(c_t) o(1-o)
        dc <- dc_t f             (dL/dc_{t-1}, updated in place)

    work: dpre (T, B, 4H), dh_rec (B, H), dc (B, H), c0 (B, H)."""
    T, B, H = cs.shape
    G, BH, dh_rec, dc, c0 = _grad_layout(T, B, H, 4, 1)
    dpre = 0
    one = work.dtype.type(1)
    for k in range(cuda.grid(1), BH, cuda.gridsize(1)):
        b, j = k // H, k % H
        c_prev = work[c0 + k] if t == 0 else cs[t - 1, b, j]
        i, f, g, o = gates[t, b, j], gates[t, b, H + j], gates[t, b, 2 * H + j], gates[t, b, 3 * H + j]
        tanh_c = math.tanh(cs[t, b, j])
        dh = dhs[t, b, j] + work[dh_rec + k]
        dc_t = work[dc + k] + dh * o * (one - tanh_c * tanh_c)
        d = dpre + (t * B + b) * G + j
        work[d] = dc_t * g * i * (one - i)
        work[d + H] = dc_t * c_prev * f * (one - f)
        work[d + 2 * H] = dc_t * i * (one - g * g)
        work[d + 3 * H] = dh * tanh_c * o * (one - o)
        work[dc + k] = dc_t * f


def lstm_forward(xw, w_hh, h0, c0, *, hs_out=None):
    """(hs, cs, gates): hidden and cell states (T, B, H) and the activated i,f,g,o (T, B, 4H);
    hs copied into hs_out when given."""
    xp = xp_of(xw)
    T, B, H = check_lstm_args("lstm_forward", xw, w_hh, h0, c0)
    out = None if hs_out is None else states_out("lstm_forward", hs_out, xw, T, B, H)
    work, (hs, cs, gates, rec) = _carve(xp, xw.dtype, (T + 1, B, H), (T + 1, B, H), (T, B, 4 * H), (B, 4 * H))
    hs[0] = h0
    cs[0] = c0
    step = step_launcher(_lstm_step, B * H, xw, work)
    w_hh_t = w_hh.T
    for t in range(T):
        xp.matmul(hs[t], w_hh_t, out=rec)
        step(t)
    if out is not None:
        out[...] = hs[1:]
    return hs[1:] if out is None else out, cs[1:], gates


def lstm_forward_xh(xh, w_x, w_hh, c0):
    """(cs, gates) of lstm_forward on the engine's rows [x_t | 1 | h_{t-1}] (kernels/API.md): the
    inputs projected by one GEMM first, then lstm_forward above."""
    return projecting_first(lstm_forward, xh, w_x, w_hh, c0)


def lstm_backward(dhs, dcT, w_hh, h0, c0, hs, cs, gates):
    """(dpre, dh0, dc0): dpre (T, B, 4H) = dL/da_t, walking t = T-1 .. 0."""
    xp = xp_of(dhs)
    T, B, H = check_lstm_args("lstm_backward", dhs, w_hh, h0, c0, dcT=dcT, hs=hs, cs=cs, gates=gates)
    work, (dpre, dh_rec, dc, c0_copy) = _carve(xp, hs.dtype, (T, B, 4 * H), (B, H), (B, H), (B, H))
    dh_rec[...] = 0                                # dL/dh_t through the gates of step t+1
    dc[...] = dcT                                  # dL/dc_t, carried backwards
    c0_copy[...] = c0
    step = step_launcher(_lstm_grad_step, B * H, dhs, cs, gates, work)
    for t in range(T - 1, -1, -1):
        step(t)
        xp.matmul(dpre[t], w_hh, out=dh_rec)
    return dpre, dh_rec, dc


# ----------------------------------------------------------------------------- GRU

@cuda.jit(cache=True)
def _gru_step(xw, work, t):
    """hh = rec + b_hh (rec = h_{t-1} W_hh^T, columns r,z,n);
    r = σ(xw_r + hh_r), z = σ(xw_z + hh_z), n = tanh(xw_n + r hh_n), h_t = (1-z) n + z h_{t-1}.
    work: states (T+1, B, H) with h0 as row 0, gates (T, B, 3H), hn (T, B, H), rec (B, 3H),
    b_hh (3H)."""
    T, B, G = xw.shape
    H = G // 3
    BH = B * H
    hs = 0
    gates = (T + 1) * BH
    hn = gates + T * B * G
    rec = hn + T * BH
    b_hh = rec + B * G
    one = work.dtype.type(1)
    for k in range(cuda.grid(1), BH, cuda.gridsize(1)):
        b = k // H
        j = k % H
        r_at = rec + b * G + j
        r = _sigmoid(xw[t, b, j] + work[r_at] + work[b_hh + j], one)
        z = _sigmoid(xw[t, b, H + j] + work[r_at + H] + work[b_hh + H + j], one)
        hh_n = work[r_at + 2 * H] + work[b_hh + 2 * H + j]
        n = math.tanh(xw[t, b, 2 * H + j] + r * hh_n)
        h_prev = work[hs + t * BH + k]
        work[hs + (t + 1) * BH + k] = (one - z) * n + z * h_prev
        gt = gates + (t * B + b) * G + j
        work[gt] = r
        work[gt + H] = z
        work[gt + 2 * H] = n
        work[hn + t * BH + k] = hh_n


@cuda.jit(cache=True)
def _gru_grad_step(dhs, hs, gates, hn, work, t):
    """From dh_t = dhs[t] + dh_rec + dh_direct (dh_rec = dhh[t+1] W_hh, dh_direct = dh_{t+1} z_{t+1}):

        dn = dh_t (1-z) (1-n²)          -> dxw_n = dn,          dhh_n = dn r
        dr = dn hh_n r(1-r)             -> dxw_r = dhh_r = dr
        dz = dh_t (h_{t-1} - n) z(1-z)  -> dxw_z = dhh_z = dz
        dh_direct <- dh_t z             (the path h_{t-1} -> h_t, updated in place)

    work: dxw (T, B, 3H), dhh (T, B, 3H), dh_rec (B, H), dh_direct (B, H), h0 (B, H)."""
    T, B, H = hs.shape
    G, BH, dh_rec, dh_direct, h0 = _grad_layout(T, B, H, 3, 2)
    dxw, dhh = 0, T * B * G
    one = work.dtype.type(1)
    for k in range(cuda.grid(1), BH, cuda.gridsize(1)):
        b, j = k // H, k % H
        h_prev = work[h0 + k] if t == 0 else hs[t - 1, b, j]
        r, z, n = gates[t, b, j], gates[t, b, H + j], gates[t, b, 2 * H + j]
        dh = dhs[t, b, j] + work[dh_rec + k] + work[dh_direct + k]
        dn = dh * (one - z) * (one - n * n)
        dr = dn * hn[t, b, j] * r * (one - r)
        dz = dh * (h_prev - n) * z * (one - z)
        at = (t * B + b) * G + j
        work[dxw + at] = dr
        work[dxw + at + H] = dz
        work[dxw + at + 2 * H] = dn
        work[dhh + at] = dr
        work[dhh + at + H] = dz
        work[dhh + at + 2 * H] = dn * r
        work[dh_direct + k] = dh * z


def gru_forward(xw, w_hh, b_hh, h0):
    """(hs, gates, hn): states (T, B, H), activated r,z,n (T, B, 3H), hh_n (T, B, H)."""
    xp = xp_of(xw)
    T, B, H = check_gru_args("gru_forward", xw, w_hh, h0, b_hh=b_hh)
    work, (hs, gates, hn, rec, b_hh_copy) = _carve(xp, xw.dtype, (T + 1, B, H), (T, B, 3 * H), (T, B, H),
                                                   (B, 3 * H), (3 * H,))
    hs[0] = h0
    b_hh_copy[...] = b_hh
    step = step_launcher(_gru_step, B * H, xw, work)
    w_hh_t = w_hh.T
    for t in range(T):
        xp.matmul(hs[t], w_hh_t, out=rec)
        step(t)
    return hs[1:], gates, hn


def gru_backward(dhs, w_hh, h0, hs, gates, hn):
    """(dxw, dhh, dh0): dL/dxw (T, B, 3H), dL/dhh (T, B, 3H), dL/dh0 (B, H)."""
    xp = xp_of(dhs)
    T, B, H = check_gru_args("gru_backward", dhs, w_hh, h0, hs=hs, gates=gates, hn=hn)
    work, (dxw, dhh, dh_rec, dh_direct, h0_copy) = _carve(xp, hs.dtype, (T, B, 3 * H), (T, B, 3 * H),
                                                          (B, H), (B, H), (B, H))
    dh_rec[...] = 0
    dh_direct[...] = 0
    h0_copy[...] = h0
    step = step_launcher(_gru_grad_step, B * H, dhs, hs, gates, hn, work)
    for t in range(T - 1, -1, -1):
        step(t)
        xp.matmul(dhh[t], w_hh, out=dh_rec)
    return dxw, dhh, dh_rec + dh_direct
