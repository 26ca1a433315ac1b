"""Launches per training step of the recurrences: one fused kernel and one GEMM per time step
and direction, each kernel launch with few array arguments (Numba's host cost per launch
grows with them), and the kernel's overload picked once per pass, not at every step."""
import numpy as np
import pytest

import tinygrad_seq as tgs
from tinygrad_seq import nn, optim
from tinygrad_seq.kernels.cuda import _launch
from tinygrad_seq.kernels.cuda import recurrence as cuda_rec
from tinygrad_seq.nn import functional as F

rnn_module = __import__("tinygrad_seq.ops.recurrence", fromlist=["kernels"])

# mode: (forward kernel, backward kernel, array arguments of each) -- before packing, 6/7 for
# the LSTM, 7/9 for the GRU, 3/4 for the plain RNN
KERNELS = {"LSTM": ("_lstm_step", "_lstm_grad_step", 2, 4),
           "GRU": ("_gru_step", "_gru_grad_step", 2, 5),
           "RNN": ("_rnn_step", "_rnn_grad_step", 2, 3)}


def _training_step(mode, V=5, H=3, B=2, T=4, seed=0):
    """Loss and gradients of one Adam step of an nn.<mode> + Linear language model."""
    tgs.manual_seed(seed)
    rng = np.random.default_rng(seed)
    rnn, head = getattr(nn, mode)(V, H, batch_first=True), nn.Linear(H, V)
    params = list(rnn.parameters()) + list(head.parameters())
    opt = optim.Adam(params, lr=1e-2)
    tokens = rng.integers(0, V, size=(B, T + 1))
    x = tgs.one_hot(tgs.Tensor(tokens[:, :-1]), V).float()
    y = tgs.Tensor(tokens[:, 1:].reshape(-1))
    out, _ = rnn(x)
    loss = F.cross_entropy(head(out).reshape(B * T, V), y)
    opt.zero_grad()
    loss.backward()
    grads = [np.array(p.grad.data if hasattr(p.grad, "data") else p.grad) for p in params]
    opt.step()
    return float(loss.item()), grads


@pytest.mark.parametrize("mode", list(KERNELS))
def test_one_training_step_launches_one_kernel_per_time_step_and_direction(monkeypatch, mode):
    T = 4
    reference_loss, reference_grads = _training_step(mode, T=T)    # NumPy reference kernels
    monkeypatch.setattr(rnn_module, "kernels", lambda family, device: cuda_rec)
    matmuls = []
    real_matmul = np.matmul
    monkeypatch.setattr(np, "matmul", lambda *a, **k: matmuls.append(1) or real_matmul(*a, **k))
    specialized = []
    for kernel in (getattr(cuda_rec, name) for name in KERNELS[mode][:2]):
        real = kernel.specialize
        monkeypatch.setattr(kernel, "specialize", lambda *a, real=real: specialized.append(1) or real(*a))
    with _launch.recording_launches() as launches:
        loss, grads = _training_step(mode, T=T)
    forward, backward, forward_arrays, backward_arrays = KERNELS[mode]
    assert [name for name, _ in launches] == [forward] * T + [backward] * T
    assert {arrays for name, arrays in launches if name == forward} == {forward_arrays}
    assert {arrays for name, arrays in launches if name == backward} == {backward_arrays}
    # the recurrent GEMMs (the engine's own products use `@`), and for the LSTM the input
    # projection that its lstm_forward_xh makes in one GEMM before the steps
    assert len(matmuls) == 2 * T + (mode == "LSTM")
    assert len(specialized) == 2                # once per pass
    assert loss == pytest.approx(reference_loss, rel=1e-5)
    for got, expected in zip(grads, reference_grads):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
