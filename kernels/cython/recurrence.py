"""Whole-sequence RNN / LSTM / GRU kernels, Cython backend (time-major, one layer).

The time loops run in _recurrence.pyx without the GIL: one BLAS GEMM and one fused gate
pass per step. These wrappers only check arguments (messages as in the reference) and pick
the compiled float32 or float64 version by dtype.
"""
import numpy as np

from . import _recurrence

_c = np.ascontiguousarray


def _relu(nonlinearity):
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"rnn: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    return nonlinearity == "relu"


def rnn_forward(xw, w_hh, h0, nonlinearity):
    """hs[t] = act(xw[t] + hs[t-1] @ w_hh^T), hs[-1] = h0."""
    return _recurrence.rnn_forward(_c(xw), _c(w_hh), _c(h0), _relu(nonlinearity))


def rnn_backward(dhs, w_hh, h0, hs, nonlinearity):
    """(dpre, dh0): dpre[t] = dL/d(pre-activation at t) = dL/dxw[t]."""
    return _recurrence.rnn_backward(_c(dhs), _c(w_hh), _c(h0), _c(hs), _relu(nonlinearity))


def lstm_forward(xw, w_hh, h0, c0):
    """(hs, cs, gates) with gates the activated i, f, g, o (PyTorch's order)."""
    return _recurrence.lstm_forward(_c(xw), _c(w_hh), _c(h0), _c(c0))


def lstm_backward(dhs, dcT, w_hh, h0, c0, hs, cs, gates):
    """(dpre, dh0, dc0): dpre[t] = dL/da_t, the gradient of the gate pre-activations."""
    return _recurrence.lstm_backward(_c(dhs), _c(dcT), _c(w_hh), _c(h0), _c(c0), _c(hs),
                                     _c(cs), _c(gates))


def gru_forward(xw, w_hh, b_hh, h0):
    """(hs, gates, hn): gates the activated r, z, n; hn[t] = (h_{t-1} W_hh^T + b_hh)_n."""
    return _recurrence.gru_forward(_c(xw), _c(w_hh), _c(b_hh), _c(h0))


def gru_backward(dhs, w_hh, h0, hs, gates, hn):
    """(dxw, dhh, dh0): dhh[t] = dL/d(h_{t-1} W_hh^T + b_hh)."""
    return _recurrence.gru_backward(_c(dhs), _c(w_hh), _c(h0), _c(hs), _c(gates), _c(hn))
