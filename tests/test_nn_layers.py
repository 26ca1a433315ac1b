"""Every basic layer against PyTorch: after loading torch's weights, the forward pass and the
gradients of every parameter and of the input agree, in training and evaluation mode; the
fused Functions pass gradcheck; names, shapes and default initialisations match; nn.init."""
import math

import numpy as np
import pytest
import torch
from kernel_checks import assert_close_to_torch as close

import tinygrad_seq as tgs
from tinygrad_seq import Tensor, gradcheck, nn
from tinygrad_seq.nn import functional as F

RNG = np.random.default_rng(1)


def load_torch_weights(ours, theirs):
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})


def compare(ours, theirs, x, training=True, tol=1e-9, input_grad=True):
    """Same output and same gradients (input and every parameter) for the same weights.
    Returns the outputs; the layers are left in the given mode."""
    ours.train(training)
    theirs.train(training)
    floating = x.dtype.kind == "f"
    tx = torch.tensor(x, requires_grad=floating and input_grad)
    ox = Tensor(x, dtype=x.dtype, requires_grad=floating and input_grad)
    y, ty = ours(ox), theirs(tx)
    close(y, ty, tol)
    g = RNG.standard_normal(y.shape).astype(y.dtype)
    y.backward(Tensor(g, dtype=g.dtype))
    ty.backward(torch.tensor(g))
    if floating and input_grad:
        close(ox.grad, tx.grad, tol)
    ours_params = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        if p.requires_grad:
            close(ours_params[name].grad, p.grad, tol)
    return y, ty


def same_names_and_shapes(ours, theirs):
    assert [(k, tuple(v.shape)) for k, v in ours.named_parameters()] == \
        [(k, tuple(v.shape)) for k, v in theirs.named_parameters()]
    assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()]


# ---------------------------------------------------------------------------- Linear
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 4), (4,)], ids=str)
@pytest.mark.parametrize("training", [True, False])
def test_linear_matches_torch(bias, shape, training):
    ours, theirs = nn.Linear(4, 3, bias=bias).double(), torch.nn.Linear(4, 3, bias=bias).double()
    same_names_and_shapes(ours, theirs)
    load_torch_weights(ours, theirs)
    compare(ours, theirs, RNG.standard_normal(shape), training)


def test_linear_float32_and_gradcheck():
    ours, theirs = nn.Linear(6, 2), torch.nn.Linear(6, 2)
    load_torch_weights(ours, theirs)
    compare(ours, theirs, RNG.standard_normal((3, 6)).astype(np.float32), tol=1e-5)
    assert gradcheck(lambda x, w, b: F.linear(x, w, b), [RNG.standard_normal((2, 3, 4)), RNG.standard_normal((5, 4)),
                                                          RNG.standard_normal(5)])
    assert gradcheck(lambda x, w: F.linear(x, w), [RNG.standard_normal((2, 4)), RNG.standard_normal((3, 4))])


# (stored array's shape, the view Linear gets of it), each written once for tinygrad_seq and PyTorch
LINEAR_VIEWS = {
    "permuted (1, 0, 2)": ((4, 3, 2), lambda a: a.permute(1, 0, 2)),
    "permuted (2, 0, 1, 3)": ((4, 3, 2, 5), lambda a: a.permute(2, 0, 1, 3)),
    "permuted (1, 2, 0, 3)": ((4, 3, 2, 5), lambda a: a.permute(1, 2, 0, 3)),
    "rows inside wider ones": ((5, 3, 9), lambda a: a[:, :, 3:]),
    "rows inside wider ones, permuted": ((5, 3, 9), lambda a: a[:, :, 3:].permute(1, 0, 2)),
}


@pytest.mark.parametrize("shape, view", LINEAR_VIEWS.values(), ids=list(LINEAR_VIEWS))
def test_linear_multiplies_a_view_where_it_lies(shape, view):
    """x a view whose rows merge into one 2-D array (a batch_first RNN's output is its
    time-major result permuted; an LSTM's states lie inside its weight-gradient rows): y and
    every gradient as for a contiguous copy of x, and the rows kept for backward are x's own
    memory, not a copy."""
    stored = RNG.standard_normal(shape)
    features = view(torch.tensor(stored)).shape[-1]
    w, b = RNG.standard_normal((6, features)), RNG.standard_normal(6)
    base = Tensor(stored, dtype="float64", requires_grad=True)
    ours = F.linear(view(base), Tensor(w, dtype="float64", requires_grad=True),
                    Tensor(b, dtype="float64", requires_grad=True))
    tb = torch.tensor(stored, requires_grad=True)
    theirs = torch.nn.functional.linear(view(tb), torch.tensor(w, requires_grad=True),
                                        torch.tensor(b, requires_grad=True))
    close(ours, theirs, 1e-12)
    assert np.shares_memory(ours._ctx.saved[0], base.data)
    weights = RNG.standard_normal(ours.shape)
    (ours * Tensor(weights, dtype="float64")).sum().backward()
    (theirs * torch.tensor(weights)).sum().backward()
    close(base.grad, tb.grad, 1e-12)
    assert gradcheck(lambda x, w, b: F.linear(view(x), w, b), [stored, w, b])


def test_linear_default_init_and_errors():
    tgs.manual_seed(0)
    layer = nn.Linear(100, 50)
    bound = 1 / math.sqrt(100)
    w = layer.weight.numpy()
    assert w.dtype == np.float32 and np.abs(w).max() <= bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.1 * bound  # U(-b, b) has std b / sqrt(3)
    assert np.abs(layer.bias.numpy()).max() <= bound
    assert "in_features=100" in repr(layer)
    with pytest.raises(ValueError, match="features"):
        layer(Tensor(np.ones((2, 99))))


# ---------------------------------------------------------------------------- Embedding
@pytest.mark.parametrize("padding_idx", [None, 0, -1])
def test_embedding_matches_torch(padding_idx):
    ours = nn.Embedding(7, 3, padding_idx=padding_idx).double()
    theirs = torch.nn.Embedding(7, 3, padding_idx=padding_idx).double()
    same_names_and_shapes(ours, theirs)
    load_torch_weights(ours, theirs)
    ids = np.array([[0, 2, 2, 6], [6, 6, 1, 0]])  # repeated ids: the scatter must add
    compare(ours, theirs, ids)


def test_embedding_padding_row_is_zero_and_frozen_and_ids_checked():
    tgs.manual_seed(0)
    emb = nn.Embedding(5, 4, padding_idx=2)
    assert np.all(emb.weight.numpy()[2] == 0)
    assert abs(nn.Embedding(400, 50).weight.numpy().std() - 1) < 0.05  # N(0, 1) as PyTorch
    emb(Tensor(np.array([2, 2, 1]))).sum().backward()
    assert np.all(emb.weight.grad.numpy()[2] == 0) and np.all(emb.weight.grad.numpy()[1] == 1)
    with pytest.raises(IndexError, match="must lie in"):
        emb(Tensor(np.array([5])))
    with pytest.raises(TypeError, match="integers"):
        emb(Tensor(np.array([1.0])))
    with pytest.raises(ValueError, match="padding_idx"):
        nn.Embedding(3, 2, padding_idx=3)


def test_embedding_gradient_adds_negative_and_positive_ids_of_one_row():
    """ids -1 and V-1 name the same row: their gradients must add, not overwrite each other."""
    w = Tensor(RNG.standard_normal((5, 2)), dtype=np.float64, requires_grad=True)
    ids = np.array([4, -1, 0, -5, 4, 2])
    weights = RNG.standard_normal((6, 2))
    (F.embedding(ids, w) * Tensor(weights, dtype=np.float64)).sum().backward()
    expected = np.zeros((5, 2))
    np.add.at(expected, ids % 5, weights)
    np.testing.assert_allclose(w.grad.numpy(), expected, atol=1e-12)


def test_embedding_from_pretrained_and_gradcheck():
    vectors = RNG.standard_normal((4, 3)).astype(np.float32)
    frozen = nn.Embedding.from_pretrained(vectors)
    close(frozen(Tensor(np.array([3, 0]))), vectors[[3, 0]])
    assert not frozen.weight.requires_grad
    assert nn.Embedding.from_pretrained(Tensor(vectors), freeze=False).weight.requires_grad
    ids = np.array([[1, 1], [0, 3]])
    assert gradcheck(lambda w: F.embedding(Tensor(ids), w), [RNG.standard_normal((4, 3))])
    # PyTorch semantics: the padding row gets no gradient (so finite differences would disagree)
    w = Tensor(RNG.standard_normal((4, 3)), dtype=np.float64, requires_grad=True)
    weights = RNG.standard_normal((2, 2, 3))
    (F.embedding(ids, w, padding_idx=1) * Tensor(weights, dtype=np.float64)).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy()[1], 0.0)
    expected = np.zeros((4, 3))
    np.add.at(expected, ids.reshape(-1), weights.reshape(-1, 3))
    expected[1] = 0.0
    np.testing.assert_allclose(w.grad.numpy(), expected, atol=1e-12)


# ---------------------------------------------------------------------------- Dropout
def test_dropout_is_inverted_and_identity_in_eval():
    tgs.manual_seed(0)
    drop = nn.Dropout(0.25)
    x = Tensor(np.ones((200, 50)), requires_grad=True)
    y = drop(x)
    values = y.numpy()
    kept = values != 0
    np.testing.assert_allclose(values[kept], 1 / 0.75, rtol=1e-6)   # scaled by 1 / keep_prob
    assert abs(kept.mean() - 0.75) < 0.02
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), values, rtol=1e-6)    # the gradient uses the same mask
    drop.eval()
    assert drop(x) is x
    assert nn.Dropout(0.0)(x) is x
    assert np.all(nn.Dropout(1.0)(x).numpy() == 0)
    tgs.manual_seed(5)
    a = nn.Dropout(0.5)(x).numpy()
    tgs.manual_seed(5)
    np.testing.assert_array_equal(a, nn.Dropout(0.5)(x).numpy())
    with pytest.raises(ValueError, match="p must be"):
        nn.Dropout(1.5)


def test_dropout_in_eval_mode_matches_torch_model():
    ours = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2)).double()
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Dropout(0.5), torch.nn.Linear(4, 2)).double()
    load_torch_weights(ours, theirs)
    compare(ours, theirs, RNG.standard_normal((5, 3)), training=False)


# ---------------------------------------------------------------------------- BatchNorm
BN_CASES = [(nn.BatchNorm1d, torch.nn.BatchNorm1d, (6, 3)), (nn.BatchNorm1d, torch.nn.BatchNorm1d, (4, 3, 5)),
            (nn.BatchNorm2d, torch.nn.BatchNorm2d, (2, 3, 4, 5))]


@pytest.mark.parametrize("ours_cls,torch_cls,shape", BN_CASES, ids=["1d", "1d_seq", "2d"])
@pytest.mark.parametrize("kwargs", [{}, {"momentum": None}, {"affine": False}, {"track_running_stats": False},
                                    {"eps": 1e-3, "momentum": 0.3}], ids=str)
def test_batchnorm_train_then_eval_matches_torch(ours_cls, torch_cls, shape, kwargs):
    ours, theirs = ours_cls(3, **kwargs).double(), torch_cls(3, **kwargs).double()
    same_names_and_shapes(ours, theirs)
    with torch.no_grad():  # non-trivial affine parameters
        for p in theirs.parameters():
            p.copy_(torch.tensor(RNG.standard_normal(p.shape)))
    load_torch_weights(ours, theirs)
    for step in range(3):  # three batches move the running statistics
        x = RNG.standard_normal(shape) * 2 + step
        compare(ours, theirs, x, training=True)
        ours.zero_grad()
        theirs.zero_grad()
    for name, buf in theirs.state_dict().items():
        close(ours.state_dict()[name], buf)   # running_mean, running_var (unbiased), num_batches_tracked
    compare(ours, theirs, RNG.standard_normal(shape), training=False)


def test_batchnorm_float32_buffers_and_errors():
    bn = nn.BatchNorm2d(4)
    assert bn.running_mean.dtype == np.float32 and bn.num_batches_tracked.dtype == np.int64
    assert [k for k, _ in bn.named_buffers()] == ["running_mean", "running_var", "num_batches_tracked"]
    theirs = torch.nn.BatchNorm2d(4)
    load_torch_weights(bn, theirs)
    compare(bn, theirs, RNG.standard_normal((3, 4, 2, 2)).astype(np.float32), tol=1e-5)
    close(bn.running_var, theirs.running_var, 1e-6)
    with pytest.raises(ValueError, match="4-D"):
        bn(Tensor(np.ones((2, 4))))
    with pytest.raises(ValueError, match="channels"):
        bn(Tensor(np.ones((2, 3, 2, 2))))
    with pytest.raises(ValueError, match="more than 1 value"):
        nn.BatchNorm1d(4)(Tensor(np.ones((1, 4))))
    bn.reset_running_stats()
    assert bn.num_batches_tracked.item() == 0 and np.all(bn.running_var.numpy() == 1)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_function_gradcheck(training):
    mean, var = RNG.standard_normal(3), RNG.random(3) + 0.5
    for shape in [(5, 3), (2, 3, 2, 2)]:
        assert gradcheck(lambda x, w, b: F.batch_norm(x, mean.copy(), var.copy(), w, b, training=training),
                         [RNG.standard_normal(shape), RNG.standard_normal(3), RNG.standard_normal(3)])
    assert gradcheck(lambda x: F.batch_norm(x, mean.copy(), var.copy(), training=training), [RNG.standard_normal((4, 3, 2))])


# ---------------------------------------------------------------------------- LayerNorm
@pytest.mark.parametrize("normalized_shape,shape", [(5, (3, 5)), ((4, 5), (2, 4, 5)), ([5], (2, 3, 5))], ids=str)
@pytest.mark.parametrize("kwargs", [{}, {"elementwise_affine": False}, {"bias": False}, {"eps": 1e-2}], ids=str)
def test_layernorm_matches_torch(normalized_shape, shape, kwargs):
    ours, theirs = nn.LayerNorm(normalized_shape, **kwargs).double(), torch.nn.LayerNorm(normalized_shape, **kwargs).double()
    same_names_and_shapes(ours, theirs)
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.tensor(RNG.standard_normal(p.shape)))
    load_torch_weights(ours, theirs)
    compare(ours, theirs, RNG.standard_normal(shape) * 3 + 1, training=True)
    ours.zero_grad()
    theirs.zero_grad()
    compare(ours, theirs, RNG.standard_normal(shape), training=False)


def test_layer_norm_function_gradcheck_and_shape_error():
    assert gradcheck(lambda x, w, b: F.layer_norm(x, (3, 4), w, b),
                     [RNG.standard_normal((2, 3, 4)), RNG.standard_normal((3, 4)), RNG.standard_normal((3, 4))])
    assert gradcheck(lambda x: F.layer_norm(x, 4), [RNG.standard_normal((3, 4))])
    with pytest.raises(ValueError, match="normalized_shape"):
        nn.LayerNorm(4)(Tensor(np.ones((2, 5))))


# ---------------------------------------------------------------------------- activations and shape layers
ACTIVATIONS = [
    (nn.ReLU(), torch.nn.ReLU()), (nn.LeakyReLU(), torch.nn.LeakyReLU()), (nn.LeakyReLU(0.2), torch.nn.LeakyReLU(0.2)),
    (nn.Tanh(), torch.nn.Tanh()), (nn.Sigmoid(), torch.nn.Sigmoid()), (nn.GELU(), torch.nn.GELU()),
    (nn.GELU("tanh"), torch.nn.GELU("tanh")), (nn.Softmax(dim=1), torch.nn.Softmax(dim=1)),
    (nn.Softmax(dim=-1), torch.nn.Softmax(dim=-1)), (nn.LogSoftmax(dim=1), torch.nn.LogSoftmax(dim=1)),
    (nn.LogSoftmax(dim=0), torch.nn.LogSoftmax(dim=0)), (nn.Identity(54, unused=1), torch.nn.Identity(54, unused=1)),
    (nn.Flatten(), torch.nn.Flatten()), (nn.Flatten(0, 1), torch.nn.Flatten(0, 1)), (nn.Flatten(1, 2), torch.nn.Flatten(1, 2)),
]


@pytest.mark.parametrize("ours,theirs", ACTIVATIONS, ids=[type(a).__name__ for a, _ in ACTIVATIONS])
@pytest.mark.parametrize("training", [True, False])
def test_activation_and_shape_layers_match_torch(ours, theirs, training):
    compare(ours, theirs, RNG.standard_normal((2, 3, 4)), training)


def test_softmax_default_dim_is_last():
    x = RNG.standard_normal((2, 3))
    close(nn.Softmax()(Tensor(x, dtype=np.float64)), torch.softmax(torch.tensor(x), -1))
    close(nn.LogSoftmax()(Tensor(x, dtype=np.float64)), torch.log_softmax(torch.tensor(x), -1))


def test_a_model_of_every_layer_matches_torch():
    ours = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.GELU(), nn.Dropout(0.3), nn.Linear(8, 8),
                         nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 3), nn.LogSoftmax(dim=1)).double()
    theirs = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.GELU(), torch.nn.Dropout(0.3),
                                 torch.nn.Linear(8, 8), torch.nn.LayerNorm(8), torch.nn.Tanh(), torch.nn.Linear(8, 3),
                                 torch.nn.LogSoftmax(dim=1)).double()
    same_names_and_shapes(ours, theirs)
    load_torch_weights(ours, theirs)
    compare(ours, theirs, RNG.standard_normal((5, 6)), training=False)


# ---------------------------------------------------------------------------- nn.init
def test_calculate_gain_matches_torch():
    for name, param in [("linear", None), ("conv2d", None), ("sigmoid", None), ("tanh", None), ("relu", None),
                        ("leaky_relu", None), ("leaky_relu", 0.2), ("selu", None)]:
        assert nn.init.calculate_gain(name, param) == pytest.approx(torch.nn.init.calculate_gain(name, param))
    with pytest.raises(ValueError, match="unsupported"):
        nn.init.calculate_gain("swish")


@pytest.mark.parametrize("shape", [(300, 200), (64, 32, 3, 3)], ids=str)
def test_init_scales_follow_the_formulas(shape):
    tgs.manual_seed(0)
    p = nn.Parameter(np.zeros(shape, dtype=np.float32))
    fan_in, fan_out = (shape[1] * int(np.prod(shape[2:])), shape[0] * int(np.prod(shape[2:])))
    before = p.data
    assert nn.init.xavier_uniform_(p, gain=2.0) is p and p.data is before  # in place
    bound = 2.0 * math.sqrt(6 / (fan_in + fan_out))
    assert np.abs(p.numpy()).max() <= bound and p.numpy().std() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    nn.init.xavier_normal_(p)
    assert p.numpy().std() == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.05)
    nn.init.kaiming_uniform_(p, nonlinearity="relu")
    bound = math.sqrt(2) * math.sqrt(3 / fan_in)
    assert np.abs(p.numpy()).max() <= bound and p.numpy().std() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    nn.init.kaiming_normal_(p, mode="fan_out", nonlinearity="relu")
    assert p.numpy().std() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)
    nn.init.kaiming_uniform_(p, a=math.sqrt(5))   # PyTorch's Linear/Conv default: bound 1/sqrt(fan_in)
    assert np.abs(p.numpy()).max() <= 1 / math.sqrt(fan_in)
    nn.init.normal_(p, mean=3.0, std=0.5)
    assert p.numpy().mean() == pytest.approx(3.0, abs=0.01) and p.numpy().std() == pytest.approx(0.5, rel=0.05)
    nn.init.uniform_(p, -2, -1)
    assert -2 <= p.numpy().min() and p.numpy().max() < -1
    nn.init.trunc_normal_(p, std=1.0, a=-0.5, b=0.5)
    assert np.abs(p.numpy()).max() <= 0.5
    nn.init.constant_(p, 0.25)
    assert np.all(p.numpy() == 0.25)
    assert np.all(nn.init.zeros_(p).numpy() == 0) and np.all(nn.init.ones_(p).numpy() == 1)
    assert p.dtype == np.float32


def test_init_reproducible_orthogonal_eye_and_errors():
    p = nn.Parameter(np.zeros((4, 6)), dtype=np.float64)  # float arrays become float32 unless dtype= is given
    tgs.manual_seed(3)
    a = nn.init.xavier_uniform_(p).numpy().copy()
    tgs.manual_seed(3)
    np.testing.assert_array_equal(nn.init.xavier_uniform_(p).numpy(), a)
    nn.init.orthogonal_(p)
    np.testing.assert_allclose(p.numpy() @ p.numpy().T, np.eye(4), atol=1e-10)
    q = nn.Parameter(np.zeros((5, 3)))
    nn.init.orthogonal_(q, gain=2.0)
    np.testing.assert_allclose(q.numpy().T @ q.numpy(), 4 * np.eye(3), atol=1e-5)
    np.testing.assert_array_equal(nn.init.eye_(q).numpy(), np.eye(5, 3))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        nn.init.xavier_uniform_(nn.Parameter(np.zeros(3)))
    with pytest.raises(ValueError, match="mode"):
        nn.init.kaiming_normal_(p, mode="fan_avg")
    with pytest.raises(TypeError, match="Tensors"):
        nn.init.zeros_(np.zeros(3))


def test_module_defaults_use_the_engine_generator():
    tgs.manual_seed(11)
    a = [p.numpy().copy() for p in nn.Sequential(nn.Linear(3, 4), nn.Embedding(5, 2)).parameters()]
    tgs.manual_seed(11)
    b = [p.numpy() for p in nn.Sequential(nn.Linear(3, 4), nn.Embedding(5, 2)).parameters()]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
