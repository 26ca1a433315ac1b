"""CUDA convolution (im2col/col2im kernels + GEMM) and pooling kernels vs the NumPy reference."""
import numpy as np
import pytest
from kernel_checks import POOL_CASES, assert_raises_like_reference, conv_inputs
from simcheck import DTYPES, assert_close, assert_unchanged, directional_derivative, frozen

from tinygrad_seq.kernels.cuda import conv as cuda_conv
from tinygrad_seq.kernels.reference import conv as ref

# (x shape, w shape, stride, padding, dilation): odd sizes, strides that skip pixels,
# asymmetric stride/padding/dilation, a kernel as large as the padded input, 1-D (H = 1)
CONV_CASES = [
    ((2, 3, 5, 4), (2, 3, 3, 3), (1, 1), (1, 1), (1, 1)),
    ((1, 2, 7, 6), (3, 2, 3, 2), (2, 3), (1, 0), (1, 2)),
    ((2, 1, 6, 5), (2, 1, 2, 2), (1, 2), (0, 1), (2, 1)),
    ((1, 2, 3, 3), (1, 2, 5, 5), (1, 1), (1, 1), (1, 1)),
    ((2, 2, 1, 9), (3, 2, 1, 3), (1, 2), (0, 1), (1, 1)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_forward_backward(rng, dtype, case):
    x_shape, w_shape, stride, padding, dilation = case
    x, w, b = conv_inputs(rng, dtype, x_shape, w_shape)
    copies = frozen(x, w, b)
    y = cuda_conv.conv2d_forward(x, w, b, stride, padding, dilation)
    assert_close(y, ref.conv2d_forward(x, w, b, stride, padding, dilation), dtype)
    assert_close(cuda_conv.conv2d_forward(x, w, None, stride, padding, dilation),
                 ref.conv2d_forward(x, w, None, stride, padding, dilation), dtype)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, dw, db = cuda_conv.conv2d_backward(dy, x, w, stride, padding, dilation, True)
    rdx, rdw, rdb = ref.conv2d_backward(dy, x, w, stride, padding, dilation, True)
    assert_close(dx, rdx, dtype)
    assert_close(dw, rdw, dtype)
    assert_close(db, rdb, dtype)
    assert cuda_conv.conv2d_backward(dy, x, w, stride, padding, dilation, False)[2] is None
    assert_unchanged([x, w, b], copies)


def test_conv2d_backward_matches_finite_differences(rng):
    x = rng.standard_normal((1, 2, 5, 4))
    w = rng.standard_normal((2, 2, 3, 2))
    b = rng.standard_normal(2)
    args = ((2, 1), (1, 1), (1, 2))
    dy = rng.standard_normal(cuda_conv.conv2d_forward(x, w, b, *args).shape)
    grads = cuda_conv.conv2d_backward(dy, x, w, *args, True)

    def loss(x, w, b):
        return np.sum(dy * cuda_conv.conv2d_forward(x, w, b, *args))

    for index, grad in enumerate(grads):
        direction = rng.standard_normal(grad.shape)
        numeric = directional_derivative(loss, [x, w, b], index, direction)
        np.testing.assert_allclose(np.sum(grad * direction), numeric, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES)
def test_maxpool2d_forward_backward(rng, dtype, case):
    x_shape, kernel, stride, padding = case
    x = rng.standard_normal(x_shape).astype(dtype)
    y, argmax = cuda_conv.maxpool2d_forward(x, kernel, stride, padding)
    ry, rargmax = ref.maxpool2d_forward(x, kernel, stride, padding)
    assert_close(y, ry, dtype)
    assert argmax.dtype == np.int64
    np.testing.assert_array_equal(argmax, rargmax)
    dy = rng.standard_normal(y.shape).astype(dtype)
    assert_close(cuda_conv.maxpool2d_backward(dy, argmax, x.shape),
                 ref.maxpool2d_backward(dy, rargmax, x.shape), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_maxpool2d_ties_pick_the_first_maximum_and_shared_maxima_add_up(dtype):
    x = np.zeros((1, 1, 3, 4), dtype=dtype)          # every window is a tie
    x[0, 0, 1, 1] = 5                                 # the max of four overlapping windows
    y, argmax = cuda_conv.maxpool2d_forward(x, (2, 2), (1, 1), (0, 0))
    _, rargmax = ref.maxpool2d_forward(x, (2, 2), (1, 1), (0, 0))
    np.testing.assert_array_equal(argmax, rargmax)
    assert argmax[0, 0, 0, 2] == 2                    # window (0, 2): all zeros, first tap wins
    dx = cuda_conv.maxpool2d_backward(np.ones_like(y), argmax, x.shape)
    assert dx[0, 0, 1, 1] == 4                        # four windows share the maximum


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES)
def test_avgpool2d_forward_backward(rng, dtype, case):
    x_shape, kernel, stride, padding = case
    x = rng.standard_normal(x_shape).astype(dtype)
    y = cuda_conv.avgpool2d_forward(x, kernel, stride, padding)
    assert_close(y, ref.avgpool2d_forward(x, kernel, stride, padding), dtype)
    dy = rng.standard_normal(y.shape).astype(dtype)
    assert_close(cuda_conv.avgpool2d_backward(dy, x.shape, kernel, stride, padding),
                 ref.avgpool2d_backward(dy, x.shape, kernel, stride, padding), dtype)


def test_pool_backward_matches_finite_differences(rng):
    x = rng.standard_normal((1, 2, 5, 5))
    args = ((3, 2), (2, 1), (1, 1))
    dy = rng.standard_normal(cuda_conv.avgpool2d_forward(x, *args).shape)
    direction = rng.standard_normal(x.shape)
    numeric = directional_derivative(lambda x: np.sum(dy * cuda_conv.avgpool2d_forward(x, *args)),
                                     [x], 0, direction)
    dx = cuda_conv.avgpool2d_backward(dy, x.shape, *args)
    np.testing.assert_allclose(np.sum(dx * direction), numeric, rtol=1e-6)
    # max pooling is piecewise linear: away from ties the same check holds
    y, argmax = cuda_conv.maxpool2d_forward(x, *args)
    numeric = directional_derivative(lambda x: np.sum(dy * cuda_conv.maxpool2d_forward(x, *args)[0]),
                                     [x], 0, direction)
    dx = cuda_conv.maxpool2d_backward(dy, argmax, x.shape)
    np.testing.assert_allclose(np.sum(dx * direction), numeric, rtol=1e-6)


BAD_CALLS = [
    ("conv2d_forward", (np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 5, 5)), None, (1, 1), (0, 0), (1, 1))),
    ("conv2d_forward", (np.zeros((1, 2, 4, 4)), np.zeros((1, 3, 2, 2)), None, (1, 1), (0, 0), (1, 1))),
    ("conv2d_forward", (np.zeros((1, 1, 4, 4)), np.zeros((2, 1, 2, 2)), np.zeros(3), (1, 1), (0, 0), (1, 1))),
    ("conv2d_forward", (np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 2, 2)), None, (0, 1), (0, 0), (1, 1))),
    ("conv2d_backward", (np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 2, 2)),
                         (1, 1), (0, 0), (1, 1), True)),
    ("maxpool2d_forward", (np.zeros((1, 1, 4, 4)), (2, 2), (1, 1), (2, 2))),
    ("maxpool2d_backward", (np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 2, 3), dtype=np.int64), (1, 1, 4, 4))),
    ("avgpool2d_forward", (np.zeros((1, 1, 2, 2)), (3, 3), (1, 1), (0, 0))),
    ("avgpool2d_backward", (np.zeros((1, 1, 3, 3)), (1, 1, 4, 4), (2, 2), (2, 2), (0, 0))),
]


@pytest.mark.parametrize("name, args", BAD_CALLS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD_CALLS)])
def test_bad_arguments_raise_the_reference_message(name, args):
    assert_raises_like_reference(cuda_conv, ref, name, *args)
