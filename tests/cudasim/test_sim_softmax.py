"""CUDA masked softmax and log-softmax (one block per row, shared-memory reductions) vs the NumPy
reference."""
import numpy as np
import pytest
from kernel_checks import (LOG_SOFTMAX_BAD_CALLS, SOFTMAX_BAD_CALLS, assert_matches, assert_raises_like_reference,
                           check_log_softmax_special_values)
from simcheck import DTYPES, assert_close, assert_unchanged, directional_derivative, frozen

from tinygrad_seq.kernels.cuda import softmax as cuda_softmax
from tinygrad_seq.kernels.cuda.softmax import MAX_ROW_BLOCKS, ROW_THREADS
from tinygrad_seq.kernels.reference import softmax as ref

# rows x length: one entry, fewer entries than threads, not a multiple of the block,
# several strides of the block per row, and more rows than blocks (grid-stride over rows)
SHAPES = [(1, 1), (3, 7), (2, ROW_THREADS + 1), (2, 2 * ROW_THREADS + 5), (MAX_ROW_BLOCKS + 3, 5)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_backward_without_mask(rng, dtype, shape):
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    copies = frozen(x, dy)
    y = cuda_softmax.softmax_forward(x, None)
    assert_close(y, ref.softmax_forward(x, None), dtype)
    np.testing.assert_allclose(y.sum(axis=-1), 1, rtol=1e-5)
    dx = cuda_softmax.softmax_backward(dy, y)
    assert_close(dx, ref.softmax_backward(dy, y), dtype)
    assert_unchanged([x, dy], copies)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 9), (3, 2 * ROW_THREADS + 3)])
def test_masked_rows_including_fully_masked(rng, dtype, shape):
    x = rng.standard_normal(shape).astype(dtype)
    mask = rng.random(shape) < 0.4
    mask[0] = True                    # every entry excluded: zeros, not NaN
    mask[1] = False
    mask[-1, :-1] = True              # a single entry left: probability 1
    mask[-1, -1] = False
    y = cuda_softmax.softmax_forward(x, mask)
    assert_close(y, ref.softmax_forward(x, mask), dtype)
    assert np.all(y[0] == 0) and np.all(y[mask] == 0)
    assert y[-1, -1] == 1
    dy = rng.standard_normal(shape).astype(dtype)
    dx = cuda_softmax.softmax_backward(dy, y)
    assert_close(dx, ref.softmax_backward(dy, y), dtype)
    assert np.all(dx[mask] == 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_logits_do_not_overflow(dtype):
    x = np.array([[1000.0, 999.0, -1000.0], [-1e4, -1e4, -1e4]], dtype=dtype)
    y = cuda_softmax.softmax_forward(x, None)
    assert np.all(np.isfinite(y))
    assert_close(y, ref.softmax_forward(x, None), dtype)


def test_backward_matches_finite_differences(rng):
    x = rng.standard_normal((3, 11))
    mask = rng.random((3, 11)) < 0.3
    weights = rng.standard_normal((3, 11))
    y = cuda_softmax.softmax_forward(x, mask)
    dx = cuda_softmax.softmax_backward(weights, y)
    direction = rng.standard_normal((3, 11))
    numeric = directional_derivative(lambda x: np.sum(weights * cuda_softmax.softmax_forward(x, mask)),
                                     [x], 0, direction)
    np.testing.assert_allclose(np.sum(dx * direction), numeric, rtol=1e-6)


def test_bad_arguments_raise_the_reference_message():
    for function, args in SOFTMAX_BAD_CALLS:
        assert_raises_like_reference(cuda_softmax, ref, function, *args)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_log_softmax_forward_backward(rng, dtype, shape):
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    copies = frozen(x, dy)
    y = cuda_softmax.log_softmax_forward(x)
    assert_close(y, ref.log_softmax_forward(x), dtype)
    np.testing.assert_allclose(np.exp(y.astype(np.float64)).sum(axis=-1), 1, rtol=1e-5)
    assert_close(cuda_softmax.log_softmax_backward(dy, y), ref.log_softmax_backward(dy, y), dtype)
    assert_unchanged([x, dy], copies)


# the simulator's threads compute the NaN/inf on NumPy scalars and warn (errstate is per thread)
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES)
def test_log_softmax_nan_and_inf(dtype):
    """The reference's (PyTorch's) IEEE rules: kernel_checks.check_log_softmax_special_values;
    and a row of one entry, and a row of only -inf longer than the block."""
    def both(name, *args):
        with np.errstate(all="ignore"):
            return getattr(cuda_softmax, name)(*args), getattr(ref, name)(*args)
    check_log_softmax_special_values(both, dtype, "cuda")
    single = np.array([[2.5], [np.inf], [-np.inf]], dtype=dtype)
    assert_matches(*both("log_softmax_forward", single), dtype, "one entry")
    long_rows = np.full((2, ROW_THREADS + 3), -np.inf, dtype=dtype)
    long_rows[1, -1] = 1.0
    y, expected = both("log_softmax_forward", long_rows)
    assert_matches(y, expected, dtype, "only -inf")
    assert np.all(np.isnan(y[0])) and y[1, -1] == 0 and np.all(np.isneginf(y[1, :-1]))


def test_log_softmax_backward_matches_finite_differences(rng):
    x = rng.standard_normal((3, 11))
    weights = rng.standard_normal((3, 11))
    y = cuda_softmax.log_softmax_forward(x)
    dx = cuda_softmax.log_softmax_backward(weights, y)
    direction = rng.standard_normal((3, 11))
    numeric = directional_derivative(lambda x: np.sum(weights * cuda_softmax.log_softmax_forward(x)),
                                     [x], 0, direction)
    np.testing.assert_allclose(np.sum(dx * direction), numeric, rtol=1e-6)


def test_log_softmax_bad_arguments_raise_the_reference_message():
    for function, args in LOG_SOFTMAX_BAD_CALLS:
        assert_raises_like_reference(cuda_softmax, ref, function, *args)


# x's shape, and the mask's shape before broadcasting to it: causal (L, S), key padding
# (N, 1, 1, S), per head (h, L, S), one row for all, and full size
BROADCASTS = [((2, 3, 4, 5), (4, 5)), ((2, 3, 4, 5), (2, 1, 1, 5)), ((2, 3, 4, 5), (3, 4, 5)),
              ((2, 3, 4, 5), (5,)), ((2, 1, 4, 5), (2, 1, 4, 5))]


@pytest.mark.parametrize("x_shape, mask_shape", BROADCASTS)
def test_a_broadcast_mask_is_read_where_it_is(rng, x_shape, mask_shape):
    x = rng.standard_normal(x_shape).astype(np.float32)
    mask = rng.random(mask_shape) < 0.4
    view = np.broadcast_to(mask, x_shape)
    compact = cuda_softmax.broadcast_mask_rows(view)
    assert compact.rows.size == mask.size                 # never more than the mask itself
    y = cuda_softmax.softmax_forward(x.reshape(-1, x_shape[-1]), compact)
    expected = ref.softmax_forward(x.reshape(-1, x_shape[-1]), np.ascontiguousarray(view).reshape(-1, x_shape[-1]))
    assert_close(y, expected, np.float32)


def test_a_mask_whose_axes_are_not_one_block_is_expanded():
    view = np.broadcast_to(np.zeros((2, 1, 4, 5), dtype=bool), (2, 3, 4, 5))   # batch and query axes, not heads
    assert cuda_softmax.broadcast_mask_rows(view) is None


def test_attention_hands_the_cuda_softmax_the_causal_mask_at_its_own_size(rng, monkeypatch):
    import importlib

    import tinygrad_seq as tgs
    from tinygrad_seq.nn import attention
    backend = importlib.import_module("tinygrad_seq.backend")   # the module, not tinygrad_seq.backend()

    q, k, v = (tgs.Tensor(rng.standard_normal((2, 3, 4, 6)).astype(np.float32), requires_grad=True) for _ in range(3))
    # return_weights keeps the composed path (matmul, softmax, matmul): the fused op has no mask
    expected, _ = attention.scaled_dot_product_attention(q, k, v, is_causal=True, return_weights=True)
    expected.sum().backward()
    expected_grads = [t.grad.numpy().copy() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    masks = []
    real_forward = cuda_softmax.softmax_forward
    monkeypatch.setattr(cuda_softmax, "softmax_forward", lambda x, mask: masks.append(mask) or real_forward(x, mask))
    monkeypatch.setattr(backend, "kernels", lambda family, device="cpu": cuda_softmax)
    out, _ = attention.scaled_dot_product_attention(q, k, v, is_causal=True, return_weights=True)
    out.sum().backward()
    assert [m.rows.shape for m in masks] == [(4, 4)] and masks[0].inner == 1
    assert_close(out.numpy(), expected.numpy(), np.float32)
    for t, g in zip((q, k, v), expected_grads):
        np.testing.assert_allclose(t.grad.numpy(), g, rtol=1e-4, atol=1e-6)
