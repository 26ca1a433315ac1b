"""Attention without layout copies: the kernels on strided views and given outputs (every CPU
backend against the reference on contiguous copies, NaN/inf included), their layout errors,
no copy in the cython kernel (tracemalloc) nor on the engine's path (the op's arrays are views
of the projection, the gradients come back as one array through ops.Split), Split.backward's
join (a view when the pieces lie side by side, a concatenation otherwise), and the numbers:
gradcheck of nn.MultiheadAttention and of F.scaled_dot_product_attention on a chunked
projection, and PyTorch on a user's block."""
import functools
import tracemalloc

import numpy as np
import pytest
from kernel_checks import assert_matches, backend_kernels

import tinygrad_seq as tgs
from tinygrad_seq import Tensor, gradcheck, nn, ops
from tinygrad_seq.backend import BACKENDS, observe_kernels, unavailable_reason
from tinygrad_seq.kernels.reference import attention as ref
from tinygrad_seq.nn import functional as F
from tinygrad_seq.ops.attention import empty_like_together
from tinygrad_seq.ops.movement import adjacent_join

pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

CPU = [name for name, (_, devices) in BACKENDS.items() if "cpu" in devices]
DTYPES = [np.float32, np.float64]
attention_kernels = functools.partial(backend_kernels, family="attention")


def heads(packed, h):
    """(N, L, h*d) -> the (N, h, L, d) view of its heads (what MultiheadAttention makes)."""
    N, L, E = packed.shape
    return packed.reshape(N, L, h, E // h).transpose(0, 2, 1, 3)


def packed_heads(rng, dtype, N, L, h, d):
    """q, k, v: the head views of the three chunks of one (N, L, 3 h d) projection."""
    qkv = rng.standard_normal((N, L, 3 * h * d)).astype(dtype)
    return tuple(heads(chunk, h) for chunk in np.split(qkv, 3, axis=-1)), qkv


def copies(*arrays):
    return [np.ascontiguousarray(a) for a in arrays]


# (N, L, h, d): one head of one position; odd sizes off the panel widths; enough work for the
# cython team; more queries than one cython chunk (256)
HEAD_SHAPES = [(1, 1, 1, 1), (2, 5, 3, 4), (3, 33, 4, 8), (1, 260, 2, 3)]


@pytest.mark.parametrize("name", CPU)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", HEAD_SHAPES)
def test_head_views_and_given_outputs_equal_the_reference(name, dtype, causal, shape):
    """q, k, v head views of one qkv; out a (N, L, h, d) array seen as heads; dout a transposed
    view; dq, dk, dv the same views of one new (N, L, 3E) array: every backend fills exactly the
    given arrays with the reference's numbers on contiguous copies, and reads no input changed."""
    kernels = attention_kernels(name)
    N, L, h, d = shape
    rng = np.random.default_rng(sum(shape))
    (q, k, v), qkv = packed_heads(rng, dtype, N, L, h, d)
    dout = heads(rng.standard_normal((N, L, h * d)).astype(dtype), h)
    before = qkv.copy()
    out_rows = np.full((N, L, h * d), np.nan, dtype=dtype)
    out, lse = kernels.attention_forward(q, k, v, 0.4, causal, out=heads(out_rows, h))
    expected_out, expected_lse = ref.attention_forward(*copies(q, k, v), 0.4, causal)
    assert out.base is not None and np.shares_memory(out, out_rows)        # the given array, filled
    assert_matches((out, lse), (expected_out, expected_lse), dtype, f"{name} forward")
    grad_rows = np.full((N, L, 3 * h * d), np.nan, dtype=dtype)
    given = tuple(heads(chunk, h) for chunk in np.split(grad_rows, 3, axis=-1))
    grads = kernels.attention_backward(dout, q, k, v, out, lse, 0.4, causal, dq=given[0], dk=given[1], dv=given[2])
    assert all(g is w for g, w in zip(grads, given))
    expected = ref.attention_backward(*copies(dout, q, k, v, expected_out, expected_lse), 0.4, causal)
    assert_matches(tuple(grads), expected, dtype, f"{name} backward")
    assert not np.isnan(grad_rows).any()                                   # every element written
    np.testing.assert_array_equal(qkv, before)


@pytest.mark.parametrize("name", CPU)
@pytest.mark.parametrize("causal", [False, True])
def test_mixed_layouts_and_more_leading_axes(name, causal):
    """Leading axes (2, 3): q a head view, k transposed from (.., S, 3, ..) rows, v a slice of wider
    rows (row stride > Ev), S != L and Ev != E; outputs allocated by the kernel."""
    kernels = attention_kernels(name)
    rng = np.random.default_rng(11)
    L, S, E, Ev = 7, 9, 5, 6
    q = rng.standard_normal((2, L, 3, E)).transpose(0, 2, 1, 3)
    k = rng.standard_normal((2, S, 3, E)).transpose(0, 2, 1, 3)
    v = rng.standard_normal((2, 3, S, Ev + 4))[..., 2:Ev + 2]
    dout = rng.standard_normal((L, 2, 3, Ev)).transpose(1, 2, 0, 3)
    out, lse = kernels.attention_forward(q, k, v, 0.7, causal)
    expected = ref.attention_forward(*copies(q, k, v), 0.7, causal)
    assert out.shape == (2, 3, L, Ev) and lse.shape == (2, 3, L)
    assert_matches((out, lse), expected, np.float64, f"{name} forward")
    assert_matches(tuple(kernels.attention_backward(dout, q, k, v, out, lse, 0.7, causal)),
                   ref.attention_backward(*copies(dout, q, k, v), *expected, 0.7, causal), np.float64,
                   f"{name} backward")


@pytest.mark.parametrize("name", CPU)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
def test_nan_and_inf_on_views_as_in_the_reference(name, dtype, causal):
    """The cython kernel's deferred matrices (NaN/inf under the causal mask) are recomputed by
    the reference into the views: head 1 of batch 0 holds a NaN key, head 2 of batch 1 an
    infinite value, and a NaN in dout; the other matrices stay finite where they should."""
    kernels = attention_kernels(name)
    rng = np.random.default_rng(12)
    N, L, h, d = 2, 9, 3, 4
    (q, k, v), qkv = packed_heads(rng, dtype, N, L, h, d)
    qkv[0, 5, h * d + d + 1] = np.nan        # k[0, 1, 5, 1]
    qkv[1, 6, 2 * h * d + 2 * d] = np.inf    # v[1, 2, 6, 0]
    assert np.isnan(k[0, 1, 5, 1]) and np.isinf(v[1, 2, 6, 0])
    dout = heads(rng.standard_normal((N, L, h * d)).astype(dtype), h)
    dout[0, 0, 3, 2] = np.nan
    out, lse = kernels.attention_forward(q, k, v, 0.5, causal, out=heads(np.empty((N, L, h * d), dtype), h))
    expected = ref.attention_forward(*copies(q, k, v), 0.5, causal)
    assert_matches((out, lse), expected, dtype, f"{name} forward causal={causal}")
    if causal:
        assert np.all(np.isfinite(out[0, 1, :5])) and np.all(np.isnan(out[0, 1, 5:]))
    given = tuple(heads(chunk, h) for chunk in np.split(np.empty_like(qkv), 3, axis=-1))
    grads = kernels.attention_backward(dout, q, k, v, *expected, 0.5, causal, dq=given[0], dk=given[1], dv=given[2])
    assert_matches(tuple(grads), ref.attention_backward(*copies(dout, q, k, v, *expected), 0.5, causal), dtype,
                   f"{name} backward causal={causal}")
    assert all(np.all(np.isfinite(g[1, 0])) for g in grads)     # a matrix without any stays finite


def _bad_layout_calls():
    q = np.zeros((2, 3, 4))
    wide = np.zeros((2, 3, 8))
    out = np.zeros((2, 3, 4))
    return [
        ("attention_forward", (wide[..., ::2], q, q, 1.0, False), {}),                 # q's rows strided
        ("attention_forward", (q, q, q, 1.0, False), {"out": np.zeros((2, 3, 5))}),    # out's shape
        ("attention_forward", (q, q, q, 1.0, False), {"out": wide[..., ::2]}),         # out's rows strided
        ("attention_forward", (q, q, q, 1.0, False), {"out": np.zeros((2, 3, 4), np.float32)}),
        ("attention_forward", (q[None], q, q, 1.0, False), {}),                        # leading axes differ
        ("attention_backward", (wide[..., ::2], q, q, q, out, np.zeros((2, 3)), 1.0, False), {}),
        ("attention_backward", (out, q, q, q, out, np.zeros((2, 3)), 1.0, False), {"dk": np.zeros((2, 4, 4))}),
        ("attention_backward", (out, q, q, q, out, np.zeros((2, 3)), 1.0, False), {"dv": wide[..., 1::2]}),
    ]


@pytest.mark.parametrize("name", [name for name in CPU if name != "numpy"])
@pytest.mark.parametrize("index", range(len(_bad_layout_calls())))
def test_bad_layouts_and_outputs_raise_the_reference_message(name, index):
    function, args, kwargs = _bad_layout_calls()[index]
    with pytest.raises(ValueError) as expected:
        getattr(ref, function)(*args, **kwargs)
    with pytest.raises(ValueError) as got:
        getattr(attention_kernels(name), function)(*args, **kwargs)
    assert str(got.value) == str(expected.value)


@pytest.mark.parametrize("causal", [False, True])
def test_the_cython_kernel_copies_nothing_of_the_operands_size(causal):
    """NumPy reports its allocations to tracemalloc: forward and backward on head views with
    given outputs allocate only lse, the deferred flags and the matrices' offsets, far below one
    copy of q (the thread scratch is C's malloc, not NumPy's).  A copy of any view would fail it."""
    kernels = attention_kernels("cython")
    N, L, h, d = 4, 64, 4, 32
    rng = np.random.default_rng(13)
    (q, k, v), qkv = packed_heads(rng, np.float32, N, L, h, d)
    dout = heads(rng.standard_normal((N, L, h * d)).astype(np.float32), h)
    out = heads(np.empty((N, L, h * d), np.float32), h)
    grads = tuple(heads(chunk, h) for chunk in np.split(np.empty_like(qkv), 3, axis=-1))
    kernels.attention_forward(q, k, v, 0.1, causal, out=out)     # warm: imports, first calls
    tracemalloc.start()
    try:
        _, lse = kernels.attention_forward(q, k, v, 0.1, causal, out=out)
        kernels.attention_backward(dout, q, k, v, out, lse, 0.1, causal, dq=grads[0], dk=grads[1], dv=grads[2])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < q.nbytes // 4, f"{peak} bytes allocated: a {q.nbytes}-byte operand was copied"


# ---------------------------------------------------------------------------------- the engine

def _chunked_heads(qkv, h):
    """The user's block: one projection chunked into q, k, v, each viewed as heads."""
    N, L, _ = qkv.shape
    return [t.reshape(N, L, h, -1).transpose(1, 2) for t in qkv.chunk(3, dim=-1)]


def test_the_engine_path_hands_views_through_and_joins_the_gradients_without_a_copy(monkeypatch):
    """F.scaled_dot_product_attention on a chunked projection, on the cython backend: the kernel
    reads the projection itself, its out is the heads' view of an (N, L, E) array (so the join
    back is a view), dout comes in as the transposed view it is, and dq, dk, dv reach Split's
    backward side by side in one array, which it hands on as qkv's gradient."""
    N, L, h, d = 2, 6, 3, 4
    E = h * d
    rng = np.random.default_rng(14)
    qkv = Tensor(rng.standard_normal((N, L, 3 * E)).astype(np.float32), requires_grad=True)
    weights = rng.standard_normal((N, L, E)).astype(np.float32)
    joins = []
    split_backward = ops.Split.backward

    def recording(self, *dys):
        dx = split_backward(self, *dys)
        joins.append((dys, dx))
        return dx
    monkeypatch.setattr(ops.Split, "backward", recording)
    calls = []
    with tgs.backend("cython"), observe_kernels(lambda family, function, args, seconds: calls.append((function, args))):
        q, k, v = _chunked_heads(qkv, h)
        context = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        joined = context.transpose(1, 2).reshape(N, L, E)
        (joined * Tensor(weights)).sum().backward()
    (_, forward_args), (_, backward_args) = [c for c in calls if c[0].startswith("attention")]
    assert all(np.shares_memory(a, qkv.data) for a in forward_args[:3])
    assert np.shares_memory(joined.data, context.data)                          # a view, not a copy
    dout = backward_args[0]
    assert dout.shape == (N, h, L, d) and dout.strides[-2] == E * dout.itemsize   # still transposed
    (dys, dx), = joins
    assert all(np.shares_memory(dx, dy) for dy in dys) and qkv.grad.data is dx
    # the numbers: the same composition on the numpy backend, which copies
    with tgs.backend("numpy"):
        other = Tensor(qkv.data, requires_grad=True)
        q, k, v = _chunked_heads(other, h)
        context2 = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        (context2.transpose(1, 2).reshape(N, L, E) * Tensor(weights)).sum().backward()
    np.testing.assert_allclose(context.numpy(), context2.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(qkv.grad.numpy(), other.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_multihead_attention_saves_views_of_its_projection():
    """nn.MultiheadAttention (self-attention, no weights asked): the op keeps q, k, v as views of
    the one projection, and its out is laid out (N, L, h, d), the joined heads' layout."""
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    x = Tensor(np.random.default_rng(15).standard_normal((2, 5, 8)).astype(np.float32), requires_grad=True)
    with tgs.backend("cython"):
        out, _ = mha(x, x, x, need_weights=False, is_causal=True)
    q, k, v, context, _ = _attention_fn(out).saved
    projection = q.base
    assert projection is not None and projection.shape == (2, 5, 24) and k.base is projection and v.base is projection
    assert context.shape == (2, 2, 5, 4) and context.transpose(0, 2, 1, 3).flags.c_contiguous


def _attention_fn(tensor):
    """The ScaledDotProductAttention Function that `tensor` was computed from."""
    todo, seen = [tensor._ctx], set()
    while todo:
        fn = todo.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        if isinstance(fn, ops.ScaledDotProductAttention):
            return fn
        todo.extend(p._ctx for p in fn.parents if p is not None)
    raise AssertionError("no attention op in the graph")


@pytest.mark.parametrize("causal", [False, True])
def test_gradcheck_of_attention_on_a_chunked_projection(causal):
    h = 2

    def block(qkv):
        q, k, v = _chunked_heads(qkv, h)
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=0.7).transpose(1, 2).reshape(2, 4, 6)
    qkv = np.random.default_rng(16).standard_normal((2, 4, 18))
    for name in ("cython", "numba"):
        with tgs.backend(name):
            assert gradcheck(block, [qkv])


@pytest.mark.parametrize("causal", [False, True])
def test_gradcheck_of_multihead_attention(causal):
    mha = nn.MultiheadAttention(6, 2, batch_first=True).double()
    x = np.random.default_rng(17).standard_normal((2, 4, 6))
    with tgs.backend("cython"):
        assert gradcheck(lambda x: mha(x, x, x, need_weights=False, is_causal=causal)[0], [x])


def test_self_attention_on_one_tensor_gets_separate_gradients():
    """F.scaled_dot_product_attention(x, x, x): q, k, v are one array, so dq, dk, dv must not be
    views of one buffer (they would overlap); the engine sums the three."""
    x = np.random.default_rng(18).standard_normal((2, 5, 3))
    with tgs.backend("cython"):
        assert gradcheck(lambda x: F.scaled_dot_product_attention(x, x, x, is_causal=True), [x])


@pytest.mark.parametrize("name", CPU)
def test_a_users_block_matches_pytorch(name):
    """The transformer_block workload's attention as a user writes it: nn.Linear to q, k, v at
    once, chunk, heads by reshape/transpose, F.scaled_dot_product_attention, the heads joined
    back, a projection; outputs and every gradient against PyTorch's."""
    torch = pytest.importorskip("torch")
    if unavailable_reason(name):
        pytest.skip(f"backend {name} unavailable: {unavailable_reason(name)}")
    N, L, h, d = 3, 7, 2, 4
    E = h * d
    rng = np.random.default_rng(19)
    x = rng.standard_normal((N, L, E))
    w_qkv, b_qkv = rng.standard_normal((3 * E, E)) / 3, rng.standard_normal(3 * E)
    w_out = rng.standard_normal((E, E)) / 3

    def block(lib, x, w_qkv, b_qkv, w_out):
        q, k, v = ((x @ w_qkv.transpose(0, 1) + b_qkv).chunk(3, dim=-1))
        q, k, v = (t.reshape(N, L, h, d).transpose(1, 2) for t in (q, k, v))
        attended = lib.scaled_dot_product_attention(q, k, v, is_causal=True)
        return attended.transpose(1, 2).reshape(N, L, E) @ w_out
    ours = [Tensor(a, dtype=np.float64, requires_grad=True) for a in (x, w_qkv, b_qkv, w_out)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, w_qkv, b_qkv, w_out)]
    with tgs.backend(name):
        out = block(F, *ours)
        (out * out).sum().backward()
    tout = block(torch.nn.functional, *theirs)
    (tout * tout).sum().backward()
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-10, atol=1e-12)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-9, atol=1e-11)


# ------------------------------------------------------------------------------ Split.backward

def _split_backward(x_shape, dys, axis):
    fn = ops.Split()
    fn.forward(np.zeros(x_shape), [dy.shape[axis] for dy in dys], axis=axis)
    return fn.backward(*dys)


def test_split_backward_hands_on_adjacent_pieces_as_one_view():
    base = np.arange(2 * 3 * 9, dtype=np.float64).reshape(2, 3, 9)
    pieces = np.split(base, [2, 6], axis=-1)
    dx = _split_backward(base.shape, pieces, -1)
    assert np.shares_memory(dx, base) and dx.shape == base.shape
    np.testing.assert_array_equal(dx, base)
    rows = np.split(base, [1], axis=1)          # along a middle axis
    dx = _split_backward(base.shape, rows, 1)
    assert np.shares_memory(dx, base)
    np.testing.assert_array_equal(dx, base)


def _not_adjacent_cases():
    base = np.arange(2 * 3 * 9, dtype=np.float64).reshape(2, 3, 9)
    a, b, c = np.split(base, [3, 6], axis=-1)
    other = base.copy()
    return [
        ("separate arrays", [a.copy(), b.copy(), c.copy()]),
        ("out of order", [b, a, c]),
        ("a gap between", [base[..., 0:3], base[..., 4:7], base[..., 7:9]]),
        ("two allocations", [a, other[..., 3:6], c]),
        ("different strides", [a, np.ascontiguousarray(b), c]),
        ("overlapping", [base[..., 0:3], base[..., 2:5], base[..., 5:8]]),
        ("a missing piece's zeros", [a, np.zeros_like(b), c]),
    ]


@pytest.mark.parametrize("index", range(len(_not_adjacent_cases())))
def test_split_backward_concatenates_pieces_that_are_not_adjacent(index):
    label, pieces = _not_adjacent_cases()[index]
    expected = np.concatenate(pieces, axis=-1)
    dx = _split_backward(expected.shape, pieces, -1)
    assert adjacent_join(pieces, 2) is None, label
    np.testing.assert_array_equal(dx, expected, err_msg=label)
    assert not any(np.shares_memory(dx, p) for p in pieces), label


def test_gradients_are_one_buffer_only_for_disjoint_views_of_one_array():
    (q, k, v), qkv = packed_heads(np.random.default_rng(20), np.float32, 2, 4, 3, 2)
    dq, dk, dv = empty_like_together((q, k, v))
    assert (dq.shape, dq.strides) == (q.shape, q.strides)
    buffer = dq
    while buffer.base is not None:
        buffer = buffer.base
    assert buffer.size == qkv.size and np.shares_memory(dk, buffer) and np.shares_memory(dv, buffer)
    joined = adjacent_join([t.transpose(0, 2, 1, 3).reshape(2, 4, 6) for t in (dq, dk, dv)], 2)
    assert joined is not None and joined.shape == qkv.shape and joined.flags.c_contiguous
    windows = np.lib.stride_tricks.sliding_window_view(qkv.ravel(), 4)[:3]     # overlapping rows
    cases = [(q, q, q), (q, k, k), (q, k, q[:, :, ::-1]), (q, k, v.copy()), tuple(windows)]
    for arrays in cases:
        fresh = empty_like_together(arrays)
        assert not any(np.shares_memory(a, b) for i, a in enumerate(fresh) for b in fresh[i + 1:])
