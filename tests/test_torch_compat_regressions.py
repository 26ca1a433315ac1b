"""Regression tests for the PyTorch-compatibility bugs of issue 20, one per bug."""
import io
import os
import warnings

import numpy as np
import pytest
import torch

import tinygrad_seq as tgs
from tinygrad_seq import Tensor, Value, nn
from tinygrad_seq.utils.data import DataLoader, Dataset, TensorDataset, default_collate


# ---------------------------------------------------------------------------- (values, indices)
def test_max_over_a_batch_of_two_unpacks_values_and_indices():
    x = tgs.tensor([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]])
    values, indices = x.max(dim=1)
    assert values.tolist() == [5.0, 7.0] and indices.tolist() == [1, 0]
    assert type(x.max(1)).__name__ == "max" and x.max(1).indices.dtype == np.int64
    assert isinstance(x.min(0), tgs.return_types.min)


@pytest.mark.parametrize("op", ["max", "min", "sort", "topk", "kthvalue", "median"])
def test_the_gradient_goes_to_the_returned_index_on_ties(op):
    data = np.array([[2.0, 2.0, 1.0, 2.0], [0.0, 3.0, 3.0, 0.0]])
    call = {"max": lambda t: t.max(1), "min": lambda t: t.min(1), "sort": lambda t: t.sort(1),
            "topk": lambda t: t.topk(1, 1), "kthvalue": lambda t: t.kthvalue(2, 1), "median": lambda t: t.median(1)}[op]
    ours = Tensor(data, dtype=np.float64, requires_grad=True)
    out = call(ours)
    out.values.sum().backward()
    picked = np.zeros_like(data)
    idx = out.indices.numpy().reshape(2, -1)
    for row in range(2):
        picked[row, idx[row]] = 1
    np.testing.assert_array_equal(ours.grad.numpy(), picked)   # one entry per value, not split
    assert set(np.unique(ours.grad.numpy())) <= {0.0, 1.0}
    theirs = torch.tensor(data, requires_grad=True)
    if op in ("max", "min", "sort"):  # PyTorch's choice among ties is the first here too (kthvalue's
        # and median's choice depends on its selection algorithm, documented as unspecified)
        call(theirs).values.sum().backward()
        np.testing.assert_array_equal(ours.grad.numpy(), theirs.grad.numpy())


# ---------------------------------------------------------------------------- dtype= and device=
LAYERS = {
    "Linear": lambda **k: nn.Linear(3, 4, **k), "Embedding": lambda **k: nn.Embedding(5, 3, **k),
    "LayerNorm": lambda **k: nn.LayerNorm(3, **k), "BatchNorm1d": lambda **k: nn.BatchNorm1d(3, **k),
    "BatchNorm2d": lambda **k: nn.BatchNorm2d(3, **k), "Conv1d": lambda **k: nn.Conv1d(2, 3, 3, **k),
    "Conv2d": lambda **k: nn.Conv2d(2, 3, 3, **k), "RNN": lambda **k: nn.RNN(3, 4, **k),
    "LSTM": lambda **k: nn.LSTM(3, 4, num_layers=2, bidirectional=True, **k), "GRU": lambda **k: nn.GRU(3, 4, **k),
    "RNNCell": lambda **k: nn.RNNCell(3, 4, **k), "LSTMCell": lambda **k: nn.LSTMCell(3, 4, **k),
    "GRUCell": lambda **k: nn.GRUCell(3, 4, **k),
}


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("dtype", ["float64", tgs.float64, np.float64])
def test_layers_honour_dtype_and_device_without_cast_warnings(name, dtype):
    with warnings.catch_warnings():
        warnings.simplefilter("error")     # a float64 RNN printed "overflow encountered in cast"
        layer = LAYERS[name](dtype=dtype, device="cpu")
    tensors = list(layer.parameters()) + [b for b in layer.buffers() if b.dtype.kind == "f"]
    assert tensors and all(t.dtype == np.float64 for t in tensors), name
    assert all(t.device == "cpu" for t in tensors)


def test_a_float64_lstm_runs_on_float64_input():
    lstm = nn.LSTM(3, 4, dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, (h, c) = lstm(tgs.randn(5, 2, 3, dtype=tgs.float64))
    assert out.dtype == h.dtype == c.dtype == np.float64


# ---------------------------------------------------------------------------- utils.data
def test_dataloader_batches_shuffles_reproducibly_and_drops_the_last():
    X, y = tgs.arange(10).reshape(10, 1).float(), tgs.arange(10)
    ds = TensorDataset(X, y)
    assert len(ds) == 10 and [t.tolist() for t in ds[2]] == [[2.0], 2]
    plain = list(DataLoader(ds, batch_size=4))
    assert [b[1].tolist() for b in plain] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert len(DataLoader(ds, batch_size=4)) == 3 and len(DataLoader(ds, batch_size=4, drop_last=True)) == 2
    assert [len(b[1]) for b in DataLoader(ds, batch_size=4, drop_last=True)] == [4, 4]

    def order(seed):
        loader = DataLoader(ds, batch_size=3, shuffle=True, generator=tgs.Generator().manual_seed(seed))
        return [[v for b in loader for v in b[1].tolist()] for _ in range(2)]
    first, again = order(0), order(0)
    assert first == again                              # the generator makes it reproducible
    assert first[0] != first[1]                        # a fresh permutation each epoch
    assert sorted(first[0]) == list(range(10))         # every sample once
    assert order(1) != first


def test_default_collate_of_tuples_dicts_numbers_and_strings():
    batch = default_collate([({"a": tgs.ones(2), "n": 1}, 0.5, "x"), ({"a": tgs.zeros(2), "n": 2}, 1.5, "y")])
    (fields, weights, names) = batch
    assert fields["a"].shape == (2, 2) and fields["n"].tolist() == [1, 2] and fields["n"].dtype == np.int64
    assert weights.dtype == np.float64 and names == ["x", "y"]

    class Ragged(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return [1] * (i + 1)
    with pytest.raises(RuntimeError, match="different lengths"):
        list(DataLoader(Ragged(), batch_size=2))


# ---------------------------------------------------------------------------- save / load
def test_save_and_load_round_trip_state_dicts_and_nested_containers(tmp_path):
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    opt = tgs.optim.Adam(model.parameters())
    model(tgs.randn(4, 3)).sum().backward()
    opt.step()
    path = tmp_path / "model.pt"
    tgs.save(model.state_dict(), path)
    loaded = tgs.load(path)
    assert list(loaded) == list(model.state_dict())
    for k, v in model.state_dict().items():
        assert isinstance(loaded[k], Tensor) and loaded[k].dtype == v.dtype
        np.testing.assert_array_equal(loaded[k].numpy(), v.numpy())
    nested = {"epoch": 3, "loss": float("nan"), 7: ("a", [tgs.ones(2, dtype=tgs.int64), None]),
              "arr": np.arange(3), "opt": opt.state_dict() if hasattr(opt, "state_dict") else {}}
    buffer = io.BytesIO()
    tgs.save(nested, buffer)
    buffer.seek(0)
    back = tgs.load(buffer)
    assert back["epoch"] == 3 and np.isnan(back["loss"]) and back[7][0] == "a" and back[7][1][1] is None
    assert back[7][1][0].tolist() == [1, 1] and back[7][1][0].dtype == np.int64
    assert isinstance(back["arr"], np.ndarray)
    assert os.listdir(tmp_path) == ["model.pt"]              # no temporary file left behind
    with np.load(path, allow_pickle=False) as archive:       # readable without pickle
        assert "__header__" in archive.files


def test_load_refuses_foreign_files_with_one_line(tmp_path):
    torch_file = tmp_path / "torch.pt"
    torch.save({"w": torch.ones(2)}, torch_file)
    with pytest.raises(ValueError, match="not a tgs.save file|not written by tgs.save"):
        tgs.load(torch_file)
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="corrupt"):
        tgs.load(tmp_path / "junk.pt")
    with pytest.raises(TypeError, match="no pickle"):
        tgs.save({"f": lambda: 0}, tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()


# ---------------------------------------------------------------------------- __setitem__ and in place
def test_setitem_slices_masks_and_indices():
    x = tgs.zeros(3, 4)
    x[0] = 1
    x[:, 1] = tgs.tensor([5.0, 6.0, 7.0])
    x[x > 5] = -1
    x[[0, 2], [3, 0]] = 9
    assert x.tolist() == [[1, 5, 1, 9], [0, -1, 0, 0], [9, -1, 0, 0]]


def test_setitem_is_recorded_in_the_graph_and_refused_on_leaves_that_require_grad():
    w = tgs.tensor([1.0, 2.0, 3.0], requires_grad=True)
    v = tgs.tensor(10.0, requires_grad=True)
    y = w * 2
    y[1] = v * 3
    y.sum().backward()
    assert y.tolist() == [2.0, 30.0, 6.0] and w.grad.tolist() == [2.0, 0.0, 2.0] and v.grad.item() == 3.0
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad.*no_grad"):
        w[0] = 5.0
    with tgs.no_grad():
        w[0] = 5.0
    assert w.tolist() == [5.0, 2.0, 3.0] and w.is_leaf
    c = tgs.zeros(2)
    c[0] = v                                            # a constant that now depends on v
    assert c.requires_grad and not c.is_leaf


@pytest.mark.parametrize("name,call,expected", [
    ("copy_", lambda t: t.copy_(tgs.tensor([4.0, 5.0, 6.0])), [4.0, 5.0, 6.0]),
    ("fill_", lambda t: t.fill_(7), [7.0, 7.0, 7.0]),
    ("zero_", lambda t: t.zero_(), [0.0, 0.0, 0.0]),
    ("clamp_", lambda t: t.clamp_(-1.5, 1.5), [-1.0, 1.5, 1.5]),
    ("mul_", lambda t: t.mul_(2), [-2.0, 4.0, 6.0]),
    ("add_", lambda t: t.add_(tgs.ones(3), alpha=0.5), [-0.5, 2.5, 3.5]),
    ("iadd", lambda t: t.__iadd__(1), [0.0, 3.0, 4.0]),
])
def test_in_place_ops_under_no_grad(name, call, expected):
    p = nn.Parameter(tgs.tensor([-1.0, 2.0, 3.0]))
    data_before = p.data
    with tgs.no_grad():
        out = call(p)
    assert out is p and p.tolist() == expected and p.data is data_before and p.is_leaf and p.requires_grad
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        call(p)


def test_in_place_ops_on_graph_tensors_are_differentiable():
    x = tgs.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = x * 1
    y.mul_(3).add_(x).clamp_(max=5.0)
    y.sum().backward()
    assert y.tolist() == [4.0, -8.0, 5.0] and x.grad.tolist() == [4.0, 4.0, 0.0]


# ---------------------------------------------------------------------------- factories and aliases
def test_factories_with_dtype_aliases_device_and_cuda():
    assert tgs.arange(5).dtype == tgs.long and tgs.arange(0, 1, 0.5).dtype == tgs.float32
    assert tgs.arange(3, dtype=tgs.float64).dtype == np.float64
    assert tgs.linspace(0, 1, 5, dtype=tgs.double).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert tgs.full((2,), 3).dtype == np.int64 and tgs.full((2,), 3.0).dtype == np.float32
    assert tgs.full((2,), 3, dtype=tgs.float16).dtype == np.float16
    assert (tgs.int32, tgs.int, tgs.half, tgs.bool, tgs.uint8) == ("int32", "int32", "float16", "bool", "uint8")
    device = tgs.device("cpu")
    assert str(device) == "cpu" and device == "cpu" and tgs.ones(2).to(device).device == "cpu"
    assert nn.Linear(2, 2, device=tgs.device("cpu")).weight.device == "cpu"
    assert isinstance(tgs.cuda.is_available(), bool)
    assert tgs.ones(2).to(tgs.float64).dtype == np.float64          # a positional dtype is a cast
    assert tgs.ones(2).to("cpu", tgs.float64).dtype == np.float64


def test_multinomial_respects_weights_and_replacement():
    tgs.manual_seed(0)
    probs = tgs.tensor([[0.0, 1.0, 3.0], [1.0, 0.0, 0.0]])
    draws = tgs.multinomial(probs, 200, replacement=True)
    assert draws.shape == (2, 200) and draws.dtype == np.int64
    assert set(draws[0].tolist()) == {1, 2} and set(draws[1].tolist()) == {0}
    share = (draws[0] == 2).float().mean().item()
    assert 0.65 < share < 0.85                                      # 3 / 4 expected
    distinct = tgs.multinomial(tgs.ones(5), 5)
    assert sorted(distinct.tolist()) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="replacement=True"):
        tgs.multinomial(tgs.tensor([1.0, 0.0]), 2)
    g = tgs.Generator().manual_seed(3)
    assert tgs.multinomial(tgs.ones(10), 4, generator=g).tolist() == \
        tgs.multinomial(tgs.ones(10), 4, generator=tgs.Generator().manual_seed(3)).tolist()


# ---------------------------------------------------------------------------- Value.dot, clip_grad_norm_
def test_value_dot_takes_numpy_scalars():
    w = [Value(1.0), np.float64(2.0), np.float32(0.5)]
    x = [Value(3.0), Value(4.0), np.int64(2)]
    out = Value.dot(w, x, start=np.float64(1.0))
    out.backward()
    assert out.data == 1.0 + 3.0 + 8.0 + 1.0 and w[0].grad == 3.0 and x[0].grad == 1.0 and x[1].grad == 2.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf")])
def test_clip_grad_norm_returns_the_norm_in_the_gradients_dtype(dtype, norm_type):
    layer = nn.Linear(3, 2, dtype=dtype)
    (layer(tgs.randn(4, 3, dtype=dtype)) ** 2).sum().backward()
    twin = torch.nn.Linear(3, 2, dtype=torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():
        twin.weight.copy_(torch.tensor(layer.weight.numpy()))
        twin.bias.copy_(torch.tensor(layer.bias.numpy()))
        twin.weight.grad, twin.bias.grad = torch.tensor(layer.weight.grad.numpy()), torch.tensor(layer.bias.grad.numpy())
    norm = nn.utils.clip_grad_norm_(layer.parameters(), 0.1, norm_type=norm_type)
    expected = torch.nn.utils.clip_grad_norm_(twin.parameters(), 0.1, norm_type=norm_type)
    assert norm.dtype == dtype and norm.shape == ()
    np.testing.assert_allclose(norm.item(), expected.item(), rtol=1e-5)
    np.testing.assert_allclose(layer.weight.grad.numpy(), twin.weight.grad.numpy(), rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------- the wrong cases
def test_reductions_over_zero_size_axes_follow_pytorch():
    empty = tgs.zeros(0, 3, requires_grad=True)
    assert empty.sum(0).tolist() == [0.0, 0.0, 0.0]
    assert np.isnan(empty.mean(0).numpy()).all() and np.isnan(empty.var(0).numpy()).all()
    assert np.isnan(empty.mean().item()) and np.isnan(empty.std(0).numpy()).all()
    empty.sum().backward()
    assert empty.grad.shape == (0, 3)


def test_squeeze_of_size_zero_and_0d_tensors():
    assert tgs.zeros(0, 3).squeeze(0).shape == (0, 3) and tgs.zeros(0, 1, 3).squeeze().shape == (0, 3)
    assert tgs.tensor(2.0).squeeze().shape == () and tgs.tensor(2.0).squeeze(0).shape == ()
    assert tgs.zeros(1, 2, 1).squeeze((0, 2)).shape == (2,)


def test_var_and_std_over_one_element_are_nan_as_pytorch():
    x = tgs.tensor([[1.0], [2.0]])
    assert np.isnan(x.var(1).numpy()).all() and np.isnan(x.std(1).numpy()).all()
    assert x.var(1, unbiased=False).tolist() == [0.0, 0.0]


def test_gradient_of_zero_to_the_power_x():
    x = tgs.tensor([2.0, 0.0, 0.5], dtype=tgs.float64, requires_grad=True)
    (0.0 ** x).sum().backward()
    tx = torch.tensor([2.0, 0.0, 0.5], requires_grad=True, dtype=torch.float64)
    (0.0 ** tx).sum().backward()
    assert x.grad.tolist() == tx.grad.tolist() == [0.0, 0.0, 0.0]
    base = tgs.tensor([0.0, 2.0], dtype=tgs.float64, requires_grad=True)
    (base ** tgs.tensor([0.0, 0.0], dtype=tgs.float64)).sum().backward()
    assert base.grad.tolist() == [0.0, 0.0]                # x ** 0: no NaN from 0 * 0 ** -1


def test_sum_over_dim_0_of_a_0d_tensor():
    x = tgs.tensor(3.0, requires_grad=True)
    y = x.sum(0)
    assert y.shape == () and y.item() == 3.0
    y.backward()
    assert x.grad.item() == 1.0
    assert x.mean(-1).item() == 3.0 and x.max(0).values.item() == 3.0 and x.max(0).indices.item() == 0


def test_scatter_and_index_add_in_place_under_no_grad():
    x = tgs.zeros(2, 3)
    with tgs.no_grad():
        x.scatter_(1, tgs.tensor([[2], [0]]), tgs.tensor([[5.0], [6.0]]))
        x.index_add_(0, tgs.tensor([1, 1]), tgs.ones(2, 3))
        x.scatter_add_(1, tgs.tensor([[0, 0]]), tgs.tensor([[1.0, 1.0]]))
    assert x.tolist() == [[2.0, 0.0, 5.0], [8.0, 2.0, 2.0]]


def test_module_to_a_dtype_casts_as_in_pytorch():
    """model.to(torch.float64): a dtype in the device's place casts every parameter."""
    model = tgs.nn.Sequential(tgs.nn.Linear(3, 4), tgs.nn.ReLU(), tgs.nn.Linear(4, 2))
    assert model.to(tgs.float64) is model
    assert {p.dtype for p in model.parameters()} == {np.dtype("float64")}
    model.to("cpu", tgs.float32)
    assert {p.dtype for p in model.parameters()} == {np.dtype("float32")}
    model.to(np.float64)
    out = model(tgs.randn(5, 3, dtype="float64"))
    assert out.dtype == np.float64 and model.device == "cpu"
