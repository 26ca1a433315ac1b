"""nn.Module API against PyTorch: parameter names and order, state_dict round trips (including
a torch state_dict loaded as NumPy arrays), strict-loading errors, train/eval, zero_grad,
freezing, Sequential, dtype moves; and the scalar and tensor engines computing the same
gradients on the same small MLP."""
import random

import numpy as np
import pytest
import torch

from tinygrad_seq import Tensor, Value, nn
from tinygrad_seq.nn import functional as F
from tinygrad_seq.scalar_nn import MLP as ScalarMLP

RNG = np.random.default_rng(5)


def torch_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Embedding(10, 6), torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8),
                               torch.nn.ReLU(), torch.nn.LayerNorm(8), torch.nn.Linear(8, 3))


def our_model():
    return nn.Sequential(nn.Embedding(10, 6), nn.Linear(6, 8), nn.BatchNorm1d(8),
                         nn.ReLU(), nn.LayerNorm(8), nn.Linear(8, 3))


def test_names_order_and_shapes_match_torch():
    ours, theirs = our_model(), torch_model()
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [tuple(p.shape) for p in ours.parameters()] == [tuple(p.shape) for p in theirs.parameters()]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert len(ours) == 6 and isinstance(ours[1], nn.Linear) and isinstance(ours[-1], nn.Linear)
    head = ours[:2]
    assert isinstance(head, nn.Sequential) and len(head) == 2 and head[1] is ours[1]
    assert [type(m).__name__ for m in ours] == ["Embedding", "Linear", "BatchNorm1d", "ReLU", "LayerNorm", "Linear"]


def test_torch_state_dict_as_numpy_loads_and_forward_matches():
    theirs = torch_model()
    ids = RNG.integers(0, 10, 5)
    theirs.train()
    theirs(torch.tensor(ids))  # running statistics and num_batches_tracked move away from defaults
    ours = our_model()
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    assert int(ours[2].num_batches_tracked.item()) == 1
    assert ours[2].num_batches_tracked.dtype == np.int64
    np.testing.assert_allclose(ours[2].running_mean.numpy(), theirs[2].running_mean.numpy(), rtol=1e-6)
    for mode in ("train", "eval"):
        getattr(ours, mode)(), getattr(theirs, mode)()
        assert all(m.training == (mode == "train") for m in ours.modules())
        out, tout = ours(Tensor(ids)), theirs(torch.tensor(ids))
        np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-4, atol=1e-5)
        w = RNG.standard_normal(tout.shape).astype(np.float32)
        ours.zero_grad(), theirs.zero_grad()
        (out * Tensor(w)).sum().backward()
        (tout * torch.tensor(w)).sum().backward()
        for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
            np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
    # training mode updated the running statistics exactly as torch did
    for (name, b), (_, tb) in zip(ours.named_buffers(), theirs.named_buffers()):
        np.testing.assert_allclose(b.numpy(), tb.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)


def test_state_dict_round_trip_between_our_models():
    a, b = our_model(), our_model()
    a[2].running_mean.data[...] = RNG.standard_normal(8)
    a[2].num_batches_tracked.data[...] = 7
    sd = a.state_dict()
    assert all(isinstance(v, Tensor) and not v.requires_grad for v in sd.values())
    result = b.load_state_dict(sd)
    assert result.missing_keys == [] and result.unexpected_keys == []
    for (k, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items()):
        np.testing.assert_array_equal(v.numpy(), w.numpy(), err_msg=k)
    # a copy, not shared storage
    b[1].weight.data[...] = 0
    assert np.abs(a[1].weight.numpy()).sum() > 0


def test_strict_loading_errors_name_the_keys():
    model = our_model()
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    missing = dict(sd)
    del missing["2.running_var"]
    with pytest.raises(RuntimeError, match=r"missing keys \['2.running_var'\]"):
        model.load_state_dict(missing)
    extra = dict(sd, **{"9.weight": np.zeros(3)})
    with pytest.raises(RuntimeError, match=r"unexpected keys \['9.weight'\]"):
        model.load_state_dict(extra)
    keys = model.load_state_dict(dict(missing, **{"9.weight": np.zeros(3)}), strict=False)
    assert keys.missing_keys == ["2.running_var"] and keys.unexpected_keys == ["9.weight"]
    before = model[1].weight.numpy().copy()
    wrong = dict(sd, **{"1.weight": np.ones((8, 6), np.float32) * 5, "5.weight": np.zeros((3, 9), np.float32)})
    with pytest.raises(ValueError, match=r"5\.weight.*\(3, 9\).*\(3, 8\)"):
        model.load_state_dict(wrong)
    np.testing.assert_array_equal(model[1].weight.numpy(), before)  # nothing was loaded


def test_zero_grad_and_freezing():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x = Tensor(RNG.standard_normal((5, 3)))
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad(set_to_none=False)
    assert all(np.all(p.grad.numpy() == 0) for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    model[0].requires_grad_(False)
    assert [p.requires_grad for p in model.parameters()] == [False, False, True, True]
    model(x).sum().backward()
    assert model[0].weight.grad is None and model[0].bias.grad is None
    assert model[2].weight.grad is not None
    model.requires_grad_(True)
    model(x).sum().backward()
    assert model[0].weight.grad is not None


def test_double_float_and_to_dtype():
    model = our_model()
    model.double()
    assert all(p.dtype == np.float64 for p in model.parameters())
    assert model[2].running_mean.dtype == np.float64 and model[2].num_batches_tracked.dtype == np.int64
    out = model(Tensor(np.array([1, 2, 3])))
    assert out.dtype == np.float64
    model.float()
    assert all(p.dtype == np.float32 for p in model.parameters())
    assert model.to(dtype=np.float64) is model and model[1].weight.dtype == np.float64


def test_module_registration_and_repr():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(2, 3)
            self.scale = nn.Parameter(np.ones(3))
            self.register_buffer("count", Tensor(np.zeros(1)))
            self.register_buffer("scratch", Tensor(np.zeros(1)), persistent=False)

        def forward(self, x):
            return self.body(x) * self.scale

    net = Net()
    assert [n for n, _ in net.named_parameters()] == ["scale", "body.weight", "body.bias"]
    assert list(net.state_dict()) == ["scale", "count", "body.weight", "body.bias"]
    assert "scratch" not in net.state_dict() and [n for n, _ in net.named_buffers()] == ["count", "scratch"]
    assert "(body): Linear" in repr(net)
    del net.body
    assert [n for n, _ in net.named_parameters()] == ["scale"]

    class Broken(nn.Module):
        def __init__(self):
            self.x = 1

    with pytest.raises(AttributeError, match="super"):
        Broken()


def test_shared_module_listed_once_but_saved_under_every_name_like_torch():
    shared, tshared = nn.Linear(3, 3), torch.nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    theirs = torch.nn.Sequential(tshared, torch.nn.ReLU(), tshared)
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in model.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert list(model.state_dict()) == list(theirs.state_dict())
    model.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    np.testing.assert_array_equal(shared.weight.numpy(), tshared.weight.detach().numpy())


# ---------------------------------------------------------------------------- scalar vs tensor engine
def test_scalar_and_tensor_engines_compute_the_same_gradients_on_the_same_mlp():
    random.seed(1)
    scalar = ScalarMLP(3, [4, 4, 1])
    tensor = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1)).double()
    for layer, linear in zip(scalar.layers, [tensor[0], tensor[2], tensor[4]]):
        linear.weight.data[...] = [[w.data for w in n.w] for n in layer.neurons]
        linear.bias.data[...] = [n.b.data for n in layer.neurons]
    xs = RNG.standard_normal((6, 3))
    ys = RNG.standard_normal(6)
    # the same loss: mean squared error over the batch
    scalar_loss = sum(((scalar(list(x)) - y) ** 2 for x, y in zip(xs, ys)), Value(0.0)) * (1 / len(xs))
    scalar_loss.backward()
    tensor_loss = F.mse_loss(tensor(Tensor(xs, dtype=np.float64)).reshape(-1), Tensor(ys, dtype=np.float64))
    tensor_loss.backward()
    assert tensor_loss.item() == pytest.approx(scalar_loss.data, rel=1e-12)
    for layer, linear in zip(scalar.layers, [tensor[0], tensor[2], tensor[4]]):
        weight_grad = np.array([[w.grad for w in n.w] for n in layer.neurons])
        bias_grad = np.array([n.b.grad for n in layer.neurons])
        np.testing.assert_allclose(linear.weight.grad.numpy(), weight_grad, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(linear.bias.grad.numpy(), bias_grad, rtol=1e-10, atol=1e-12)
    assert np.abs(tensor[0].weight.grad.numpy()).sum() > 0
