"""Whole-sequence RNN / LSTM / GRU kernels, Cython backend (time-major, one layer).

The time loops run in _recurrence.pyx without the GIL, on a team of threads that each own
a slice of the hidden units: per step one product with their packed share of W_hh and one
fused gate pass. These wrappers check the arguments with the reference's checks (same
ValueError messages in every backend, and with bounds checks compiled out a wrong shape
must never reach the loops) and pick the compiled float32 or float64 version by dtype.
"""
import numpy as np

from tinygrad_seq.kernels.reference.recurrence import (check_gru_args, check_lstm_args, check_lstm_xh_args,
                                                       check_rnn_args, projecting_first, states_out)

from . import _recurrence, matmul

# lstm_forward_xh's loop packs [W_ih | b] and W_hh: each thread streams its share of it at every
# step, which pays while the share stays in cache.  Past this size a separate projection is
# faster.  Measured on Zen 3 (512 KB L2 a core), one LSTM layer, interleaved, fused / projected:
# 263 KB to 1.05 MB a thread 0.92-0.93; 2.4-4.4 MB 0.97-1.03; 6.8 MB 1.15-1.20.
FUSED_WEIGHTS_PER_THREAD = 3 * 2 ** 19     # 1.5 MiB

_c = np.ascontiguousarray


def rnn_forward(xw, w_hh, h0, nonlinearity, *, hs_out=None):
    """hs[t] = act(xw[t] + hs[t-1] @ w_hh^T), hs[-1] = h0; written where hs_out lies when given."""
    T, B, H = check_rnn_args("rnn_forward", xw, w_hh, h0, nonlinearity)
    hs = states_out("rnn_forward", hs_out, xw, T, B, H)
    _recurrence.rnn_forward(_c(xw), _c(w_hh), _c(h0), nonlinearity == "relu", hs)
    return hs


def rnn_backward(dhs, w_hh, h0, hs, nonlinearity):
    """(dpre, dh0): dpre[t] = dL/d(pre-activation at t) = dL/dxw[t]."""
    check_rnn_args("rnn_backward", dhs, w_hh, h0, nonlinearity, hs=hs)
    return _recurrence.rnn_backward(_c(dhs), _c(w_hh), _c(h0), _c(hs), nonlinearity == "relu")


def lstm_forward(xw, w_hh, h0, c0, *, hs_out=None):
    """(hs, cs, gates) with gates the activated i, f, g, o (PyTorch's order); hs written where
    hs_out lies when given."""
    T, B, H = check_lstm_args("lstm_forward", xw, w_hh, h0, c0)
    hs = states_out("lstm_forward", hs_out, xw, T, B, H)
    cs, gates = _recurrence.lstm_forward(_c(xw), _c(w_hh), _c(h0), _c(c0), hs)
    return hs, cs, gates


def lstm_forward_xh(xh, w_x, w_hh, c0):
    """(cs, gates) of lstm_forward on the engine's rows: each step's product reads
    [x_t | 1 | h_{t-1}] in place and multiplies it by [W_ih | b] and W_hh packed once, one above
    the other, so the input projection is part of the step's GEMM and no (T, B, 4H) xw is
    written and read back; h_t goes into xh[t+1, :, K:].  Weights too big to stay in cache:
    projected first, on the team."""
    check_lstm_xh_args("lstm_forward_xh", xh, w_x, w_hh, c0)
    if w_x.nbytes + w_hh.nbytes > FUSED_WEIGHTS_PER_THREAD * _recurrence.get_num_threads():
        return projecting_first(lstm_forward, xh, w_x, w_hh, c0, matmul=matmul.matmul)
    return _recurrence.lstm_forward_xh(xh, _c(w_x), _c(w_hh), _c(c0))


def lstm_backward(dhs, dcT, w_hh, h0, c0, hs, cs, gates):
    """(dpre, dh0, dc0): dpre[t] = dL/da_t, the gradient of the gate pre-activations."""
    check_lstm_args("lstm_backward", dhs, w_hh, h0, c0, dcT=dcT, hs=hs, cs=cs, gates=gates)
    return _recurrence.lstm_backward(_c(dhs), _c(dcT), _c(w_hh), _c(h0), _c(c0), _c(cs), _c(gates))


def gru_forward(xw, w_hh, b_hh, h0):
    """(hs, gates, hn): gates the activated r, z, n; hn[t] = (h_{t-1} W_hh^T + b_hh)_n."""
    check_gru_args("gru_forward", xw, w_hh, h0, b_hh=b_hh)
    return _recurrence.gru_forward(_c(xw), _c(w_hh), _c(b_hh), _c(h0))


def gru_backward(dhs, w_hh, h0, hs, gates, hn):
    """(dxw, dhh, dh0): dhh[t] = dL/d(h_{t-1} W_hh^T + b_hh)."""
    check_gru_args("gru_backward", dhs, w_hh, h0, hs=hs, gates=gates, hn=hn)
    return _recurrence.gru_backward(_c(dhs), _c(w_hh), _c(h0), _c(hs), _c(gates), _c(hn))
