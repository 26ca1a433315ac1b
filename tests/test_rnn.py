"""nn.RNN / GRU / LSTM, their cells and the simplified GRU: outputs and every gradient against
PyTorch (float64), finite differences for the time-loop ops, and the one-op-per-layer graph."""
import itertools
import types

import numpy as np
import pytest

import tinygrad_seq as tgs
from tinygrad_seq import nn
from tinygrad_seq.backend import BACKENDS, unavailable_reason
from tinygrad_seq import ops

torch = pytest.importorskip("torch")

MODES = ["rnn_tanh", "rnn_relu", "gru", "lstm"]


def make_pair(mode, input_size, hidden, **kwargs):
    """The same layer in tinygrad_seq and PyTorch, float64, with PyTorch's weights copied over."""
    if mode.startswith("rnn"):
        kwargs["nonlinearity"] = mode[4:]
    name = {"gru": "GRU", "lstm": "LSTM"}.get(mode, "RNN")
    theirs = getattr(torch.nn, name)(input_size, hidden, **kwargs).double()
    ours = getattr(nn, name)(input_size, hidden, **kwargs).double()
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    return ours, theirs


def as_pair(array):
    return tgs.Tensor(array, dtype="float64", requires_grad=True), torch.tensor(array, requires_grad=True)


def weighted_sum(tensors, arrays, rng):
    """sum_i <w_i, t_i> with fixed random w_i: every output element takes part in the loss."""
    weights = [rng.standard_normal(a.shape) for a in arrays]
    ours = sum((t * tgs.Tensor(w, dtype="float64")).sum() for t, w in zip(tensors[0], weights))
    theirs = sum((t * torch.tensor(w)).sum() for t, w in zip(tensors[1], weights))
    return ours, theirs


CASES = list(itertools.product(MODES, [False, True], [False, True], [False, True]))


@pytest.mark.parametrize("mode, bidirectional, batch_first, with_state", CASES)
def test_matches_pytorch_outputs_and_gradients(mode, bidirectional, batch_first, with_state):
    rng = np.random.default_rng(abs(hash((mode, bidirectional, batch_first, with_state))) % 2 ** 32)
    I, H, T, B = (int(v) for v in rng.integers(1, 6, size=4))
    layers = int(rng.integers(1, 4))
    ours, theirs = make_pair(mode, I, H, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    x, xt = as_pair(rng.standard_normal((B, T, I) if batch_first else (T, B, I)))
    D = 2 if bidirectional else 1
    states = []
    if with_state:
        states = [as_pair(rng.standard_normal((layers * D, B, H))) for _ in range(2 if mode == "lstm" else 1)]
        hx = (states[0][0], states[1][0]) if mode == "lstm" else states[0][0]
        hxt = (states[0][1], states[1][1]) if mode == "lstm" else states[0][1]
        out, final = ours(x, hx)
        out_t, final_t = theirs(xt, hxt)
    else:
        out, final = ours(x)
        out_t, final_t = theirs(xt)
    finals = list(final) if mode == "lstm" else [final]
    finals_t = list(final_t) if mode == "lstm" else [final_t]
    assert out.shape == tuple(out_t.shape)
    np.testing.assert_allclose(out.numpy(), out_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    for f, ft in zip(finals, finals_t):
        np.testing.assert_allclose(f.numpy(), ft.detach().numpy(), rtol=1e-10, atol=1e-12)

    loss, loss_t = weighted_sum(([out] + finals, [out_t] + finals_t), [out.numpy()] + [f.numpy() for f in finals], rng)
    loss.backward()
    loss_t.backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-9, atol=1e-11)
    for (name, p), (_, pt) in zip(ours.named_parameters(), theirs.named_parameters()):
        np.testing.assert_allclose(p.grad.numpy(), pt.grad.numpy(), rtol=1e-9, atol=1e-11, err_msg=name)
    for s, st in states:
        np.testing.assert_allclose(s.grad.numpy(), st.grad.numpy(), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("frozen", ["weight_ih_l0", "weight_hh_l0"])
def test_a_frozen_weight_leaves_the_other_gradients_as_pytorch(mode, frozen):
    """With both weights trainable the RNN and LSTM ops get dW_ih and dW_hh from one GEMM;
    freezing one takes the separate products, which must give PyTorch's gradients too."""
    rng = np.random.default_rng(7)
    ours, theirs = make_pair(mode, 5, 6)
    getattr(ours, frozen).requires_grad = False
    getattr(theirs, frozen).requires_grad_(False)
    x, xt = as_pair(rng.standard_normal((4, 3, 5)))
    (out, _), (out_t, _) = ours(x), theirs(xt)
    loss, loss_t = weighted_sum(([out], [out_t]), [out.numpy()], rng)
    loss.backward()
    loss_t.backward()
    assert getattr(ours, frozen).grad is None
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-9, atol=1e-11)
    for (name, p), (_, pt) in zip(ours.named_parameters(), theirs.named_parameters()):
        if name != frozen:
            np.testing.assert_allclose(p.grad.numpy(), pt.grad.numpy(), rtol=1e-9, atol=1e-11, err_msg=name)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bias", [True, False])
def test_a_batch_first_layer_under_a_linear_head_as_pytorch(mode, bias):
    """The char-LM's shape: a batch_first layer, a Linear head on its output, a loss on the
    logits alone (h_n unused, so its gradient is zeros).  The head multiplies the layer's
    time-major rows where they lie and hands back a gradient the layer reads as it is; outputs
    and every gradient as PyTorch's."""
    rng = np.random.default_rng(7)
    I, H, T, B, V = 3, 4, 5, 2, 6
    ours, theirs = make_pair(mode, I, H, batch_first=True, bias=bias)
    head_t = torch.nn.Linear(H, V).double()
    head = nn.Linear(H, V).double()
    head.load_state_dict({k: v.detach().numpy() for k, v in head_t.state_dict().items()})
    x, xt = as_pair(rng.standard_normal((B, T, I)))
    logits, logits_t = head(ours(x)[0]).reshape(B * T, V), head_t(theirs(xt)[0]).reshape(B * T, V)
    np.testing.assert_allclose(logits.numpy(), logits_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    target = rng.integers(0, V, size=B * T)
    tgs.nn.functional.cross_entropy(logits, tgs.Tensor(target)).backward()
    torch.nn.functional.cross_entropy(logits_t, torch.tensor(target)).backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-9, atol=1e-11)
    for (name, p), (_, pt) in zip(list(ours.named_parameters()) + list(head.named_parameters()),
                                  list(theirs.named_parameters()) + list(head_t.named_parameters())):
        np.testing.assert_allclose(p.grad.numpy(), pt.grad.numpy(), rtol=1e-9, atol=1e-11, err_msg=name)


@pytest.mark.parametrize("mode", MODES)
def test_unbatched_input_float32_and_no_bias(mode):
    rng = np.random.default_rng(1)
    ours, theirs = make_pair(mode, 3, 4, num_layers=2, bias=False, bidirectional=True)
    assert all("bias" not in n for n, _ in ours.named_parameters())
    ours.float(), theirs.float()
    x = rng.standard_normal((5, 3)).astype(np.float32)
    out, final = ours(tgs.Tensor(x))
    out_t, final_t = theirs(torch.tensor(x))
    assert out.shape == (5, 8) and out.dtype == np.float32
    np.testing.assert_allclose(out.numpy(), out_t.detach().numpy(), atol=1e-5)
    h, ht = (final[0], final_t[0]) if mode == "lstm" else (final, final_t)
    assert h.shape == (4, 4)
    np.testing.assert_allclose(h.numpy(), ht.detach().numpy(), atol=1e-5)


def test_dropout_between_layers_only_in_training():
    rng = np.random.default_rng(2)
    ours, theirs = make_pair("lstm", 3, 5, num_layers=3, dropout=0.5)
    x = rng.standard_normal((6, 2, 3))
    ours.eval(), theirs.eval()
    np.testing.assert_allclose(ours(tgs.Tensor(x, dtype="float64"))[0].numpy(),
                               theirs(torch.tensor(x))[0].detach().numpy(), atol=1e-12)
    ours.train()
    tgs.manual_seed(0)
    a = ours(tgs.Tensor(x, dtype="float64"))[0].numpy()
    tgs.manual_seed(0)
    b = ours(tgs.Tensor(x, dtype="float64"))[0].numpy()
    c = ours(tgs.Tensor(x, dtype="float64"))[0].numpy()
    assert np.array_equal(a, b) and not np.allclose(a, c)  # seeded masks, fresh each call
    # a one-layer stack has no "between layers": dropout changes nothing
    with pytest.warns(UserWarning):
        single, _ = make_pair("gru", 3, 5, num_layers=1, dropout=0.5)
    single.train()
    np.testing.assert_array_equal(single(tgs.Tensor(x, dtype="float64"))[0].numpy(),
                                  single.eval()(tgs.Tensor(x, dtype="float64"))[0].numpy())


@pytest.mark.parametrize("cell", ["RNNCell", "GRUCell", "LSTMCell", "RNNCell_relu"])
def test_cells_match_pytorch(cell):
    rng = np.random.default_rng(3)
    name, kwargs = (cell[:-5], {"nonlinearity": "relu"}) if cell.endswith("_relu") else (cell, {})
    theirs = getattr(torch.nn, name)(3, 4, **kwargs).double()
    ours = getattr(nn, name)(3, 4, **kwargs).double()
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x, xt = as_pair(rng.standard_normal((2, 3)))
    h, ht = as_pair(rng.standard_normal((2, 4)))
    c, ct = as_pair(rng.standard_normal((2, 4)))
    if name == "LSTMCell":
        outs, outs_t = list(ours(x, (h, c))), list(theirs(xt, (ht, ct)))
    else:
        outs, outs_t = [ours(x, h)], [theirs(xt, ht)]
    for o, ot in zip(outs, outs_t):
        np.testing.assert_allclose(o.numpy(), ot.detach().numpy(), atol=1e-12)
    loss, loss_t = weighted_sum((outs, outs_t), [o.numpy() for o in outs], rng)
    loss.backward()
    loss_t.backward()
    for a, b in [(x, xt), (h, ht)] + ([(c, ct)] if name == "LSTMCell" else []):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), atol=1e-11)
    for (n, p), (_, pt) in zip(ours.named_parameters(), theirs.named_parameters()):
        np.testing.assert_allclose(p.grad.numpy(), pt.grad.numpy(), atol=1e-11, err_msg=n)
    # no state given means zeros; an unbatched input gives an unbatched output
    first = ours(tgs.Tensor(x.numpy()[0], dtype="float64"))
    first_t = theirs(torch.tensor(x.numpy()[0]))
    first, first_t = (first[0], first_t[0]) if name == "LSTMCell" else (first, first_t)
    assert first.shape == (4,)
    np.testing.assert_allclose(first.numpy(), first_t.detach().numpy(), atol=1e-12)


def test_cells_unrolled_equal_the_sequence_op():
    """The readable cells and the kernel-backed sequence op compute the same recurrence."""
    rng = np.random.default_rng(4)
    for name in ("RNN", "GRU", "LSTM"):
        layer = getattr(nn, name)(3, 4).double()
        cell = getattr(nn, name + "Cell")(3, 4).double()
        cell.load_state_dict({k[:-3]: v for k, v in layer.state_dict().items()})
        x = tgs.Tensor(rng.standard_normal((5, 2, 3)), dtype="float64")
        out, _ = layer(x)
        state = None
        for t in range(5):
            state = cell(x[t], state)
            h = state[0] if name == "LSTM" else state
            np.testing.assert_allclose(h.numpy(), out.numpy()[t], atol=1e-12)


@pytest.mark.parametrize("reverse", [False, True])
def test_sequence_ops_pass_gradcheck(reverse):
    rng = np.random.default_rng(5)
    T, B, I, H = 3, 2, 2, 3
    r = lambda *shape: rng.standard_normal(shape) * 0.5
    assert tgs.gradcheck(lambda x, h, wi, wh, bi, bh: ops.RNN.apply(x, h, wi, wh, bi, bh, reverse=reverse),
                         [r(T, B, I), r(B, H), r(H, I), r(H, H), r(H), r(H)])
    assert tgs.gradcheck(lambda x, h, wi, wh, bi, bh: ops.RNN.apply(x, h, wi, wh, bi, bh, nonlinearity="relu",
                                                                          reverse=reverse),
                         [r(T, B, I), r(B, H), r(H, I), r(H, H), r(H), r(H)])
    assert tgs.gradcheck(lambda x, h, c, wi, wh, bi, bh: ops.LSTM.apply(x, h, c, wi, wh, bi, bh, reverse=reverse),
                         [r(T, B, I), r(B, H), r(B, H), r(4 * H, I), r(4 * H, H), r(4 * H), r(4 * H)])
    assert tgs.gradcheck(lambda x, h, wi, wh, bi, bh: ops.GRU.apply(x, h, wi, wh, bi, bh, reverse=reverse),
                         [r(T, B, I), r(B, H), r(3 * H, I), r(3 * H, H), r(3 * H), r(3 * H)])


def test_simplified_gru_cell():
    rng = np.random.default_rng(6)
    cell = nn.SimplifiedGRUCell(3, 4).double()
    assert [n for n, _ in cell.named_parameters()] == ["weight_ih", "weight_hh", "bias"]
    x, c = rng.standard_normal((2, 3)), rng.standard_normal((2, 4))
    a = x @ cell.weight_ih.numpy().T + c @ cell.weight_hh.numpy().T + cell.bias.numpy()
    gamma = 1 / (1 + np.exp(-a[:, :4]))
    expected = gamma * np.tanh(a[:, 4:]) + (1 - gamma) * c
    out = cell(tgs.Tensor(x, dtype="float64"), tgs.Tensor(c, dtype="float64"))
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-12)
    # a closed update gate keeps the memory; an open one replaces it with the candidate
    cell.bias.data[:4] = -50
    np.testing.assert_allclose(cell(tgs.Tensor(x, dtype="float64"), tgs.Tensor(c, dtype="float64")).numpy(), c, atol=1e-12)
    cell.bias.data[:4] = 0

    def forward(x, c, w_ih, w_hh, bias):  # the cell's own forward, with the weights as inputs
        weights = types.SimpleNamespace(input_size=3, hidden_size=4, weight_ih=w_ih, weight_hh=w_hh, bias=bias)
        return nn.SimplifiedGRUCell.forward(weights, x, c)

    assert tgs.gradcheck(forward, [x, c, cell.weight_ih.numpy(), cell.weight_hh.numpy(), cell.bias.numpy()])


def _count_functions(tensor):
    seen, stack = set(), [tensor._ctx]
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        stack.extend(p._ctx for p in fn.parents if p is not None)
    return len(seen)


def test_time_loop_is_one_op_per_layer_and_direction():
    lstm = nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    short = lstm(tgs.randn(5, 2, 3, requires_grad=True))[0].sum()
    long = lstm(tgs.randn(60, 2, 3, requires_grad=True))[0].sum()
    assert _count_functions(short) == _count_functions(long)  # the graph does not grow with T
    out, _ = nn.GRU(3, 4)(tgs.randn(7, 2, 3))
    assert type(out._ctx) is ops.GRU


def test_bad_inputs_have_clear_messages():
    lstm = nn.LSTM(3, 4, num_layers=2)
    with pytest.raises(ValueError, match="input has 5 features per step but input_size=3"):
        lstm(tgs.randn(2, 1, 5))
    with pytest.raises(ValueError, match=r"expected h0 of shape \(2, 1, 4\)"):
        lstm(tgs.randn(2, 1, 3), (tgs.randn(1, 1, 4), tgs.randn(2, 1, 4)))
    with pytest.raises(TypeError, match="tuple"):
        lstm(tgs.randn(2, 1, 3), tgs.randn(2, 1, 4))
    with pytest.raises(TypeError, match="floating point"):
        nn.GRU(3, 4)(tgs.Tensor(np.zeros((2, 1, 3), dtype=np.int64)))
    with pytest.raises(TypeError, match="float64"):
        nn.RNN(3, 4)(tgs.randn(2, 1, 3, dtype="float64"))
    with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
        nn.GRU(3, 0)
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.RNN(3, 4, nonlinearity="sigmoid")


AVAILABLE = [name for name, (_, devices) in BACKENDS.items() if "cpu" in devices]


@pytest.mark.parametrize("name", AVAILABLE)
def test_every_cpu_backend_runs_the_layers_alike(name):
    reason = unavailable_reason(name)
    if reason:
        pytest.skip(f"backend {name} unavailable: {reason}")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 3, 4)).astype(np.float32)
    results = {}
    for backend in ("numpy", name):
        tgs.manual_seed(0)
        layer = nn.LSTM(4, 5, num_layers=2, bidirectional=True)
        inp = tgs.Tensor(x, requires_grad=True)
        with tgs.backend(backend):
            out, (h, c) = layer(inp)
            (out.sum() + (h * h).sum() + c.sum()).backward()
        results[backend] = [out.numpy(), inp.grad.numpy()] + [p.grad.numpy() for p in layer.parameters()]
    for ref, got in zip(results["numpy"], results[name]):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", AVAILABLE)
def test_a_training_lstm_and_an_inference_lstm_give_the_same_states(name):
    """Training, the LSTM op hands its rows [x_t | 1 | h_{t-1}] to lstm_forward_xh, which does
    the input projection inside each step's product; under no_grad (no dW_hh wanted) it projects
    the inputs first and calls lstm_forward.  Both give the same states, bias or not."""
    reason = unavailable_reason(name)
    if reason:
        pytest.skip(f"backend {name} unavailable: {reason}")
    from tinygrad_seq.backend import observe_kernels
    x = tgs.Tensor(np.random.default_rng(3).standard_normal((7, 3, 5)), dtype="float64")
    for bias in (True, False):
        tgs.manual_seed(1)
        layer = nn.LSTM(5, 19, bias=bias).double()
        calls = {}
        with tgs.backend(name), observe_kernels(lambda family, function, *_: calls.setdefault(function, 1)):
            training, (h_training, c_training) = layer(x)
            with tgs.no_grad():
                inference, (h_inference, c_inference) = layer(x)
        assert {"lstm_forward_xh", "lstm_forward"} <= set(calls)
        for got, expected in ((training, inference), (h_training, h_inference), (c_training, c_inference)):
            np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-12, atol=1e-13)
