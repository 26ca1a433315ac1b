"""CUDA fused attention (cuBLAS-side products, one block per query row for the softmax/lse and
ds steps) under the simulator, against the NumPy reference."""
import numpy as np
import pytest
from kernel_checks import ATTENTION_BAD_CALLS, assert_raises_like_reference, attention_inputs
from simcheck import DTYPES, assert_close, assert_unchanged, directional_derivative, frozen

from tinygrad_seq.kernels.cuda import attention as cuda_attention
from tinygrad_seq.kernels.cuda.softmax import MAX_ROW_BLOCKS, ROW_THREADS
from tinygrad_seq.kernels.reference import attention as ref

# (N, L, S, E, Ev): one query and one key, L < S and L > S, more keys than the block's threads
# (rows strided), more rows than blocks (grid-stride over rows)
SHAPES = [(1, 1, 1, 2, 1), (2, 3, 5, 4, 3), (1, 5, 2, 3, 4), (1, 2, ROW_THREADS + 3, 2, 2),
          (2, MAX_ROW_BLOCKS, 3, 2, 3)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_backward_equal_the_reference(rng, dtype, causal, shape):
    q, k, v, dout = attention_inputs(rng, dtype, *shape)
    copies = frozen(q, k, v, dout)
    out, lse = cuda_attention.attention_forward(q, k, v, 0.7, causal)
    expected_out, expected_lse = ref.attention_forward(q, k, v, 0.7, causal)
    assert_close(out, expected_out, dtype)
    assert_close(lse, expected_lse, dtype)
    grads = cuda_attention.attention_backward(dout, q, k, v, expected_out, expected_lse, 0.7, causal)
    for got, expected in zip(grads, ref.attention_backward(dout, q, k, v, expected_out, expected_lse, 0.7, causal)):
        assert_close(got, expected, dtype)
    assert_unchanged([q, k, v, dout], copies)


@pytest.mark.parametrize("causal", [False, True])
def test_nan_reaches_only_the_queries_that_see_it(causal):
    q, k, v, dout = attention_inputs(np.random.default_rng(3), np.float64, 1, 4, 4, 2, 3)
    v[0, 2, 1] = np.nan
    out, lse = cuda_attention.attention_forward(q, k, v, 0.5, causal)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref.attention_forward(q, k, v, 0.5, causal)[0]))
    assert np.all(np.isnan(out[0, 2:, 1])) and (np.all(np.isfinite(out[0, :2])) if causal else np.isnan(out[0, 0, 1]))


def test_backward_matches_finite_differences(rng):
    q, k, v, dout = attention_inputs(rng, np.float64, 1, 3, 4, 2, 2)
    dq, dk, dv = cuda_attention.attention_backward(dout, q, k, v, *cuda_attention.attention_forward(q, k, v, 0.6, True),
                                                   0.6, True)
    for index, grad in enumerate((dq, dk, dv)):
        direction = rng.standard_normal(grad.shape)
        numeric = directional_derivative(
            lambda *qkv: np.sum(dout * cuda_attention.attention_forward(*qkv, 0.6, True)[0]), [q, k, v], index, direction)
        np.testing.assert_allclose(np.sum(grad * direction), numeric, rtol=1e-6)


def test_bad_arguments_raise_the_reference_message():
    for function, args in ATTENTION_BAD_CALLS:
        assert_raises_like_reference(cuda_attention, ref, function, *args)


@pytest.mark.parametrize("causal", [False, True])
def test_head_views_and_given_outputs(rng, causal):
    """q, k, v the head views (N, h, L, d) of one packed (N, L, 3E) projection, dout a transposed
    view, out and dq, dk, dv given as views laid out (N, L, h, d): filled in place with the
    reference's numbers on contiguous copies."""
    N, L, h, d = 2, 5, 2, 3
    qkv = rng.standard_normal((N, L, 3 * h * d))
    q, k, v = (c.reshape(N, L, h, d).transpose(0, 2, 1, 3) for c in np.split(qkv, 3, axis=-1))
    dout = rng.standard_normal((N, L, h, d)).transpose(0, 2, 1, 3)
    contiguous = [np.ascontiguousarray(a) for a in (q, k, v, dout)]
    out = np.empty((N, L, h, d)).transpose(0, 2, 1, 3)
    got_out, lse = cuda_attention.attention_forward(q, k, v, 0.7, causal, out=out)
    expected_out, expected_lse = ref.attention_forward(*contiguous[:3], 0.7, causal)
    assert got_out is out
    assert_close(out, expected_out, np.float64)
    assert_close(lse, expected_lse, np.float64)
    grads = np.empty_like(qkv)
    given = [c.reshape(N, L, h, d).transpose(0, 2, 1, 3) for c in np.split(grads, 3, axis=-1)]
    got = cuda_attention.attention_backward(dout, q, k, v, out, lse, 0.7, causal, dq=given[0], dk=given[1], dv=given[2])
    assert all(a is b for a, b in zip(got, given))
    for g, expected in zip(given, ref.attention_backward(contiguous[3], *contiguous[:3], expected_out, expected_lse,
                                                         0.7, causal)):
        assert_close(g, expected, np.float64)
