"""The fused attention kernel family on every CPU backend against the NumPy reference (float32
and float64, causal or not, L != S both ways, E != Ev, one matrix or a number the thread team
does not divide, sizes off the panel width, more queries than one chunk, NaN and inf, the
reference's error messages), and ops.ScaledDotProductAttention in the engine: gradcheck, PyTorch
through F.scaled_dot_product_attention and nn.MultiheadAttention, the same numbers as the
composed path, and taken exactly where it computes what was asked.

(The cuda backend runs under the simulator in tests/cudasim/test_sim_attention.py.)
"""
import functools
import importlib

import numpy as np
import pytest
from kernel_checks import (ATTENTION_BAD_CALLS, assert_matches, assert_raises_like_reference, attention_inputs,
                           backend_kernels, check_attention_special_values)

import tinygrad_seq as tgs
from tinygrad_seq import Tensor, gradcheck, nn
from tinygrad_seq.backend import BACKENDS, observe_kernels, unavailable_reason
from tinygrad_seq.kernels.reference import attention as ref
from tinygrad_seq.nn import functional as F

# the NaN cases: NumPy warns of the NaN its own products make, which is what they check
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

COMPILED_CPU = [name for name, (_, devices) in BACKENDS.items() if "cpu" in devices and name != "numpy"]
DTYPES = [np.float32, np.float64]
# (N, L, S, E, Ev): one of each; L < S and L > S; E != Ev off the panel widths (8, 16, 32);
# N odd with enough work for the cython team (2**18 multiply-adds); L above the cython chunk (256)
SHAPES = [(1, 1, 1, 1, 1), (2, 3, 7, 4, 3), (1, 9, 4, 5, 6), (3, 17, 17, 16, 8), (5, 64, 70, 20, 24),
          (2, 300, 260, 5, 7)]

attention_kernels = functools.partial(backend_kernels, family="attention")   # (backend name) -> module


def _in_wider_rows(a):
    """The same numbers as a view whose rows lie inside wider ones (row stride > row length),
    NaN around them: a kernel that ignored the strides would read NaN."""
    wide = np.full(a.shape[:-1] + (a.shape[-1] + 3,), np.nan, dtype=a.dtype)
    wide[..., 1:-2] = a
    return wide[..., 1:-2]


@pytest.mark.parametrize("name", COMPILED_CPU)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("strided", [False, True])
def test_forward_and_backward_equal_the_reference(name, dtype, causal, shape, strided):
    kernels = attention_kernels(name)
    q, k, v, dout = attention_inputs(np.random.default_rng(sum(shape)), dtype, *shape)
    if strided:    # every operand a view with rows apart (the reference gets them too: it copies)
        q, k, v, dout = (_in_wider_rows(a) for a in (q, k, v, dout))
    inputs = [a.copy() for a in (q, k, v, dout)]
    out, lse = kernels.attention_forward(q, k, v, 0.3, causal)
    expected = ref.attention_forward(q, k, v, 0.3, causal)
    assert_matches((out, lse), expected, dtype, f"{name} forward")
    grads = kernels.attention_backward(dout, q, k, v, *expected, 0.3, causal)
    assert_matches(tuple(grads), ref.attention_backward(dout, q, k, v, *expected, 0.3, causal), dtype,
                   f"{name} backward")
    for before, after in zip(inputs, (q, k, v, dout)):
        np.testing.assert_array_equal(before, after)          # inputs are never modified


@pytest.mark.parametrize("name", COMPILED_CPU)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
def test_nan_and_inf_spread_as_in_the_reference(name, dtype, causal):
    check_attention_special_values(attention_kernels(name), ref, dtype, causal)


def test_the_reference_keeps_hidden_pairs_out_of_its_products():
    """A NaN value at key 3 reaches the queries i >= 3 only; the plain product p @ v would have
    spread it to every row through p's zeros (0 * NaN).  Backward, their NaN rows of out make
    every dk they reach NaN, while dq of the rows before and dv stay finite."""
    q, k, v, dout = attention_inputs(np.random.default_rng(0), np.float64, 1, 6, 6, 2, 2)
    v[0, 3, 0] = np.nan
    out, lse = ref.attention_forward(q, k, v, 1.0, True)
    assert np.all(np.isfinite(out[0, :3])) and np.all(np.isnan(out[0, 3:, 0]))
    dq, dk, dv = ref.attention_backward(dout, q, k, v, out, lse, 1.0, True)
    assert np.all(np.isfinite(dq[0, :3])) and np.all(np.isnan(dq[0, 3:])) and np.all(np.isfinite(dv[0]))


@pytest.mark.parametrize("name", COMPILED_CPU)
def test_bad_arguments_raise_the_reference_message(name):
    kernels = attention_kernels(name)
    for function, args in ATTENTION_BAD_CALLS:
        assert_raises_like_reference(kernels, ref, function, *args)


def test_the_cython_team_gives_the_numbers_of_one_thread():
    kernels = attention_kernels("cython")
    compiled = importlib.import_module("tinygrad_seq.kernels.cython._attention")
    q, k, v, dout = attention_inputs(np.random.default_rng(2), np.float32, 7, 64, 64, 32, 32)
    threads = compiled.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            compiled.set_num_threads(n)
            out, lse = kernels.attention_forward(q, k, v, 0.2, True)
            results.append((out, lse) + tuple(kernels.attention_backward(dout, q, k, v, out, lse, 0.2, True)))
    finally:
        compiled.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------- the op in the engine

def _leaves(rng, dtype, *shapes):
    return [Tensor(rng.standard_normal(s).astype(dtype), dtype=dtype, requires_grad=True) for s in shapes]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shapes", [((2, 4, 3), (2, 4, 3), (2, 4, 2)), ((1, 2, 3, 2), (1, 2, 5, 2), (1, 2, 5, 3)),
                                    ((5, 3), (2, 3), (2, 4))])
def test_gradcheck(causal, shapes):
    rng = np.random.default_rng(4)
    inputs = [rng.standard_normal(s) for s in shapes]
    assert gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=0.8), inputs)


def _fused_calls(run):
    """(result of run(), the kernel families called during it)."""
    families = []
    with observe_kernels(lambda family, function, args, seconds: families.append(family)):
        result = run()
    return result, families


@pytest.mark.parametrize("name", ["numpy"] + COMPILED_CPU)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_matches_pytorch_on_each_backend(name, dtype, causal):
    torch = pytest.importorskip("torch")
    if unavailable_reason(name):
        pytest.skip(f"backend {name} unavailable: {unavailable_reason(name)}")
    rng = np.random.default_rng(5)
    q, k, v = _leaves(rng, dtype, (2, 3, 6, 8), (2, 3, 9, 8), (2, 3, 9, 5))
    weights = rng.standard_normal((2, 3, 6, 5)).astype(dtype)
    with tgs.backend(name):
        out, families = _fused_calls(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal))
        (out * Tensor(weights, dtype=dtype)).sum().backward()
    assert "attention" in families and "softmax" not in families
    tq, tk, tv = (torch.tensor(t.numpy(), requires_grad=True) for t in (q, k, v))
    theirs = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=causal)
    (theirs * torch.from_numpy(weights)).sum().backward()
    tol = dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out.numpy(), theirs.detach().numpy(), **tol)
    for ours, torchs in zip((q, k, v), (tq, tk, tv)):
        np.testing.assert_allclose(ours.grad.numpy(), torchs.grad.numpy(), **tol)


@pytest.mark.parametrize("name", ["numpy"] + COMPILED_CPU)
@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_without_weights_matches_pytorch(name, batch_first):
    torch = pytest.importorskip("torch")
    if unavailable_reason(name):
        pytest.skip(f"backend {name} unavailable: {unavailable_reason(name)}")
    torch.manual_seed(0)
    E, heads, N, L = 8, 2, 3, 5
    theirs = torch.nn.MultiheadAttention(E, heads, batch_first=batch_first).double()
    ours = nn.MultiheadAttention(E, heads, batch_first=batch_first).double()
    ours.load_state_dict({key: val.detach().numpy() for key, val in theirs.state_dict().items()})
    assert all(p.dtype == np.float64 for p in ours.parameters())
    x = np.random.default_rng(6).standard_normal((N, L, E) if batch_first else (L, N, E))
    ox, tx = Tensor(x, dtype=np.float64, requires_grad=True), torch.tensor(x, requires_grad=True)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(L, dtype=torch.float64)
    with tgs.backend(name):
        (out, weights), families = _fused_calls(lambda: ours(ox, ox, ox, need_weights=False, is_causal=True))
        (out * out).sum().backward()
    assert weights is None and "attention" in families and "softmax" not in families
    tout, _ = theirs(tx, tx, tx, need_weights=False, attn_mask=causal, is_causal=True)
    (tout * tout).sum().backward()
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ox.grad.numpy(), tx.grad.numpy(), rtol=1e-9, atol=1e-11)
    for (key, p), (tkey, tp) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert key == tkey
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-9, atol=1e-11, err_msg=key)


@pytest.mark.parametrize("causal", [False, True])
def test_the_fused_and_the_composed_path_agree(causal):
    rng = np.random.default_rng(8)
    q, k, v = _leaves(rng, np.float64, (2, 7, 4), (2, 5, 4), (2, 5, 3))
    fused = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    fused.sum().backward()
    fused_grads = [t.grad.numpy().copy() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    composed, families = _fused_calls(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal,
                                                                             return_weights=True)[0])
    composed.sum().backward()
    assert "softmax" in families and "attention" not in families
    np.testing.assert_allclose(fused.numpy(), composed.numpy(), rtol=1e-12, atol=1e-14)
    for got, t in zip(fused_grads, (q, k, v)):
        np.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-11, atol=1e-13)


def _mha_calls():
    """(description, call) of MultiheadAttention uses: whether each must take the fused op."""
    rng = np.random.default_rng(9)
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    x = Tensor(rng.standard_normal((2, 4, 8)).astype(np.float32), requires_grad=True)
    pad = np.zeros((2, 4), dtype=bool)
    pad[0, -1] = True
    dropping = nn.MultiheadAttention(8, 2, dropout=0.5, batch_first=True)
    return [
        (True, lambda: mha(x, x, x, need_weights=False)),
        (True, lambda: mha(x, x, x, need_weights=False, is_causal=True)),
        (True, lambda: dropping.eval()(x, x, x, need_weights=False)),          # dropout off in eval
        (False, lambda: mha(x, x, x)),                                            # weights asked for
        (False, lambda: mha(x, x, x, need_weights=False, key_padding_mask=pad)),
        (False, lambda: mha(x, x, x, need_weights=False, attn_mask=np.triu(np.ones((4, 4), bool), 1))),
        (False, lambda: dropping.train()(x, x, x, need_weights=False)),
    ]


def _sdpa_calls():
    rng = np.random.default_rng(10)
    q, k, v = _leaves(rng, np.float32, (2, 4, 3), (2, 4, 3), (2, 4, 3))
    return [
        (True, lambda: F.scaled_dot_product_attention(q, k, v)),
        (True, lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.1)),
        (False, lambda: F.scaled_dot_product_attention(q, k, v, return_weights=True)),
        (False, lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=np.ones((4, 4), bool))),
        (False, lambda: F.scaled_dot_product_attention(q, k, v, dropout_p=0.2)),
        (False, lambda: F.scaled_dot_product_attention(q, k[:1], v[:1])),       # broadcast batch
        (False, lambda: F.scaled_dot_product_attention(q, k.double(), v.double())),
    ]


@pytest.mark.parametrize("index", range(len(_mha_calls()) + len(_sdpa_calls())))
def test_the_fused_op_is_taken_exactly_where_it_computes_what_was_asked(index):
    fused, call = (_mha_calls() + _sdpa_calls())[index]
    _, families = _fused_calls(call)
    assert ("attention" in families) == fused
    assert ("softmax" in families) == (not fused)


def test_the_transformer_lm_hands_its_projection_to_the_kernel_as_it_lies():
    """The LM's attention kernel reads q, k, v from the one qkv projection (views, no copies)."""
    from tinygrad_seq.models.transformer_lm import TransformerLM, TransformerLMConfig
    model = TransformerLM(TransformerLMConfig(vocab_size=11, n_embd=8, n_head=2, n_layer=1, block_size=6))
    calls = []
    with tgs.backend("cython"), observe_kernels(lambda family, function, args, seconds: calls.append((function, args))):
        model(Tensor(np.array([[1, 2, 3, 4, 5]]))).sum().backward()
    (_, forward), = [args for args in calls if args[0] == "attention_forward"]
    q, k, v = forward[:3]
    assert q.base is not None and k.base is q.base and v.base is q.base and not q.flags.c_contiguous


def test_the_transformer_lm_runs_the_fused_op():
    from tinygrad_seq.models.transformer_lm import TransformerLM, TransformerLMConfig
    model = TransformerLM(TransformerLMConfig(vocab_size=11, n_embd=8, n_head=2, n_layer=2, block_size=6))
    logits, families = _fused_calls(lambda: model(Tensor(np.array([[1, 2, 3, 4, 5]]))))
    logits.sum().backward()     # (the kernels handed out while observed report their backward too)
    assert families.count("attention") == 4 and "softmax" not in families   # 2 layers, forward and backward
