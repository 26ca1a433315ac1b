"""CUDA layer norm (one block per row, tree reductions in shared memory; dweight/dbias one
thread per (column, chunk of rows), then a sum over the chunks) under the simulator, against
the NumPy reference."""
import numpy as np
import pytest
from kernel_checks import NORMALIZATION_BAD_CALLS, assert_raises_like_reference, check_layer_norm_special_values
from simcheck import DTYPES, assert_close, assert_unchanged, directional_derivative, frozen

from tinygrad_seq.kernels.cuda import normalization as cuda_normalization
from tinygrad_seq.kernels.cuda.normalization import AFFINE_CHUNK, MAX_ROW_BLOCKS, ROW_THREADS

assert AFFINE_CHUNK + 1 > MAX_ROW_BLOCKS
from tinygrad_seq.kernels.reference import normalization as ref

# (rows, n): one element; more rows than blocks (grid-stride over rows) and than one chunk of
# the dweight/dbias partial sums; fewer columns than the block's threads, not a multiple of the
# block, several strides of the block per row; no rows
SHAPES = [(1, 1), (AFFINE_CHUNK + 1, 7), (2, ROW_THREADS + 1), (2, 2 * ROW_THREADS + 5), (0, 4)]


def _check_against_the_reference(rng, dtype, shape, affine, need_affine):
    x = (2 * rng.standard_normal(shape) + 1).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    weight, bias = (rng.standard_normal(shape[1]).astype(dtype) if present else None for present in affine)
    copies = frozen(x, dy, weight, bias)
    got = cuda_normalization.layer_norm_forward(x, weight, bias, 1e-5)
    expected = ref.layer_norm_forward(x, weight, bias, 1e-5)
    for a, b in zip(got, expected):
        assert_close(a, b, dtype)
    grads = cuda_normalization.layer_norm_backward(dy, x, weight, *expected[1:], need_affine)
    for a, b in zip(grads, ref.layer_norm_backward(dy, x, weight, *expected[1:], need_affine)):
        if b is None:
            assert a is None
        else:
            assert_close(a, b, dtype)
    assert_unchanged([x, dy, weight, bias], copies)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_backward_equal_the_reference(rng, dtype, shape):
    _check_against_the_reference(rng, dtype, shape, (True, True), True)


@pytest.mark.parametrize("affine, need_affine", [((False, False), False), ((False, True), True), ((True, False), False)])
def test_weight_and_bias_each_optional(rng, affine, need_affine):
    _check_against_the_reference(rng, np.float32, (2, ROW_THREADS + 1), affine, need_affine)


def test_nan_and_inf_spread_as_in_the_reference():
    # float64 only: the simulator is slow, and float32 takes the same code (the CPU tests run both)
    check_layer_norm_special_values(cuda_normalization, ref, np.float64)


def test_backward_matches_finite_differences(rng):
    x, dy = rng.standard_normal((2, 5)), rng.standard_normal((2, 5))
    weight, bias = rng.standard_normal(5), rng.standard_normal(5)
    _, mean, rstd = cuda_normalization.layer_norm_forward(x, weight, bias, 1e-5)
    grads = cuda_normalization.layer_norm_backward(dy, x, weight, mean, rstd, True)
    for index, grad in enumerate(grads[:2]):      # dbias = sum(dy) is the reference's exactly (above)
        direction = rng.standard_normal(grad.shape)
        numeric = directional_derivative(
            lambda *xwb: np.sum(dy * cuda_normalization.layer_norm_forward(*xwb, 1e-5)[0]), [x, weight, bias],
            index, direction)
        np.testing.assert_allclose(np.sum(grad * direction), numeric, rtol=1e-6)


def test_bad_arguments_raise_the_reference_message():
    for function, args in NORMALIZATION_BAD_CALLS:
        assert_raises_like_reference(cuda_normalization, ref, function, *args)
