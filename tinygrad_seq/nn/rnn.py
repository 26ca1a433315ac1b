"""Recurrent layers with PyTorch's arguments, parameter names, gate order and return values.

    rnn = nn.LSTM(input_size=64, hidden_size=256, num_layers=2, bidirectional=True, batch_first=True)
    out, (h_n, c_n) = rnn(x)          # x (B, T, 64);  out (B, T, 512);  h_n, c_n (4, B, 256)

The whole time loop of one layer in one direction is ONE differentiable op (`ops.RNN`,
`ops.LSTM`, `ops.GRU`, in tinygrad_seq/ops/recurrence.py, with the kernels behind them), not
T little graph nodes; the modules here stack those ops over layers and directions.

The cells (`RNNCell`, `LSTMCell`, `GRUCell`, and the teaching `SimplifiedGRUCell`) are written
with ordinary tensor ops, one line per equation: they are the readable statement of what the
kernels compute, for step-by-step use (decoders, attention).

Equations (PyTorch's; sigma = sigmoid, * = elementwise):
    RNN   h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)            (or relu)
    LSTM  i, f, g, o = sigma, sigma, tanh, sigma of (x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)
          c_t = f * c_{t-1} + i * g;   h_t = o * tanh(c_t)
    GRU   r = sigma(x W_ir^T + b_ir + h W_hr^T + b_hr);  z = sigma(x W_iz^T + b_iz + h W_hz^T + b_hz)
          n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn));   h_t = (1 - z) * n + z * h_{t-1}
"""
import math
import warnings

import numpy as np

from .. import ops
from ..creation import cat, stack
from ..device import xp_of
from ..tensor import Tensor
from . import functional as F
from . import init
from .module import Module, Parameter

__all__ = ["RNNBase", "RNN", "LSTM", "GRU",
           "RNNCell", "LSTMCell", "GRUCell", "SimplifiedGRUCell"]


# ---------------------------------------------------------------------------- initialisation
def _uniform_parameter(shape, bound, dtype):
    """U(-bound, bound), bound = 1/sqrt(hidden_size): PyTorch's initialisation of every RNN weight."""
    dtype = np.dtype(dtype or np.float32)
    return init.uniform_(Parameter(np.zeros(shape, dtype=dtype), dtype=dtype), -bound, bound)


def _check_sizes(name, input_size, hidden_size, num_layers=1, dropout=0.0):
    for label, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: {label} must be a positive integer, got {value!r}")
    if not 0 <= dropout <= 1:
        raise ValueError(f"{name}: dropout must be a probability in [0, 1], got {dropout}")


# ---------------------------------------------------------------------------- multi-layer modules
class RNNBase(Module):
    """The stack shared by RNN, LSTM and GRU: layer k reads layer k-1's output (both directions
    concatenated), with dropout between layers in training mode.

    Parameters, in PyTorch's order: for each layer k and direction (suffix '' or '_reverse'),
    weight_ih_l{k}{suffix} (G*H, in), weight_hh_l{k}{suffix} (G*H, H), bias_ih_l{k}{suffix},
    bias_hh_l{k}{suffix} (G*H,), with G = 1 (RNN), 4 (LSTM), 3 (GRU)."""

    GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__()
        name = {"RNN_TANH": "RNN", "RNN_RELU": "RNN"}.get(mode, mode)
        _check_sizes(name, input_size, hidden_size, num_layers, dropout)
        if proj_size:
            raise NotImplementedError(f"{name}: proj_size is not supported")
        if dropout and num_layers == 1:
            warnings.warn(f"{name}: dropout={dropout} acts between stacked layers, so with num_layers=1 "
                          "it does nothing", UserWarning, stacklevel=3)
        self.mode, self.input_size, self.hidden_size = mode, input_size, hidden_size
        self.num_layers, self.bias, self.batch_first = num_layers, bool(bias), bool(batch_first)
        self.dropout, self.bidirectional = float(dropout), bool(bidirectional)
        self.num_directions = 2 if bidirectional else 1
        gate_size = self.GATES[mode] * hidden_size
        bound = 1 / math.sqrt(hidden_size)
        self._flat_weights_names = []
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * self.num_directions
            for suffix in self._suffixes():
                names = [f"weight_ih_l{layer}{suffix}", f"weight_hh_l{layer}{suffix}"]
                setattr(self, names[0], _uniform_parameter((gate_size, layer_input), bound, dtype))
                setattr(self, names[1], _uniform_parameter((gate_size, hidden_size), bound, dtype))
                if bias:
                    names += [f"bias_ih_l{layer}{suffix}", f"bias_hh_l{layer}{suffix}"]
                    setattr(self, names[2], _uniform_parameter((gate_size,), bound, dtype))
                    setattr(self, names[3], _uniform_parameter((gate_size,), bound, dtype))
                self._flat_weights_names.extend(names)
        if device is not None:
            self.to(device)

    def _suffixes(self):
        return ("", "_reverse") if self.bidirectional else ("",)

    @property
    def all_weights(self):
        """[[w_ih, w_hh, b_ih, b_hh] for each layer and direction], as PyTorch's all_weights."""
        per = 4 if self.bias else 2
        names = self._flat_weights_names
        return [[getattr(self, n) for n in names[i:i + per]] for i in range(0, len(names), per)]

    def flatten_parameters(self):
        """Nothing to do here (PyTorch packs cuDNN weights); kept so PyTorch code runs."""

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.mode == "RNN_RELU":
            s += ", nonlinearity='relu'"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s

    # ------------------------------------------------------------------ forward
    def _initial(self, hx, batch, x, label):
        """The (layers*directions, B, H) initial state: given, or zeros."""
        expected = (self.num_layers * self.num_directions, batch, self.hidden_size)
        if hx is None:
            return None
        if not isinstance(hx, Tensor):
            raise TypeError(f"{type(self).__name__}: {label} must be a Tensor")
        if hx.shape != expected:
            raise ValueError(f"{type(self).__name__}: expected {label} of shape {expected}, got {hx.shape}")
        return hx

    def _run_direction(self, x, layer, suffix, h0, c0):
        """One layer in one direction: the time-loop op on x (T, B, in)."""
        weights = [getattr(self, f"{kind}_l{layer}{suffix}") for kind in ("weight_ih", "weight_hh")]
        biases = [getattr(self, f"{kind}_l{layer}{suffix}") for kind in ("bias_ih", "bias_hh")] if self.bias else [None, None]
        reverse = suffix == "_reverse"
        if self.mode == "LSTM":
            out, h_n, c_n = ops.LSTM.apply(x, h0, c0, *weights, *biases, reverse=reverse)
            return out, h_n, c_n
        if self.mode == "GRU":
            out, h_n = ops.GRU.apply(x, h0, *weights, *biases, reverse=reverse)
            return out, h_n, None
        nonlinearity = "relu" if self.mode == "RNN_RELU" else "tanh"
        out, h_n = ops.RNN.apply(x, h0, *weights, *biases, nonlinearity=nonlinearity, reverse=reverse)
        return out, h_n, None

    def forward(self, input, hx=None):
        """input (T, B, in) [(B, T, in) if batch_first; (T, in) unbatched] and optional initial
        state (layers*directions, B, H) [LSTM: a tuple (h0, c0)] ->
        output (T, B, directions*H) [batch_first: (B, T, ...)] and the final state(s) h_n
        [LSTM: (h_n, c_n)], each (layers*directions, B, H)."""
        name = type(self).__name__
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}: input must be a Tensor, not {type(input).__name__}")
        is_lstm = self.mode == "LSTM"
        if is_lstm and hx is not None and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError(f"{name}: the initial state must be a tuple (h0, c0)")
        unbatched = input.ndim == 2
        if input.ndim not in (2, 3):
            raise ValueError(f"{name}: expected input of 2 (unbatched) or 3 dimensions, got shape {input.shape}")
        if unbatched:
            input = input.unsqueeze(1)
            if hx is not None:
                hx = tuple(h.unsqueeze(1) for h in hx) if is_lstm else hx.unsqueeze(1)
        elif self.batch_first:
            input = input.transpose(0, 1)
        if input.shape[-1] != self.input_size:
            raise ValueError(f"{name}: input has {input.shape[-1]} features per step but input_size={self.input_size}")
        if input.shape[0] == 0:
            raise ValueError(f"{name}: the input sequence is empty (0 time steps)")
        batch = input.shape[1]
        h0 = self._initial(hx[0] if is_lstm and hx is not None else hx, batch, input, "h0" if is_lstm else "hx")
        c0 = self._initial(hx[1], batch, input, "c0") if is_lstm and hx is not None else None
        xp = xp_of(input.data)
        zeros = Tensor._wrap(xp.zeros((batch, self.hidden_size), dtype=input.dtype))

        layer_input, finals_h, finals_c = input, [], []
        for layer in range(self.num_layers):
            outputs = []
            for d, suffix in enumerate(self._suffixes()):
                index = layer * self.num_directions + d
                h_init = h0[index] if h0 is not None else zeros
                c_init = c0[index] if c0 is not None else zeros
                out, h_n, c_n = self._run_direction(layer_input, layer, suffix, h_init, c_init)
                outputs.append(out)
                finals_h.append(h_n)
                finals_c.append(c_n)
            layer_input = outputs[0] if len(outputs) == 1 else cat(outputs, dim=2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)

        output = layer_input
        h_n = stack(finals_h, dim=0)
        state = (h_n, stack(finals_c, dim=0)) if is_lstm else h_n
        if unbatched:
            output = output.squeeze(1)
            state = tuple(s.squeeze(1) for s in state) if is_lstm else state.squeeze(1)
        elif self.batch_first:
            output = output.transpose(0, 1)
        return output, state


class RNN(RNNBase):
    """Elman RNN stack: h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh) (or relu).
    Returns (output, h_n)."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', not {nonlinearity!r}")
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size,
                         num_layers, bias, batch_first, dropout, bidirectional, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity


class LSTM(RNNBase):
    """Long short-term memory stack (gates i, f, g, o).  Returns (output, (h_n, c_n))."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device=device, dtype=dtype)


class GRU(RNNBase):
    """Gated recurrent unit stack (gates r, z, n).  Returns (output, h_n)."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, device=None, dtype=None):
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device=device, dtype=dtype)


# ---------------------------------------------------------------------------- cells
class _CellBase(Module):
    """weight_ih (G*H, in), weight_hh (G*H, H), bias_ih, bias_hh (G*H,), as PyTorch's cells."""

    def __init__(self, input_size, hidden_size, bias, gates, device=None, dtype=None):
        super().__init__()
        _check_sizes(type(self).__name__, input_size, hidden_size)
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bool(bias)
        bound = 1 / math.sqrt(hidden_size)
        self.weight_ih = _uniform_parameter((gates * hidden_size, input_size), bound, dtype)
        self.weight_hh = _uniform_parameter((gates * hidden_size, hidden_size), bound, dtype)
        if bias:
            self.bias_ih = _uniform_parameter((gates * hidden_size,), bound, dtype)
            self.bias_hh = _uniform_parameter((gates * hidden_size,), bound, dtype)
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        if device is not None:
            self.to(device)

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")

    def _batch(self, input, hx):
        """(input as (B, in), hx as (B, H) or None, whether the call was unbatched)."""
        if input.ndim not in (1, 2):
            raise ValueError(f"{type(self).__name__}: expected input of 1 or 2 dimensions, got shape {input.shape}")
        if input.shape[-1] != self.input_size:
            raise ValueError(f"{type(self).__name__}: input has {input.shape[-1]} features but input_size={self.input_size}")
        unbatched = input.ndim == 1
        if unbatched:
            input = input.unsqueeze(0)
            hx = None if hx is None else (tuple(h.unsqueeze(0) for h in hx) if isinstance(hx, tuple) else hx.unsqueeze(0))
        return input, hx, unbatched

    def _zeros(self, input):
        return Tensor._wrap(xp_of(input.data).zeros((input.shape[0], self.hidden_size), dtype=input.dtype))

    def _projections(self, x, h):
        """(x W_ih^T + b_ih, h W_hh^T + b_hh)."""
        xi, hh = x @ self.weight_ih.T, h @ self.weight_hh.T
        if self.bias:
            xi, hh = xi + self.bias_ih, hh + self.bias_hh
        return xi, hh


class RNNCell(_CellBase):
    """h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh) (or relu)."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None, dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNNCell: nonlinearity must be 'tanh' or 'relu', not {nonlinearity!r}")
        super().__init__(input_size, hidden_size, bias, 1, device, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input, hx=None):
        x, h, unbatched = self._batch(input, hx)
        h = self._zeros(x) if h is None else h
        xi, hh = self._projections(x, h)
        h_new = (xi + hh).tanh() if self.nonlinearity == "tanh" else (xi + hh).relu()
        return h_new.squeeze(0) if unbatched else h_new


class LSTMCell(_CellBase):
    """i, f, g, o = sigma, sigma, tanh, sigma (x W_ih^T + b_ih + h W_hh^T + b_hh);
    c' = f*c + i*g;  h' = o*tanh(c').  Returns (h', c')."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, 4, device, dtype)

    def forward(self, input, hx=None):
        x, state, unbatched = self._batch(input, hx)
        h, c = (self._zeros(x), self._zeros(x)) if state is None else state
        xi, hh = self._projections(x, h)
        i, f, g, o = (xi + hh).chunk(4, dim=1)
        c_new = f.sigmoid() * c + i.sigmoid() * g.tanh()
        h_new = o.sigmoid() * c_new.tanh()
        return (h_new.squeeze(0), c_new.squeeze(0)) if unbatched else (h_new, c_new)


class GRUCell(_CellBase):
    """r = sigma(xr + hr);  z = sigma(xz + hz);  n = tanh(xn + r * hn);  h' = (1-z)*n + z*h,
    where x? = x W_i?^T + b_i? and h? = h W_h?^T + b_h?."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, 3, device, dtype)

    def forward(self, input, hx=None):
        x, h, unbatched = self._batch(input, hx)
        h = self._zeros(x) if h is None else h
        xi, hh = self._projections(x, h)
        xr, xz, xn = xi.chunk(3, dim=1)
        hr, hz, hn = hh.chunk(3, dim=1)
        r, z = (xr + hr).sigmoid(), (xz + hz).sigmoid()
        n = (xn + r * hn).tanh()
        h_new = (1 - z) * n + z * h
        return h_new.squeeze(0) if unbatched else h_new


class SimplifiedGRUCell(Module):
    """The GRU of the course notes before the relevance gate is added; the memory cell is the
    hidden state (c<t> = a<t>):

        Gamma_u  = sigma(W_u [c<t-1>, x<t>] + b_u)          the update gate
        c~<t>    = tanh(W_c [c<t-1>, x<t>] + b_c)           the candidate memory
        c<t>     = Gamma_u * c~<t> + (1 - Gamma_u) * c<t-1>

    [c, x] W^T is split as x W_ih^T + c W_hh^T: weight_ih (2H, in), weight_hh (2H, H) and
    bias (2H,) hold the update-gate rows first, then the candidate rows.  When Gamma_u is near 0
    the cell keeps c unchanged, which is how it carries information across many steps."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__()
        _check_sizes("SimplifiedGRUCell", input_size, hidden_size)
        self.input_size, self.hidden_size = input_size, hidden_size
        bound = 1 / math.sqrt(hidden_size)
        self.weight_ih = _uniform_parameter((2 * hidden_size, input_size), bound, dtype)
        self.weight_hh = _uniform_parameter((2 * hidden_size, hidden_size), bound, dtype)
        if bias:
            self.bias = _uniform_parameter((2 * hidden_size,), bound, dtype)
        else:
            self.register_parameter("bias", None)
        if device is not None:
            self.to(device)

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias is not None else ", bias=False")

    def forward(self, input, hx=None):
        unbatched = input.ndim == 1
        x = input.unsqueeze(0) if unbatched else input
        if x.shape[-1] != self.input_size:
            raise ValueError(f"SimplifiedGRUCell: input has {x.shape[-1]} features but input_size={self.input_size}")
        c = Tensor._wrap(xp_of(x.data).zeros((x.shape[0], self.hidden_size), dtype=x.dtype)) if hx is None else \
            (hx.unsqueeze(0) if unbatched else hx)
        a = x @ self.weight_ih.T + c @ self.weight_hh.T
        if self.bias is not None:
            a = a + self.bias
        a_u, a_c = a.chunk(2, dim=1)
        gamma_u, candidate = a_u.sigmoid(), a_c.tanh()
        c_new = gamma_u * candidate + (1 - gamma_u) * c
        return c_new.squeeze(0) if unbatched else c_new
