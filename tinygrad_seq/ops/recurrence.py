"""Recurrence: the whole time loop of one RNN, LSTM or GRU layer in one direction is ONE op,
not T little graph nodes.  Its forward does the input projection for every time step as one
GEMM and hands the loop to the `recurrence` kernels (`tinygrad_seq.backend.kernels`: NumPy
reference, Numba, Cython or CUDA, see kernels/API.md); a training LSTM hands the projection to
the loop too (lstm_forward_xh: each step multiplies [x_t | 1 | h_{t-1}] by [W_ih | b | W_hh]).
Its backward is backpropagation through time: the kernel walks the steps backwards giving
dL/d(pre-activation) at every step, and the weight gradients are again single GEMMs over all
steps.  The reverse direction of a bidirectional layer is the same op on time-flipped input.
nn.RNN, nn.LSTM and nn.GRU stack these over layers and directions; nn's cells state the same
equations with ordinary ops."""
from ..backend import kernels
from ..device import device_of, xp_of
from ..tensor import Function, is_grad_enabled
from .linear import matmul_rows
from .movement import contiguous as _contiguous


def _check_dtypes(name, x, *arrays):
    if x.dtype.kind != "f":
        raise TypeError(f"{name}: the input must be floating point, not {x.dtype} "
                        "(one-hot inputs: tgs.one_hot(ids, V).float())")
    for a in arrays:
        if a is not None and a.dtype != x.dtype:
            raise TypeError(f"{name}: input is {x.dtype} but a weight or state is {a.dtype}; "
                            "convert the input (x.float()) or the module (.double()) so they match")


class _Recurrence(Function):
    """What the three time-loop ops share: flipping time, the input projection and the GEMMs
    that turn per-step gradients into weight gradients."""

    def _prepare(self, x, w_ih, bias, reverse, hidden=0):
        """(rows, weight): rows[:T, :, :self.wide] are the inputs in the op's time order, with a
        column of ones after them when there is a bias, and weight = [W_ih | b] their weights, so
        that rows @ weight^T = x_t W_ih^T + bias for every step (_project).  The bias is the
        weight of that constant input (the notes' x_0 = 1), so no pass over xw adds it, and in
        backward the GEMM that gives dW_ih gives db too.

        `hidden` (RNN, LSTM: their weight gradients are one GEMM, see _input_grads) leaves that
        many more columns in `rows` when dW_hh will be wanted, and one more step: row t then
        holds [x_t | 1 | h_{t-1}], h0 and the kernel's states going into those columns one step
        down (_states_beside), so that backward neither copies the inputs nor the states again."""
        self.reverse = reverse
        x = x[::-1] if reverse else x  # the reverse direction is the forward one on flipped time
        T, B, I = x.shape
        xp = xp_of(x)
        self.steps = T
        self.wide = I if bias is None else I + 1
        # no backward can come under no_grad (sampling): then no room, and the inputs are projected
        room = hidden if hidden and self.needs_input_grad[self.W_IH + 1] and is_grad_enabled() else 0
        if bias is None and not room:
            rows = _contiguous(x)
        else:
            rows = xp.empty((T + 1 if room else T, B, self.wide + room), dtype=x.dtype)
            rows[:T, :, :I] = x
            if bias is not None:
                rows[:T, :, I] = 1
        weight = w_ih if bias is None else xp.concatenate([w_ih, bias[:, None]], axis=1)
        self.kernels = kernels("recurrence", device_of(x))
        return rows, weight

    def _project(self, rows, weight):
        """xw (T, B, G) = x_t W_ih^T + bias for every step, as one GEMM over _prepare's rows."""
        T, B = self.steps, rows.shape[1]
        return matmul_rows(rows[:T, :, :self.wide].reshape(T * B, -1), weight.T).reshape(T, B, -1)

    def _states_beside(self, rows, h0):
        """Where the kernel is to write hs (its hs_out): rows' state columns one step down, h0
        written above them; None when _prepare left no room (dW_hh not wanted, or GRU)."""
        if rows.shape[-1] == self.wide:
            return None
        rows[0, :, self.wide:] = h0
        return rows[1:, :, self.wide:]

    def _time_order(self, hs):
        return hs[::-1] if self.reverse else hs

    def _incoming(self, d_out, d_last):
        """dL/dh_t in the op's own time order, with the final state's gradient added at t = T-1.
        When that gradient is zero (h_n unused: the engine hands in zeros) d_out is the answer,
        read in place when it is contiguous (a batch_first LSTM under a Linear head: 2 MB
        fewer to copy per lstm_lm step); d_out itself is never modified, another op may share it."""
        xp = xp_of(d_out)
        dhs = d_out[::-1] if self.reverse else d_out
        if not xp.any(d_last):
            return _contiguous(dhs)
        dhs = xp.array(dhs, copy=True, order="C")
        dhs[-1] += d_last
        return dhs

    def _input_grads(self, d_proj, rows, w_ih, d_hidden, h0, hs):
        """(dx, dW_ih, db, dW_hh), all steps at once: dx = d_proj W_ih;
        [dW_ih | db] = d_proj^T [x | 1] (db None without a bias column);  dW_hh = d_hidden^T h_prev.
        `rows` is _prepare's: [x | 1] and room for h_prev when dW_hh is wanted from RNN or LSTM.

        When d_hidden is d_proj (RNN, LSTM) the weight gradients are one GEMM,
        d_proj^T [x | 1 | h_prev]: with a character vocabulary x has ~65 columns, and a product
        that narrow runs at two thirds of BLAS's speed on its own (lstm_lm: 9.8 -> 8.5 ms)."""
        T, B, G = d_proj.shape
        flat = d_proj.reshape(T * B, G)
        I = w_ih.shape[1]
        wide = self.wide                 # I, or I + 1 with the bias column
        dx = dw_ih = db = dw_hh = None
        if self.needs_input_grad[0]:
            dx = matmul_rows(flat, w_ih).reshape(T, B, I)
            dx = dx[::-1] if self.reverse else dx
        want_hh = self.needs_input_grad[self.W_IH + 1]
        if d_hidden is d_proj and want_hh:   # rows[t] = [x_t | 1 | h_{t-1}] (_prepare, _states_beside)
            both = matmul_rows(flat.T, rows[:T].reshape(T * B, -1))
            # contiguous, as PyTorch's .grad: clip_grad_norm_ and Adam's fused update would each
            # copy a column slice of `both` (1.3 MB per lstm_lm step) to read it as one row
            dw_hh = xp_of(both).ascontiguousarray(both[:, wide:])
        else:
            both = None
            if self.needs_input_grad[self.W_IH] or wide > I:
                both = matmul_rows(flat.T, rows[:T, :, :wide].reshape(T * B, -1))
            if want_hh:
                dw_hh = matmul_rows(d_hidden.reshape(T * B, -1).T, self._previous(h0, hs).reshape(T * B, -1))
        if both is not None:
            dw_ih = xp_of(both).ascontiguousarray(both[:, :I])
            db = both[:, I] if wide > I else None
        return dx, dw_ih, db, dw_hh

    @staticmethod
    def _previous(h0, hs):
        """h_{t-1} for t = 0..T-1: h0 then hs[:-1]."""
        out = xp_of(hs).empty_like(hs)
        out[0] = h0
        out[1:] = hs[:-1]
        return out


class RNN(_Recurrence):
    """Elman RNN over a whole sequence, one layer and direction:
    h_t = act(x_t W_ih^T + b_ih + b_hh + h_{t-1} W_hh^T), act = tanh or relu.

    Inputs x (T,B,I), h0 (B,H), w_ih (H,I), w_hh (H,H), b_ih, b_hh (H,) or None.
    Outputs hs (T,B,H) and h_n (B,H).  Backward: the kernel gives dpre_t = dL/d(pre-activation)
    for every step, then dx = dpre W_ih, dW_ih = dpre^T x, dW_hh = dpre^T h_{t-1}, db = sum dpre."""

    W_IH = 2

    def forward(self, x, h0, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh", reverse=False):
        _check_dtypes("RNN", x, h0, w_ih, w_hh, b_ih, b_hh)
        rows, weight = self._prepare(x, w_ih, None if b_ih is None else b_ih + b_hh, reverse, hidden=w_hh.shape[1])
        hs = self.kernels.rnn_forward(self._project(rows, weight), _contiguous(w_hh), _contiguous(h0), nonlinearity,
                                      hs_out=self._states_beside(rows, h0))
        self.nonlinearity = nonlinearity
        self.save_for_backward(rows, h0, w_ih, w_hh, hs)
        return self._time_order(hs), hs[-1]

    def backward(self, d_out, d_hn):
        rows, h0, w_ih, w_hh, hs = self.saved
        dhs = self._incoming(d_out, d_hn)
        dpre, dh0 = self.kernels.rnn_backward(dhs, _contiguous(w_hh), _contiguous(h0), hs, self.nonlinearity)
        dx, dw_ih, db, dw_hh = self._input_grads(dpre, rows, w_ih, dpre, h0, hs)
        return dx, dh0, dw_ih, dw_hh, db, db


class LSTM(_Recurrence):
    """LSTM over a whole sequence, one layer and direction (gates i, f, g, o):
    a_t = x_t W_ih^T + b_ih + b_hh + h_{t-1} W_hh^T;  c_t = f*c_{t-1} + i*g;  h_t = o*tanh(c_t).

    Inputs x (T,B,I), h0, c0 (B,H), w_ih (4H,I), w_hh (4H,H), b_ih, b_hh (4H,) or None.
    Outputs hs (T,B,H), h_n, c_n (B,H).  Backward as RNN with dpre = dL/da_t (T,B,4H).

    Training, a_t is one product per step, [x_t | 1 | h_{t-1}] [W_ih | b | W_hh]^T, on the rows
    that backward reads anyway: lstm_lm's one-hot inputs give a 2048x66 @ 66x1024 projection that
    runs far below the GEMM's peak on its own and writes an 8 MB xw the loop reads back; inside
    the step's product they cost a fifth more of it (lstm_lm step 45.6 -> 42.4 ms, Zen 3)."""

    W_IH = 3

    def forward(self, x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, reverse=False):
        _check_dtypes("LSTM", x, h0, c0, w_ih, w_hh, b_ih, b_hh)
        rows, weight = self._prepare(x, w_ih, None if b_ih is None else b_ih + b_hh, reverse, hidden=w_hh.shape[1])
        h0, c0 = _contiguous(h0), _contiguous(c0)
        hs = self._states_beside(rows, h0)
        if hs is None:   # no room beside the inputs (no dW_hh to come): project them, then loop
            hs, cs, gates = self.kernels.lstm_forward(self._project(rows, weight), _contiguous(w_hh), h0, c0)
        else:            # rows[t] = [x_t | 1 | h_{t-1}]: the loop multiplies it by [W_ih | b | W_hh]
            cs, gates = self.kernels.lstm_forward_xh(rows, weight, _contiguous(w_hh), c0)
        self.save_for_backward(rows, h0, c0, w_ih, w_hh, hs, cs, gates)
        return self._time_order(hs), hs[-1], cs[-1]

    def backward(self, d_out, d_hn, d_cn):
        rows, h0, c0, w_ih, w_hh, hs, cs, gates = self.saved
        dhs = self._incoming(d_out, d_hn)
        dpre, dh0, dc0 = self.kernels.lstm_backward(dhs, _contiguous(d_cn), _contiguous(w_hh), h0, c0, hs, cs, gates)
        dx, dw_ih, db, dw_hh = self._input_grads(dpre, rows, w_ih, dpre, h0, hs)
        return dx, dh0, dc0, dw_ih, dw_hh, db, db


class GRU(_Recurrence):
    """GRU over a whole sequence, one layer and direction (gates r, z, n):
    hh_t = h_{t-1} W_hh^T + b_hh;  r, z = sigma(xw + hh) (their slices);  n = tanh(xw_n + r*hh_n);
    h_t = (1-z)*n + z*h_{t-1}, with xw = x W_ih^T + b_ih (b_hh stays inside because of r*hh_n).

    Backward: the kernel gives dxw = dL/dxw and dhh = dL/dhh for every step; then
    dx = dxw W_ih, dW_ih = dxw^T x, db_ih = sum dxw, dW_hh = dhh^T h_{t-1}, db_hh = sum dhh."""

    W_IH = 2

    def forward(self, x, h0, w_ih, w_hh, b_ih=None, b_hh=None, reverse=False):
        _check_dtypes("GRU", x, h0, w_ih, w_hh, b_ih, b_hh)
        rows, weight = self._prepare(x, w_ih, b_ih, reverse)
        xw = self._project(rows, weight)
        b_hh = xp_of(x).zeros(w_hh.shape[0], dtype=x.dtype) if b_hh is None else _contiguous(b_hh)
        h0 = _contiguous(h0)
        hs, gates, hn = self.kernels.gru_forward(xw, _contiguous(w_hh), b_hh, h0)
        self.save_for_backward(rows, h0, w_ih, w_hh, hs, gates, hn)
        return self._time_order(hs), hs[-1]

    def backward(self, d_out, d_hn):
        rows, h0, w_ih, w_hh, hs, gates, hn = self.saved
        dhs = self._incoming(d_out, d_hn)
        dxw, dhh, dh0 = self.kernels.gru_backward(dhs, _contiguous(w_hh), h0, hs, gates, hn)
        dx, dw_ih, db_ih, dw_hh = self._input_grads(dxw, rows, w_ih, dhh, h0, hs)
        return dx, dh0, dw_ih, dw_hh, db_ih, dhh.sum(axis=(0, 1))
