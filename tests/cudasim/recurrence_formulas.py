"""The recurrence equations of kernels/API.md in plain NumPy, one step at a time.

Used by test_sim_recurrence.py only while kernels/reference/recurrence.py does not exist yet.
"""
import numpy as np


def _sigmoid(a):
    return 1 / (1 + np.exp(-a))


def _act(nonlinearity):
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"rnn: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    if nonlinearity == "tanh":
        return np.tanh, lambda h: 1 - h * h
    return (lambda a: np.maximum(a, 0)), (lambda h: (h > 0).astype(h.dtype))


def rnn_forward(xw, w_hh, h0, nonlinearity):
    act, _ = _act(nonlinearity)
    hs, h = [], h0
    for t in range(xw.shape[0]):
        h = act(xw[t] + h @ w_hh.T)
        hs.append(h)
    return np.stack(hs)


def rnn_backward(dhs, w_hh, h0, hs, nonlinearity):
    _, dact = _act(nonlinearity)
    dpre = np.empty_like(hs)
    dh_next = np.zeros_like(h0)
    for t in reversed(range(hs.shape[0])):
        dpre[t] = (dhs[t] + dh_next) * dact(hs[t])
        dh_next = dpre[t] @ w_hh
    return dpre, dh_next


def lstm_forward(xw, w_hh, h0, c0):
    H = h0.shape[1]
    hs, cs, gates = [], [], []
    h, c = h0, c0
    for t in range(xw.shape[0]):
        a = xw[t] + h @ w_hh.T
        i, f, g, o = _sigmoid(a[:, :H]), _sigmoid(a[:, H:2 * H]), np.tanh(a[:, 2 * H:3 * H]), _sigmoid(a[:, 3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
        hs.append(h)
        cs.append(c)
        gates.append(np.concatenate([i, f, g, o], axis=1))
    return np.stack(hs), np.stack(cs), np.stack(gates)


def lstm_backward(dhs, dcT, w_hh, h0, c0, hs, cs, gates):
    H = h0.shape[1]
    dpre = np.empty_like(gates)
    dh_next, dc = np.zeros_like(h0), dcT.copy()
    for t in reversed(range(hs.shape[0])):
        i, f, g, o = gates[t, :, :H], gates[t, :, H:2 * H], gates[t, :, 2 * H:3 * H], gates[t, :, 3 * H:]
        c_prev = c0 if t == 0 else cs[t - 1]
        dh = dhs[t] + dh_next
        tanh_c = np.tanh(cs[t])
        dc = dc + dh * o * (1 - tanh_c ** 2)
        dpre[t] = np.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f),
                                  dc * i * (1 - g ** 2), dh * tanh_c * o * (1 - o)], axis=1)
        dc = dc * f
        dh_next = dpre[t] @ w_hh
    return dpre, dh_next, dc


def gru_forward(xw, w_hh, b_hh, h0):
    H = h0.shape[1]
    hs, gates, hns = [], [], []
    h = h0
    for t in range(xw.shape[0]):
        hh = h @ w_hh.T + b_hh
        r = _sigmoid(xw[t, :, :H] + hh[:, :H])
        z = _sigmoid(xw[t, :, H:2 * H] + hh[:, H:2 * H])
        n = np.tanh(xw[t, :, 2 * H:] + r * hh[:, 2 * H:])
        h = (1 - z) * n + z * h
        hs.append(h)
        gates.append(np.concatenate([r, z, n], axis=1))
        hns.append(hh[:, 2 * H:])
    return np.stack(hs), np.stack(gates), np.stack(hns)


def gru_backward(dhs, w_hh, h0, hs, gates, hn):
    H = h0.shape[1]
    dxw, dhh = np.empty_like(gates), np.empty_like(gates)
    dh_next = np.zeros_like(h0)
    for t in reversed(range(hs.shape[0])):
        r, z, n = gates[t, :, :H], gates[t, :, H:2 * H], gates[t, :, 2 * H:]
        h_prev = h0 if t == 0 else hs[t - 1]
        dh = dhs[t] + dh_next
        dn = dh * (1 - z) * (1 - n ** 2)
        dr = dn * hn[t] * r * (1 - r)
        dz = dh * (h_prev - n) * z * (1 - z)
        dxw[t] = np.concatenate([dr, dz, dn], axis=1)
        dhh[t] = np.concatenate([dr, dz, dn * r], axis=1)
        dh_next = dhh[t] @ w_hh + dh * z
    return dxw, dhh, dh_next
