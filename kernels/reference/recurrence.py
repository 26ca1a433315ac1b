"""Recurrence kernels (RNN, LSTM, GRU time loops), written once against `xp` (NumPy or CuPy).

This module states the contract every other backend copies (kernels/API.md), including the
exact ValueError messages: the shape checks below are plain Python on shapes, and the compiled
backends call them rather than repeating them.

Layout: time-major, one layer, one direction.  The engine has already done the input
projection for every step as one GEMM, `xw_t = x_t W_ih^T + biases`, so a kernel only runs
the part that cannot be batched over time: the recurrent GEMM `h_{t-1} W_hh^T` and the gate
arithmetic.  (lstm_forward_xh takes the inputs instead, in the rows [x_t | 1 | h_{t-1}] that the
engine keeps for the weight gradients; here it projects them first, `projecting_first`.)  The
backward pass walks the steps in reverse and returns dL/d(pre-activation) at every step; the
engine turns that into weight gradients with single GEMMs over all steps
(dW_hh = dpre^T h_prev, dW_ih = dpre^T x).  sigma is the logistic function, * elementwise.

    RNN   h_t = act(a_t),  a_t = xw_t + h_{t-1} W_hh^T,  act = tanh | relu
          da_t = (dhs_t + da_{t+1} W_hh) * act'(a_t)        act' = 1 - h_t^2 | [h_t > 0]

    LSTM  a_t = xw_t + h_{t-1} W_hh^T = [a_i, a_f, a_g, a_o]
          i, f, g, o = sigma(a_i), sigma(a_f), tanh(a_g), sigma(a_o)
          c_t = f * c_{t-1} + i * g;   h_t = o * tanh(c_t)
      backward, with dh_t = dhs_t + da_{t+1} W_hh and dc_t the cell gradient from step t+1:
          dc = dc_t + dh_t * o * (1 - tanh(c_t)^2)
          da_i = dc * g * i(1-i);   da_f = dc * c_{t-1} * f(1-f)
          da_g = dc * i * (1-g^2);  da_o = dh_t * tanh(c_t) * o(1-o)
          dc_{t-1} = dc * f

    GRU   hh_t = h_{t-1} W_hh^T + b_hh = [hh_r, hh_z, hh_n]
          r = sigma(xw_r + hh_r);  z = sigma(xw_z + hh_z);  n = tanh(xw_n + r * hh_n)
          h_t = (1 - z) * n + z * h_{t-1}
      backward, with dh_t = dhs_t + (dhh_{t+1} W_hh + dh_{t+1} * z_{t+1}):
          da_n = dh_t * (1-z) * (1-n^2);       da_z = dh_t * (h_{t-1} - n) * z(1-z)
          da_r = da_n * hh_n * r(1-r)
          dxw = [da_r, da_z, da_n];  dhh = [da_r, da_z, da_n * r]
          dL/dh_{t-1} (direct part) = dh_t * z

Speed: the Python loop over time is unavoidable here, so everything that does not depend on
the step-to-step gradient (the local derivatives above) is computed for the whole sequence in
a few large array operations before the loop, and each step writes into preallocated
outputs with `out=` instead of making temporaries.
"""
from tinygrad_seq.device import rows_in_place, xp_of

# dtype.char of float32 and float64: a C attribute, where str(dtype) runs Python code in
# NumPy (the checks of one lstm_lm step's two kernel calls took 0.3 ms with it)
_FLOAT_CHARS = ("f", "d")


# ----------------------------------------------------------------------------- shape checks

def _check(op, sizes, **expected):
    """Every array is 1-D..3-D of its expected shape (given with its symbolic form, e.g.
    ("(4H, H)", (12, 3))) and all share one float dtype, else ValueError naming the culprit.
    `sizes` = (T, B, H): each must be at least 1."""
    T, B, H = sizes
    if min(T, B, H) < 1:
        raise ValueError(f"{op}: sizes must be positive, got T={T}, B={B}, H={H}")
    dtype = None
    for name, (array, (symbols, shape)) in expected.items():
        if array.dtype.char not in _FLOAT_CHARS:
            raise ValueError(f"{op}: {name} must be float32 or float64, got {array.dtype}")
        if dtype is None:
            dtype, first = array.dtype, name
        elif array.dtype != dtype:
            raise ValueError(f"{op}: {name} is {array.dtype} but {first} is {dtype}; "
                             "all arrays must share one dtype")
        if tuple(array.shape) != tuple(shape):
            raise ValueError(f"{op}: {name} has shape {tuple(array.shape)}, expected {symbols} = {tuple(shape)}")


def _sizes(op, seq, state, width):
    """(T, B, H) from a (T, B, width*H) sequence and a (B, H) state, checking their ranks."""
    if seq.ndim != 3 or state.ndim != 2:
        raise ValueError(f"{op}: expected a (T, B, {width}H) sequence and a (B, H) state, "
                         f"got shapes {tuple(seq.shape)} and {tuple(state.shape)}")
    return seq.shape[0], seq.shape[1], state.shape[1]


def check_rnn_args(op, seq, w_hh, h0, nonlinearity, hs=None):
    """Checks for rnn_forward (seq = xw) and rnn_backward (seq = dhs, with hs)."""
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"{op}: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    T, B, H = _sizes(op, seq, h0, "")
    arrays = {"xw" if hs is None else "dhs": (seq, ("(T, B, H)", (T, B, H)))}
    arrays.update(w_hh=(w_hh, ("(H, H)", (H, H))),
                  h0=(h0, ("(B, H)", (B, H))))
    if hs is not None:
        arrays["hs"] = (hs, ("(T, B, H)", (T, B, H)))
    _check(op, (T, B, H), **arrays)
    return T, B, H


def check_lstm_args(op, seq, w_hh, h0, c0, dcT=None, hs=None, cs=None, gates=None):
    """Checks for lstm_forward (seq = xw) and lstm_backward (seq = dhs, with the saved arrays)."""
    backward = hs is not None
    T, B, H = _sizes(op, seq, h0, "" if backward else "4")
    arrays = {"dhs": (seq, ("(T, B, H)", (T, B, H)))} if backward else {"xw": (seq, ("(T, B, 4H)", (T, B, 4 * H)))}
    arrays.update(w_hh=(w_hh, ("(4H, H)", (4 * H, H))), h0=(h0, ("(B, H)", (B, H))), c0=(c0, ("(B, H)", (B, H))))
    if backward:
        arrays.update(dcT=(dcT, ("(B, H)", (B, H))), hs=(hs, ("(T, B, H)", (T, B, H))),
                      cs=(cs, ("(T, B, H)", (T, B, H))), gates=(gates, ("(T, B, 4H)", (T, B, 4 * H))))
    _check(op, (T, B, H), **arrays)
    return T, B, H


def check_lstm_xh_args(op, xh, w_x, w_hh, c0):
    """Checks for lstm_forward_xh -> (T, B, H, K): xh (T+1, B, K+H) C-contiguous (the kernel
    writes h_t into it), w_x (4H, K), w_hh (4H, H), c0 (B, H), one float dtype."""
    if xh.ndim != 3 or w_x.ndim != 2 or c0.ndim != 2:
        raise ValueError(f"{op}: expected xh (T+1, B, K+H), w_x (4H, K) and c0 (B, H), got shapes "
                         f"{tuple(xh.shape)}, {tuple(w_x.shape)} and {tuple(c0.shape)}")
    T, B, H, width = xh.shape[0] - 1, xh.shape[1], c0.shape[1], xh.shape[2]
    if width < H:
        raise ValueError(f"{op}: xh has {width} columns, fewer than H = {H}; its rows are [x_t | 1 | h_(t-1)]")
    _check(op, (T, B, H), xh=(xh, ("(T+1, B, K+H)", (T + 1, B, width))), w_x=(w_x, ("(4H, K)", (4 * H, width - H))),
           w_hh=(w_hh, ("(4H, H)", (4 * H, H))), c0=(c0, ("(B, H)", (B, H))))
    if not xh.flags.c_contiguous:
        raise ValueError(f"{op}: xh must be C-contiguous (h_t is written into it); got strides {tuple(xh.strides)}")
    return T, B, H, width - H


def projecting_first(lstm_forward, xh, w_x, w_hh, c0, matmul=None):
    """lstm_forward_xh for a backend whose time loop takes the projected inputs: one GEMM
    xw = x w_x^T for every step (`matmul`, else xp.matmul), then its lstm_forward writing h_t
    into xh.  -> (cs, gates)"""
    T, B, H, K = check_lstm_xh_args("lstm_forward_xh", xh, w_x, w_hh, c0)
    xp = xp_of(xh)
    xw = (matmul or xp.matmul)(xh[:T, :, :K].reshape(T * B, K), w_x.T).reshape(T, B, 4 * H)
    _, cs, gates = lstm_forward(xw, w_hh, xp.ascontiguousarray(xh[0, :, K:]), c0, hs_out=xh[1:, :, K:])
    return cs, gates


def states_out(op, hs_out, xw, T, B, H):
    """The array hs goes into: hs_out checked (kernels/API.md: (T, B, H) of xw's dtype, unit-stride
    rows), else a new C-contiguous one."""
    if hs_out is None:
        return xp_of(xw).empty((T, B, H), dtype=xw.dtype)
    if tuple(hs_out.shape) != (T, B, H) or hs_out.dtype != xw.dtype or not rows_in_place(hs_out):
        raise ValueError(f"{op}: hs_out must be a ({T}, {B}, {H}) array of {xw.dtype} with unit-stride rows; got "
                         f"{tuple(hs_out.shape)} {hs_out.dtype} with strides {tuple(hs_out.strides)}")
    return hs_out


def check_gru_args(op, seq, w_hh, h0, b_hh=None, hs=None, gates=None, hn=None):
    """Checks for gru_forward (seq = xw, with b_hh) and gru_backward (seq = dhs, with the saved arrays)."""
    backward = hs is not None
    T, B, H = _sizes(op, seq, h0, "" if backward else "3")
    arrays = {"dhs": (seq, ("(T, B, H)", (T, B, H)))} if backward else {"xw": (seq, ("(T, B, 3H)", (T, B, 3 * H)))}
    arrays.update(w_hh=(w_hh, ("(3H, H)", (3 * H, H))), h0=(h0, ("(B, H)", (B, H))))
    if backward:
        arrays.update(hs=(hs, ("(T, B, H)", (T, B, H))), gates=(gates, ("(T, B, 3H)", (T, B, 3 * H))),
                      hn=(hn, ("(T, B, H)", (T, B, H))))
    else:
        arrays["b_hh"] = (b_hh, ("(3H,)", (3 * H,)))
    _check(op, (T, B, H), **arrays)
    return T, B, H


# ----------------------------------------------------------------------------- helpers

def _sigmoid_(a):
    """a <- sigma(a) in place, as (1 + tanh(a/2)) / 2: the same function, but it never
    overflows (1 / (1 + exp(-a)) warns for a < -88 in float32) and needs no temporary."""
    xp = xp_of(a)
    a *= 0.5
    xp.tanh(a, out=a)
    a += 1
    a *= 0.5
    return a


def _previous(first, seq):
    """[first, seq[0], ..., seq[T-2]]: the value at t-1 for every step t."""
    xp = xp_of(seq)
    return xp.concatenate([first[None], seq[:-1]], axis=0)


def _recurrent_matrix(w_hh):
    """W_hh^T as its own C-contiguous array: BLAS runs h @ W (both row-major) about 1.5x faster
    than h @ W_hh.T on the transposed view for these small per-step products."""
    return xp_of(w_hh).ascontiguousarray(w_hh.T)


# ----------------------------------------------------------------------------- RNN

def rnn_forward(xw, w_hh, h0, nonlinearity, *, hs_out=None):
    """hs[t] = act(xw[t] + hs[t-1] W_hh^T), hs[-1] = h0; act = tanh or relu; hs written into
    hs_out when given."""
    xp = xp_of(xw)
    T, B, H = check_rnn_args("rnn_forward", xw, w_hh, h0, nonlinearity)
    w = _recurrent_matrix(w_hh)
    hs = states_out("rnn_forward", hs_out, xw, T, B, H)
    h = h0
    for t in range(T):
        h = xp.matmul(h, w, out=hs[t])
        h += xw[t]
        if nonlinearity == "tanh":
            xp.tanh(h, out=h)
        else:
            xp.maximum(h, 0, out=h)
    return hs


def rnn_backward(dhs, w_hh, h0, hs, nonlinearity):
    """dpre[t] = (dhs[t] + dpre[t+1] W_hh) * act'(t);  dh0 = dpre[0] W_hh."""
    xp = xp_of(dhs)
    T, B, H = check_rnn_args("rnn_backward", dhs, w_hh, h0, nonlinearity, hs=hs)
    derivative = 1 - hs * hs if nonlinearity == "tanh" else (hs > 0).astype(hs.dtype)
    dpre = xp.empty_like(dhs)
    dh = dhs[T - 1]
    for t in range(T - 1, -1, -1):
        xp.multiply(dh, derivative[t], out=dpre[t])
        dh = dpre[t] @ w_hh
        if t > 0:
            dh += dhs[t - 1]
    return dpre, dh


# ----------------------------------------------------------------------------- LSTM

def lstm_forward(xw, w_hh, h0, c0, *, hs_out=None):
    """One LSTM layer over the sequence; returns hs, cs (T,B,H) and the activated gates
    i, f, g, o (T,B,4H) for the backward pass, hs written into hs_out when given.  Equations in
    the module docstring."""
    xp = xp_of(xw)
    T, B, H = check_lstm_args("lstm_forward", xw, w_hh, h0, c0)
    w = _recurrent_matrix(w_hh)
    hs = states_out("lstm_forward", hs_out, xw, T, B, H)
    cs = xp.empty((T, B, H), dtype=xw.dtype)
    gates = xp.empty((T, B, 4 * H), dtype=xw.dtype)
    h, c = h0, c0
    for t in range(T):
        a = xp.matmul(h, w, out=gates[t])
        a += xw[t]
        _sigmoid_(a[:, :2 * H])                          # i, f
        xp.tanh(a[:, 2 * H:3 * H], out=a[:, 2 * H:3 * H])  # g
        _sigmoid_(a[:, 3 * H:])                          # o
        i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        c = xp.multiply(f, c, out=cs[t])
        c += i * g
        h = xp.tanh(c, out=hs[t])
        h *= o
    return hs, cs, gates


def lstm_backward(dhs, dcT, w_hh, h0, c0, hs, cs, gates):
    """dpre (T,B,4H) = dL/da_t, dh0, dc0 by backpropagation through time (module docstring)."""
    xp = xp_of(dhs)
    T, B, H = check_lstm_args("lstm_backward", dhs, w_hh, h0, c0, dcT=dcT, hs=hs, cs=cs, gates=gates)
    i, f, g, o = (gates[..., k * H:(k + 1) * H] for k in range(4))
    tanh_c = xp.tanh(cs)
    # Everything that multiplies the incoming gradients, for all steps at once:
    # da_{i,f,g} = dc * factor_{i,f,g},  da_o = dh * factor_o,  dc += dh * dc_from_h.
    factors = xp.empty((T, B, 4, H), dtype=dhs.dtype)
    factors[:, :, 0] = g * i * (1 - i)
    factors[:, :, 1] = _previous(c0, cs) * f * (1 - f)
    factors[:, :, 2] = i * (1 - g * g)
    factors[:, :, 3] = tanh_c * o * (1 - o)
    dc_from_h = o * (1 - tanh_c * tanh_c)

    dpre = xp.empty((T, B, 4, H), dtype=dhs.dtype)
    dc = dcT.copy()
    scratch = xp.empty((B, H), dtype=dhs.dtype)
    dh = dhs[T - 1]
    for t in range(T - 1, -1, -1):
        dc += xp.multiply(dh, dc_from_h[t], out=scratch)
        xp.multiply(dc[:, None, :], factors[t, :, :3], out=dpre[t, :, :3])
        xp.multiply(dh, factors[t, :, 3], out=dpre[t, :, 3])
        dc *= f[t]
        dh = dpre[t].reshape(B, 4 * H) @ w_hh
        if t > 0:
            dh += dhs[t - 1]
    return dpre.reshape(T, B, 4 * H), dh, dc


def lstm_forward_xh(xh, w_x, w_hh, c0):
    """lstm_forward on the engine's weight-gradient rows xh[t] = [x_t | 1 | h_{t-1}] (T+1, B, K+H):
    a_t = xh[t, :, :K] w_x^T + xh[t, :, K:] w_hh^T with w_x = [W_ih | b] (4H, K); h0 is in
    xh[0, :, K:] and h_t is written into xh[t+1, :, K:].  Returns cs and gates as lstm_forward."""
    return projecting_first(lstm_forward, xh, w_x, w_hh, c0)


# ----------------------------------------------------------------------------- GRU

def gru_forward(xw, w_hh, b_hh, h0):
    """One GRU layer over the sequence; returns hs (T,B,H), the activated gates r, z, n
    (T,B,3H) and hn = hh_n (T,B,H), the last two saved for the backward pass."""
    xp = xp_of(xw)
    T, B, H = check_gru_args("gru_forward", xw, w_hh, h0, b_hh=b_hh)
    w = _recurrent_matrix(w_hh)
    hs = xp.empty((T, B, H), dtype=xw.dtype)
    gates = xp.empty((T, B, 3 * H), dtype=xw.dtype)
    hn = xp.empty_like(hs)
    hh = xp.empty((B, 3 * H), dtype=xw.dtype)
    h = h0
    for t in range(T):
        xp.matmul(h, w, out=hh)
        hh += b_hh
        a = gates[t]
        xp.add(xw[t, :, :2 * H], hh[:, :2 * H], out=a[:, :2 * H])
        _sigmoid_(a[:, :2 * H])
        r, z, n = a[:, :H], a[:, H:2 * H], a[:, 2 * H:]
        hn[t] = hh[:, 2 * H:]
        xp.multiply(r, hn[t], out=n)
        n += xw[t, :, 2 * H:]
        xp.tanh(n, out=n)
        # h = (1 - z) n + z h_prev = n + z (h_prev - n)
        h_new = xp.subtract(h, n, out=hs[t])
        h_new *= z
        h_new += n
        h = h_new
    return hs, gates, hn


def gru_backward(dhs, w_hh, h0, hs, gates, hn):
    """dxw, dhh (T,B,3H) and dh0 by backpropagation through time (module docstring)."""
    xp = xp_of(dhs)
    T, B, H = check_gru_args("gru_backward", dhs, w_hh, h0, hs=hs, gates=gates, hn=hn)
    r, z, n = (gates[..., k * H:(k + 1) * H] for k in range(3))
    # da_z = dh * factor_z,  da_n = dh * factor_n,  da_r = da_n * factor_r, for all steps at once
    factor_z = (_previous(h0, hs) - n) * z * (1 - z)
    factor_n = (1 - z) * (1 - n * n)
    factor_r = hn * r * (1 - r)

    dxw = xp.empty((T, B, 3 * H), dtype=dhs.dtype)
    dhh = xp.empty_like(dxw)
    dh = dhs[T - 1]
    for t in range(T - 1, -1, -1):
        da_r, da_z, da_n = (dxw[t, :, k * H:(k + 1) * H] for k in range(3))
        xp.multiply(dh, factor_z[t], out=da_z)
        xp.multiply(dh, factor_n[t], out=da_n)
        xp.multiply(da_n, factor_r[t], out=da_r)
        dhh[t, :, :2 * H] = dxw[t, :, :2 * H]
        xp.multiply(da_n, r[t], out=dhh[t, :, 2 * H:])
        dh_prev = dhh[t] @ w_hh
        dh_prev += dh * z[t]
        if t > 0:
            dh_prev += dhs[t - 1]
        dh = dh_prev
    return dxw, dhh, dh
