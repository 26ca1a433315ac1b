"""The Tensor engine's ops against PyTorch (forward and every input's gradient, in float64) and
by finite differences (gradcheck), plus dtype rules, graph semantics and error messages."""
import numpy as np
import pytest
import torch
from kernel_checks import assert_close_to_torch as close

import tinygrad_seq as tgs
from tinygrad_seq import Tensor, gradcheck, no_grad
from tinygrad_seq.gradcheck import GradcheckError
from tinygrad_seq.nn import functional as F

RNG = np.random.default_rng(0)
TF = torch.nn.functional


def data(*shape, positive=False):
    a = RNG.standard_normal(shape)
    return np.abs(a) + 0.5 if positive else a


def check(fn, torch_fn, *arrays, check_grad=True, tol=1e-9):
    """fn on our leaves and torch_fn on torch's give the same outputs and the same gradient for
    every floating input (float64, a random upstream gradient), and fn passes gradcheck."""
    ours = [Tensor(a, requires_grad=a.dtype.kind == "f", dtype=a.dtype) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=a.dtype.kind == "f") for a in arrays]
    y, ty = fn(*ours), torch_fn(*theirs)
    ys, tys = (list(y), list(ty)) if isinstance(y, (list, tuple)) else ([y], [ty])
    assert len(ys) == len(tys)
    for a, b in zip(ys, tys):
        close(a, b, tol)
    if not check_grad:
        return
    total, ttotal = 0, 0
    for a, b in zip(ys, tys):
        g = RNG.standard_normal(a.shape)
        total = total + (a * Tensor(g, dtype=np.float64)).sum()
        ttotal = ttotal + (b * torch.tensor(g)).sum()
    total.backward()
    ttotal.backward()
    for a, b in zip(ours, theirs):
        if a.requires_grad:
            close(a.grad, b.grad, tol)
    assert gradcheck(fn, [Tensor(a, dtype=a.dtype) for a in arrays])


# ---------------------------------------------------------------------------- arithmetic and broadcasting
BINARY = {
    "add": (lambda a, b: a + b, lambda a, b: a + b),
    "sub": (lambda a, b: a - b, lambda a, b: a - b),
    "mul": (lambda a, b: a * b, lambda a, b: a * b),
    "div": (lambda a, b: a / b, lambda a, b: a / b),
    "pow": (lambda a, b: a ** b, lambda a, b: a ** b),
}
BROADCAST_SHAPES = [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 3), (4, 1)), ((1,), (2, 3)), ((2, 3), ())]


@pytest.mark.parametrize("op", list(BINARY))
@pytest.mark.parametrize("shapes", BROADCAST_SHAPES, ids=str)
def test_binary_ops_broadcast_and_reduce_gradients(op, shapes):
    ours, theirs = BINARY[op]
    positive = op in ("div", "pow")
    check(ours, theirs, data(*shapes[0], positive=positive), data(*shapes[1], positive=positive))


@pytest.mark.parametrize("name,ours,theirs", [
    ("radd", lambda a: 2.5 + a, lambda a: 2.5 + a),
    ("rsub", lambda a: 2.5 - a, lambda a: 2.5 - a),
    ("rmul", lambda a: 3 * a, lambda a: 3 * a),
    ("rdiv", lambda a: 2.0 / a, lambda a: 2.0 / a),
    ("neg", lambda a: -a, lambda a: -a),
    ("pow3", lambda a: a ** 3, lambda a: a ** 3),
    ("pow_half", lambda a: a ** 0.5, lambda a: a ** 0.5),
    ("pow0", lambda a: a ** 0, lambda a: a ** 0),
    ("rpow", lambda a: 2.0 ** a, lambda a: 2.0 ** a),
    ("array_operand", lambda a: a * np.arange(4.0), lambda a: a * torch.arange(4.0, dtype=torch.float64)),
    ("square", lambda a: a.square(), lambda a: a.square()),
])
def test_scalar_operands_and_unary_arithmetic(name, ours, theirs):
    check(ours, theirs, data(3, 4, positive=True))


def test_ndarray_on_the_left_calls_the_tensor_op():
    a = np.arange(3.0)
    t = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = a + t
    assert isinstance(y, Tensor)
    y.sum().backward()
    close(t.grad, np.ones(3))


@pytest.mark.parametrize("shapes", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)),
                                    ((2, 1, 3, 4), (5, 4, 2)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)),
                                    ((4,), (2, 4, 3)), ((2, 3, 4), (4,))], ids=str)
def test_matmul_batched_and_1d_cases(shapes):
    check(lambda a, b: a @ b, lambda a, b: a @ b, data(*shapes[0]), data(*shapes[1]))


def test_matmul_with_array_on_either_side():
    w = data(4, 2)
    check(lambda a: a @ w, lambda a: a @ torch.tensor(w), data(3, 4))
    check(lambda a: w.T @ a, lambda a: torch.tensor(w.T) @ a, data(4, 3))


# ---------------------------------------------------------------------------- elementwise functions
UNARY = {
    "exp": (lambda x: x.exp(), torch.exp, False),
    "log": (lambda x: x.log(), torch.log, True),
    "sqrt": (lambda x: x.sqrt(), torch.sqrt, True),
    "abs": (lambda x: x.abs(), torch.abs, False),
    "tanh": (lambda x: x.tanh(), torch.tanh, False),
    "sigmoid": (lambda x: x.sigmoid(), torch.sigmoid, False),
    "relu": (lambda x: x.relu(), torch.relu, False),
    "leaky_relu": (lambda x: x.leaky_relu(0.1), lambda x: TF.leaky_relu(x, 0.1), False),
    "leaky_relu_default": (lambda x: F.leaky_relu(x), TF.leaky_relu, False),
    "gelu": (lambda x: x.gelu(), TF.gelu, False),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), lambda x: TF.gelu(x, approximate="tanh"), False),
    "clip_both": (lambda x: x.clip(-0.5, 0.7), lambda x: x.clamp(-0.5, 0.7), False),
    "clip_min": (lambda x: x.clamp(min=-0.3), lambda x: x.clamp(min=-0.3), False),
    "clip_max": (lambda x: x.clip(max=0.2), lambda x: x.clamp(max=0.2), False),
    "F.tanh": (F.tanh, torch.tanh, False),
    "F.sigmoid": (F.sigmoid, torch.sigmoid, False),
    "F.relu": (F.relu, torch.relu, False),
}


@pytest.mark.parametrize("name", list(UNARY))
def test_elementwise_functions(name):
    ours, theirs, positive = UNARY[name]
    check(ours, theirs, data(3, 5, positive=positive))


def test_sigmoid_is_stable_for_large_inputs():
    x = Tensor([-1000.0, -30.0, 0.0, 30.0, 1000.0], dtype=np.float64, requires_grad=True)
    with np.errstate(over="raise"):
        y = x.sigmoid()
    close(y, torch.sigmoid(torch.tensor(x.numpy())))
    y.sum().backward()
    assert np.isfinite(x.grad.numpy()).all()


# ---------------------------------------------------------------------------- reductions
REDUCTIONS = {
    "sum": (lambda x, **k: x.sum(**k), lambda x, **k: x.sum(**k)),
    "mean": (lambda x, **k: x.mean(**k), lambda x, **k: x.mean(**k)),
    "amax": (lambda x, **k: x.amax(**k), lambda x, **k: x.amax(**k)),
    "amin": (lambda x, **k: x.amin(**k), lambda x, **k: x.amin(**k)),
    "var": (lambda x, **k: x.var(**k), lambda x, **k: x.var(**k)),
    "std": (lambda x, **k: x.std(**k), lambda x, **k: x.std(**k)),
}
DIMS = [None, 0, 1, -1, (0, 2), (-1, 0)]


@pytest.mark.parametrize("name", list(REDUCTIONS))
@pytest.mark.parametrize("dim", DIMS, ids=str)
@pytest.mark.parametrize("keepdim", [False, True])
def test_reductions_with_dim_and_keepdim(name, dim, keepdim):
    ours, theirs = REDUCTIONS[name]
    x = data(2, 3, 4)
    if dim is None and not keepdim:
        check(lambda t: ours(t), lambda t: theirs(t) if name not in ("amax", "amin") else getattr(t, name[1:])(), x)
        return
    torch_dim = (0, 1, 2) if dim is None else dim  # PyTorch's full reductions take no keepdim
    check(lambda t: ours(t, dim=dim, keepdim=keepdim), lambda t: theirs(t, dim=torch_dim, keepdim=keepdim), x)


def test_numpy_style_axis_and_keepdims():
    x = data(2, 3, 4)
    check(lambda t: t.sum(axis=1, keepdims=True), lambda t: t.sum(1, keepdim=True), x)
    check(lambda t: t.mean(axis=(0, 2)), lambda t: t.mean((0, 2)), x)
    check(lambda t: t.max(axis=-1, keepdims=True), lambda t: t.amax(-1, keepdim=True), x)
    check(lambda t: t.sum(axis=None, keepdims=True), lambda t: t.sum().reshape(1, 1, 1), x)
    check(lambda t: t.var(axis=[0, 1]), lambda t: t.var((0, 1)), x)


def test_var_corrections():
    x = data(4, 5)
    check(lambda t: t.var(1, unbiased=False), lambda t: t.var(1, unbiased=False), x)
    check(lambda t: t.var(0, correction=0, keepdim=True), lambda t: t.var(0, correction=0, keepdim=True), x)
    check(lambda t: t.std(), lambda t: t.std(), x)


def test_amax_and_full_max_split_the_gradient_among_ties():
    x = np.array([[1.0, 3.0, 3.0], [2.0, 0.0, 2.0]])
    check(lambda t: t.amax(dim=1), lambda t: t.amax(dim=1), x, check_grad=True)
    check(lambda t: t.max(), lambda t: t.max(), x)
    check(lambda t: t.amin(dim=0), lambda t: t.amin(dim=0), np.array([[1.0, 0.0], [1.0, 2.0]]))


def test_max_with_dim_gives_values_and_indices_and_the_gradient_to_the_index():
    # issue 20: `values, indices = x.max(dim=1)` unpacked two values on a batch of 2
    x = np.array([[1.0, 3.0, 3.0], [2.0, 0.0, 2.0]])
    values, indices = Tensor(x).max(dim=1)
    assert values.tolist() == [3.0, 2.0] and indices.tolist() == [1, 0]
    check(lambda t: tuple(t.max(1)), lambda t: tuple(t.max(1)), x, check_grad=False)
    for ours, theirs in [(lambda t: t.max(1).values, lambda t: t.max(1).values),
                         (lambda t: t.min(0, keepdim=True).values, lambda t: t.min(0, keepdim=True).values)]:
        t, tt = Tensor(x, requires_grad=True, dtype=np.float64), torch.tensor(x, requires_grad=True)
        ours(t).sum().backward()
        theirs(tt).sum().backward()
        close(t.grad, tt.grad)   # all to the first maximum, as PyTorch, not split


def test_argmax_argmin():
    x = data(3, 4)
    t, tt = Tensor(x), torch.tensor(x)
    close(t.argmax(dim=1), tt.argmax(dim=1))
    close(t.argmin(dim=0, keepdim=True), tt.argmin(dim=0, keepdim=True))
    assert t.argmax().item() == tt.argmax().item()
    assert t.argmax(1).dtype.kind == "i"


def test_reduction_dim_out_of_range_names_it():
    with pytest.raises(IndexError, match="dimension 3 is out of range"):
        Tensor(np.ones((2, 3))).sum(3)


# ---------------------------------------------------------------------------- movement
@pytest.mark.parametrize("name,ours,theirs", [
    ("reshape", lambda x: x.reshape(4, 6), lambda x: x.reshape(4, 6)),
    ("reshape_tuple_infer", lambda x: x.reshape((-1, 3)), lambda x: x.reshape(-1, 3)),
    ("view", lambda x: x.view(2, 12), lambda x: x.view(2, 12)),
    ("flatten", lambda x: x.flatten(), lambda x: x.flatten()),
    ("flatten_1", lambda x: x.flatten(1), lambda x: x.flatten(1)),
    ("flatten_0_1", lambda x: x.flatten(0, 1), lambda x: x.flatten(0, 1)),
    ("transpose", lambda x: x.transpose(0, 2), lambda x: x.transpose(0, 2)),
    ("transpose_neg", lambda x: x.transpose(-1, -2), lambda x: x.transpose(-1, -2)),
    ("permute", lambda x: x.permute(1, 2, 0), lambda x: x.permute(1, 2, 0)),
    ("permute_tuple", lambda x: x.permute((2, 0, 1)), lambda x: x.permute(2, 0, 1)),
    ("T", lambda x: x.T, lambda x: x.permute(2, 1, 0)),
    ("unsqueeze", lambda x: x.unsqueeze(1), lambda x: x.unsqueeze(1)),
    ("unsqueeze_neg", lambda x: x.unsqueeze(-1), lambda x: x.unsqueeze(-1)),
    ("expand", lambda x: x[:, :1].expand(2, 5, 4), lambda x: x[:, :1].expand(2, 5, 4)),
    ("expand_new_dims", lambda x: x[0, 0].expand(3, 2, 4), lambda x: x[0, 0].expand(3, 2, 4)),
    ("expand_minus_one", lambda x: x[:, :1].expand(-1, 3, -1), lambda x: x[:, :1].expand(-1, 3, -1)),
    ("squeeze", lambda x: x[:, :1].squeeze(1), lambda x: x[:, :1].squeeze(1)),
    ("squeeze_all", lambda x: x[:1, :1].squeeze(), lambda x: x[:1, :1].squeeze()),
    ("squeeze_not_one", lambda x: x.squeeze(0), lambda x: x.squeeze(0)),
    ("clone", lambda x: x.clone(), lambda x: x.clone()),
    ("contiguous", lambda x: x.transpose(0, 1).contiguous(), lambda x: x.transpose(0, 1).contiguous()),
])
def test_movement_ops(name, ours, theirs):
    check(ours, theirs, data(2, 3, 4))


def test_t_of_a_matrix_and_its_error_on_3d():
    check(lambda x: x.t(), lambda x: x.t(), data(2, 3))
    with pytest.raises(ValueError, match="transpose"):
        Tensor(np.ones((2, 3, 4))).t()


def test_expand_as():
    check(lambda x: x.expand_as(Tensor(np.ones((3, 4)))), lambda x: x.expand_as(torch.ones(3, 4)), data(1, 4))


# ---------------------------------------------------------------------------- indexing
INDEXES = {
    "int": (lambda: 1, lambda: 1),
    "negative_int": (lambda: -1, lambda: -1),
    "slice": (lambda: slice(1, 3), lambda: slice(1, 3)),
    "step_slice": (lambda: (slice(None), slice(None, None, 2)), lambda: (slice(None), slice(None, None, 2))),
    "int_slice": (lambda: (0, slice(1, None)), lambda: (0, slice(1, None))),
    "none": (lambda: (None, slice(None), 1), lambda: (None, slice(None), 1)),
    "ellipsis": (lambda: (Ellipsis, 2), lambda: (Ellipsis, 2)),
    "int_array_repeats": (lambda: np.array([0, 2, 0, 0]), lambda: torch.tensor([0, 2, 0, 0])),
    "list": (lambda: [3, 1, 1], lambda: [3, 1, 1]),
    "2d_int_array": (lambda: np.array([[0, 1], [1, 1]]), lambda: torch.tensor([[0, 1], [1, 1]])),
    "array_and_slice": (lambda: (np.array([1, 1, 0]), slice(0, 4)), lambda: (torch.tensor([1, 1, 0]), slice(0, 4))),
    "slice_and_array": (lambda: (slice(None), np.array([4, 0, 4])), lambda: (slice(None), torch.tensor([4, 0, 4]))),
    "two_arrays": (lambda: (np.array([0, 3, 0]), np.array([1, 1, 1])),
                   lambda: (torch.tensor([0, 3, 0]), torch.tensor([1, 1, 1]))),
    "tensor_index": (lambda: Tensor(np.array([2, 2])), lambda: torch.tensor([2, 2])),
}


@pytest.mark.parametrize("name", list(INDEXES))
def test_getitem(name):
    ours, theirs = INDEXES[name]
    check(lambda x: x[ours()], lambda x: x[theirs()], data(4, 5))


def test_getitem_boolean_masks():
    x = data(3, 4)
    mask = x > 0.2
    check(lambda t: t[mask], lambda t: t[torch.tensor(mask)], x)
    rows = np.array([True, False, True])
    check(lambda t: t[rows], lambda t: t[torch.tensor(rows)], x)
    check(lambda t: t[Tensor(mask)], lambda t: t[torch.tensor(mask)], x)


def test_getitem_error_names_index_and_shape():
    with pytest.raises(IndexError, match=r"shape \(2, 3\)"):
        Tensor(np.ones((2, 3)))[5]


# ---------------------------------------------------------------------------- joining and splitting
def test_cat_and_stack():
    a, b, c = data(2, 3), data(4, 3), data(2, 3)
    check(lambda x, y: tgs.cat([x, y]), lambda x, y: torch.cat([x, y]), a, b)
    check(lambda x, y: tgs.cat((x, y), dim=-1), lambda x, y: torch.cat((x, y), -1), a, c)
    check(lambda x, y: tgs.concat([x, y], 1), lambda x, y: torch.cat([x, y], 1), a, c)
    check(lambda x, y: tgs.stack([x, y]), lambda x, y: torch.stack([x, y]), a, c)
    check(lambda x, y: tgs.stack([x, y, x], dim=2), lambda x, y: torch.stack([x, y, x], 2), a, c)
    check(lambda x, y: tgs.stack([x, y], dim=-1), lambda x, y: torch.stack([x, y], -1), a, c)


def test_cat_stack_errors():
    with pytest.raises(ValueError, match="cat"):
        tgs.cat([Tensor(np.ones((2, 3))), Tensor(np.ones((2, 4)))])
    with pytest.raises(ValueError, match="stack"):
        tgs.stack([Tensor(np.ones((2, 3))), Tensor(np.ones((3, 2)))])
    with pytest.raises(ValueError, match="at least one"):
        tgs.cat([])


@pytest.mark.parametrize("ours,theirs", [
    (lambda x: x.split(2), lambda x: x.split(2)),
    (lambda x: x.split(2, dim=1), lambda x: x.split(2, dim=1)),
    (lambda x: x.split([1, 4], dim=0), lambda x: x.split([1, 4], dim=0)),
    (lambda x: x.chunk(2), lambda x: x.chunk(2)),
    (lambda x: x.chunk(3, dim=-1), lambda x: x.chunk(3, dim=-1)),
    # pieces left out of the loss get a zero gradient
    (lambda x: x.chunk(3, dim=-1)[1], lambda x: x.chunk(3, dim=-1)[1]),
    (lambda x: x.split([2, 0, 3])[2] * 2, lambda x: x.split([2, 0, 3])[2] * 2),
])
def test_split_and_chunk(ours, theirs):
    check(ours, theirs, data(5, 3))


def test_split_sizes_must_add_up():
    with pytest.raises(ValueError, match="add up"):
        Tensor(np.ones(5)).split([2, 2])


def test_where_and_masked_fill():
    a, b = data(3, 4), data(4)
    cond = a > 0
    check(lambda x, y: tgs.where(cond, x, y), lambda x, y: torch.where(torch.tensor(cond), x, y), a, b)
    check(lambda x: tgs.where(Tensor(cond), x, 0.0), lambda x: torch.where(torch.tensor(cond), x, 0.0), a)
    check(lambda x: x.masked_fill(cond, -1.5), lambda x: x.masked_fill(torch.tensor(cond), -1.5), a)
    row_mask = np.array([True, False, False, True])
    check(lambda x: x.masked_fill(row_mask, 0.0), lambda x: x.masked_fill(torch.tensor(row_mask), 0.0), a)


# ---------------------------------------------------------------------------- softmax family
@pytest.mark.parametrize("dim", [-1, 0, 1])
def test_softmax_and_log_softmax(dim):
    x = data(3, 4, 2)
    check(lambda t: t.softmax(dim), lambda t: t.softmax(dim), x)
    check(lambda t: F.log_softmax(t, dim), lambda t: TF.log_softmax(t, dim), x)
    check(lambda t: t.log_softmax(dim), lambda t: t.log_softmax(dim), x)


def test_softmax_with_mask_matches_masked_fill_minus_inf():
    x = data(3, 5)
    mask = np.zeros((3, 5), dtype=bool)
    mask[0, 1:3] = mask[2, 0] = True
    check(lambda t: F.softmax(t, -1, mask=mask),
          lambda t: t.masked_fill(torch.tensor(mask), float("-inf")).softmax(-1), x)
    col_mask = np.array([[True], [False], [False]])
    check(lambda t: F.softmax(t, 0, mask=col_mask),
          lambda t: t.masked_fill(torch.tensor(col_mask), float("-inf")).softmax(0), x)


def test_fully_masked_softmax_row_is_zero_not_nan():
    x = Tensor(data(2, 3), dtype=np.float64, requires_grad=True)
    mask = np.array([[True, True, True], [False, True, False]])
    y = F.softmax(x, mask=mask)
    close(y[0], np.zeros(3))
    close(y[1].sum(), 1.0)
    y.sum().backward()
    assert np.isfinite(x.grad.numpy()).all()


def test_log_softmax_is_stable():
    x = Tensor([[1000.0, 0.0, -1000.0]], dtype=np.float64)
    close(F.log_softmax(x), TF.log_softmax(torch.tensor(x.numpy()), -1))


def test_one_hot():
    idx = np.array([[0, 3], [2, 2]])
    close(tgs.one_hot(Tensor(idx), 5), TF.one_hot(torch.tensor(idx), 5))
    close(F.one_hot(idx), TF.one_hot(torch.tensor(idx)))
    assert tgs.one_hot(Tensor(idx), 4).dtype == np.int64
    with pytest.raises(ValueError, match="indices must lie"):
        tgs.one_hot(Tensor(idx), 3)
    with pytest.raises(TypeError, match="integers"):
        tgs.one_hot(Tensor([0.5]))


# ---------------------------------------------------------------------------- casts and creation
def test_cast_is_differentiable_and_keeps_gradient_dtype():
    x = Tensor(data(3), requires_grad=True)
    assert x.dtype == np.float32
    y = x.double()
    assert y.dtype == np.float64
    (y * y).sum().backward()
    assert x.grad.dtype == np.float32
    close(x.grad, 2 * x.numpy(), 1e-6)
    z = Tensor(data(2), dtype=np.float64, requires_grad=True)
    z.float().sum().backward()
    assert z.grad.dtype == np.float64
    w = Tensor(data(2), requires_grad=True)
    w.to(dtype="float64").sum().backward()
    close(w.grad, np.ones(2))
    assert (Tensor([1.7, -2.2]).long().numpy() == np.array([1, -2])).all()
    assert Tensor([0.0, 2.0]).bool().dtype == np.bool_


def test_factories_shapes_and_dtypes():
    assert tgs.zeros(2, 3).shape == (2, 3) and tgs.zeros(2, 3).dtype == np.float32
    assert tgs.ones((4,)).numpy().sum() == 4
    assert tgs.full((2, 2), 7.0).numpy().tolist() == [[7.0, 7.0], [7.0, 7.0]]
    assert tgs.eye(3, dtype=np.float64).dtype == np.float64
    np.testing.assert_array_equal(tgs.eye(2, 3).numpy(), np.eye(2, 3))
    assert tgs.arange(5).dtype == np.int64 and tgs.arange(0.0, 1.0, 0.25).dtype == np.float32
    np.testing.assert_array_equal(tgs.arange(2, 8, 2).numpy(), [2, 4, 6])
    r = tgs.randint(0, 4, (100,))
    assert r.dtype == np.int64 and r.numpy().min() >= 0 and r.numpy().max() < 4
    u = tgs.rand(1000)
    assert 0 <= u.numpy().min() and u.numpy().max() < 1
    z = tgs.zeros_like(Tensor(np.ones((2, 2)), dtype=np.float64))
    assert z.dtype == np.float64 and z.numpy().sum() == 0
    assert tgs.ones_like(Tensor([1, 2])).dtype == np.int64
    p = tgs.randn(3, requires_grad=True)
    assert p.requires_grad and p.is_leaf
    assert tgs.tensor([1.0, 2.0], dtype="float64").dtype == np.float64


def test_manual_seed_reproduces_draws():
    tgs.manual_seed(123)
    a = tgs.randn(5).numpy(), tgs.rand(3).numpy()
    tgs.manual_seed(123)
    b = tgs.randn(5).numpy(), tgs.rand(3).numpy()
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(tgs.randn(5).numpy(), a[0])


# ---------------------------------------------------------------------------- dtype rules
def test_dtype_rules():
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert Tensor(np.ones(2, dtype=np.float64)).dtype == np.float32  # floats default to float32
    assert Tensor(np.ones(2), dtype=np.float64).dtype == np.float64
    assert Tensor([1, 2]).dtype == np.int64
    assert Tensor(np.array([1, 2], dtype=np.int32)).dtype == np.int32
    assert Tensor([True, False]).dtype == np.bool_
    assert (Tensor([1.0]) + 1).dtype == np.float32          # python scalars do not promote
    assert (Tensor([1.0]) * np.float64(2)).dtype == np.float32
    assert (Tensor([1.0], dtype=np.float64) + 1.5).dtype == np.float64
    assert (Tensor([1, 2]) + 1).dtype == np.int64
    assert (Tensor([1.0]) > 0).dtype == np.bool_
    with pytest.raises(TypeError, match="floating-point"):
        Tensor([1, 2], requires_grad=True)
    with pytest.raises(TypeError, match="cannot hold"):
        Tensor(["a"])


def test_float64_end_to_end():
    tgs.manual_seed(0)
    model = tgs.nn.Sequential(tgs.nn.Linear(3, 4), tgs.nn.Tanh(), tgs.nn.Linear(4, 2)).double()
    x = Tensor(data(5, 3), dtype=np.float64)
    loss = F.cross_entropy(model(x), Tensor(np.array([0, 1, 1, 0, 1])))
    assert loss.dtype == np.float64
    loss.backward()
    assert all(p.grad.dtype == np.float64 for p in model.parameters())
    opt = tgs.optim.SGD(model.parameters(), lr=0.1)
    opt.step()
    assert all(p.dtype == np.float64 for p in model.parameters())


# ---------------------------------------------------------------------------- graph semantics
def test_no_grad_builds_no_graph_and_restores_state():
    x = Tensor([1.0, 2.0], requires_grad=True)
    with no_grad():
        y = x * 2
        assert not tgs.is_grad_enabled()
    assert tgs.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf

    @no_grad()
    def double(t):
        return t * 2

    assert not double(x).requires_grad
    with no_grad():
        with tgs.enable_grad():
            assert (x * 2).requires_grad


def test_requires_grad_propagates():
    a = Tensor([1.0], requires_grad=True)
    b = Tensor([2.0])
    assert (a * b).requires_grad and not (b * b).requires_grad
    assert not (a * b).is_leaf
    assert not a.detach().requires_grad
    d = a.detach()
    d.data[0] = 5.0
    assert a.item() == 5.0  # detach shares the data, like PyTorch
    assert not (a > 0).requires_grad


def test_detach_cuts_the_graph():
    x = Tensor([3.0], requires_grad=True)
    y = x * x
    z = y.detach() * x + y
    z.backward()
    close(x.grad, [9.0 + 6.0])


def test_gradients_accumulate_across_backward_calls():
    x = Tensor([1.0, -2.0], requires_grad=True, dtype=np.float64)
    (x * 3).sum().backward()
    (x * x).sum().backward()
    close(x.grad, 3 + 2 * x.numpy())
    x.grad = None
    (x * 3).sum().backward()
    close(x.grad, [3.0, 3.0])


def test_shared_subexpression_gets_summed_gradients():
    x = Tensor([2.0], requires_grad=True, dtype=np.float64)
    y = x * x          # used twice below
    z = y * y + y      # x^4 + x^2
    z.backward()
    close(x.grad, [4 * 8 + 2 * 2.0])


def test_backward_with_explicit_gradient():
    x = Tensor(data(2, 3), dtype=np.float64, requires_grad=True)
    tx = torch.tensor(x.numpy(), requires_grad=True)
    g = data(2, 3)
    (x.tanh() * 2).backward(Tensor(g, dtype=np.float64))
    (tx.tanh() * 2).backward(torch.tensor(g))
    close(x.grad, tx.grad)
    x.grad = None
    (x * 1).backward(g)  # a plain array works too
    close(x.grad, g)


def test_backward_on_a_leaf_and_retain_grad():
    x = Tensor([1.0, 2.0], requires_grad=True)
    x.backward(np.array([1.0, 1.0], dtype=np.float32))
    close(x.grad, [1.0, 1.0])
    a = Tensor([3.0], requires_grad=True, dtype=np.float64)
    h = (a * 2).retain_grad()
    (h * h).sum().backward()
    close(h.grad, [12.0])
    close(a.grad, [24.0])


def test_tensors_given_one_gradient_array_keep_their_own_grads():
    """Add hands dy to both operands: leaves and retained non-leaves alike must each get their
    own .grad array, so that scaling one in place leaves the other alone."""
    a, b = Tensor([1.0, 2.0], requires_grad=True), Tensor([3.0, 4.0], requires_grad=True)
    x, y = (a * 2).retain_grad(), (b * 3).retain_grad()
    (a + b + x + y).sum().backward()
    x.grad.data *= 10
    a.grad.data *= 10
    close(y.grad, [1.0, 1.0])
    close(b.grad, [4.0, 4.0])
    close(x.grad, [10.0, 10.0])
    close(a.grad, [30.0, 30.0])


def test_retain_graph_allows_a_second_backward():
    x = Tensor([2.0], requires_grad=True, dtype=np.float64)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    close(x.grad, [8.0])


def test_deep_graph_needs_no_recursion():
    x = Tensor([1.0], requires_grad=True, dtype=np.float64)
    y = x
    for _ in range(5000):
        y = y * 1.0001
    y.backward()
    close(x.grad, [1.0001 ** 5000], 1e-6)


def test_error_messages():
    a, b = Tensor(np.ones((2, 3)), requires_grad=True), Tensor(np.ones((4,)))
    with pytest.raises(ValueError, match=r"add: shapes \(2, 3\) and \(4,\)"):
        a + b
    with pytest.raises(ValueError, match=r"mul: shapes \(2, 3\) and \(4,\)"):
        a * b
    with pytest.raises(ValueError, match=r"matmul: shapes \(2, 3\) and \(4,\)"):
        a @ b
    with pytest.raises(ValueError, match=r"reshape: cannot view shape \(2, 3\)"):
        a.reshape(4, 2)
    with pytest.raises(ValueError, match="permute"):
        a.permute(0, 0)
    with pytest.raises(ValueError, match="expand"):
        a.expand(3, 3)
    y = (a * a).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()
    with pytest.raises(RuntimeError, match="needs gradient="):
        (a * 2).backward()
    with pytest.raises(RuntimeError, match="does not match"):
        (a * 2).backward(np.ones(3))
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor([1.0]).backward()
    with pytest.raises(ValueError, match="one element"):
        a.item()
    with pytest.raises(ValueError, match="ambiguous"):
        bool(a)


def test_gradcheck_catches_a_wrong_backward():
    class WrongSquare(tgs.Function):
        def forward(self, x):
            self.save_for_backward(x)
            return x * x

        def backward(self, dy):
            return dy * self.saved[0]  # should be 2 x dy

    with pytest.raises(GradcheckError, match="input 0"):
        gradcheck(lambda t: WrongSquare.apply(t), [data(3)])
    assert gradcheck(lambda t: WrongSquare.apply(t), [data(3)], raise_exception=False) is False


def test_tensor_conveniences():
    t = Tensor(np.arange(6.0).reshape(2, 3))
    assert t.size() == (2, 3) and t.size(1) == 3 and t.dim() == 2 and t.numel() == 6 and len(t) == 2
    assert t.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert float(t[1, 2]) == 5.0 and int(Tensor([7])) == 7
    assert "requires_grad=True" in repr(Tensor([1.0], requires_grad=True))
    assert bool((t > 4).any()) and not bool((t > 4).all())
    assert ((t > 1) & (t < 4)).numpy().sum() == 2 and ((t < 1) | (t > 4)).numpy().sum() == 2
    assert (~(t > 1)).numpy().sum() == 2
    assert (t == 3).numpy().sum() == 1 and (t != 3).numpy().sum() == 5 and (t >= 3).numpy().sum() == 3
    assert t.device == "cpu" and t.to("cpu") is t
    assert Tensor(np.ones(3)).zero_().numpy().sum() == 0


def test_index_and_mask_arrays_are_freed_after_backward():
    """Where, indexing, setitem, NLL and embedding keep their index/mask arrays through
    save_for_backward, so one backward releases them with the rest of the graph."""
    import tinygrad_seq.nn.functional as F
    x = tgs.randn(6, 5, requires_grad=True)
    weight = tgs.randn(10, 3, requires_grad=True)
    ids = np.array([[1, 2], [3, 1]])
    y = x.clone()
    y[np.array([0, 2])] = tgs.zeros(2, 5)
    outputs = [tgs.where(tgs.Tensor(np.arange(30).reshape(6, 5) % 2 == 0), x, x * 2),
               x[np.array([0, 0, 3])], y,
               F.cross_entropy(x, tgs.Tensor(np.array([0, 1, 2, 3, 4, -100])), ignore_index=-100),
               F.embedding(tgs.Tensor(ids), weight)]
    nodes = [out._ctx for out in outputs]
    assert all(node.saved for node in nodes)
    sum(out.sum() for out in outputs).backward()
    assert all(node.saved is None for node in nodes)
    assert x.grad is not None and weight.grad is not None
