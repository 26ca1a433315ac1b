"""The activation kernel family (the exact GELU and ReLU) on every CPU backend: the NumPy
reference's numbers forward and backward in float32 and float64, odd and empty shapes, strided
inputs, the reference's error messages, and the layers (nn.GELU, nn.ReLU) under each backend
against PyTorch and by finite differences.

(The cuda backend of this family is the reference itself on CuPy arrays, checked on a real
GPU by tests/test_cuda_gpu.py's transformer test.)
"""
import functools

import numpy as np
import pytest
from kernel_checks import assert_raises_like_reference, assert_same_dtype_and_close, backend_kernels

import tinygrad_seq as tgs
from tinygrad_seq import nn
from tinygrad_seq.backend import BACKENDS
from tinygrad_seq.kernels.reference import activation as ref

CPU_BACKENDS = [name for name, (_, devices) in BACKENDS.items() if "cpu" in devices]
DTYPES = [np.float32, np.float64]
TOLERANCE = {np.dtype(np.float32): dict(rtol=1e-5, atol=1e-6),
             np.dtype(np.float64): dict(rtol=1e-12, atol=1e-14)}


activation_kernels = functools.partial(backend_kernels, family="activation")   # (backend name) -> module
assert_same = functools.partial(assert_same_dtype_and_close, tolerance=TOLERANCE)   # (got, expected, dtype)


@pytest.mark.parametrize("name", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (1,), (7,), (3, 5, 33), (2, 0, 4)])
def test_gelu_equals_the_reference(name, dtype, shape):
    kernels = activation_kernels(name)
    rng = np.random.default_rng(len(shape) * 10 + sum(shape))
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    x.reshape(-1)[:3] = [0.0, 9.0, -9.0][: x.size]   # zero and the saturated ends
    dy = rng.standard_normal(shape).astype(dtype)
    x_before = x.copy()
    y, cdf = kernels.gelu_forward(x)
    y_ref, cdf_ref = ref.gelu_forward(x)
    assert_same(y, y_ref, dtype)
    assert_same(cdf, cdf_ref, dtype)
    assert_same(kernels.gelu_backward(dy, x, cdf), ref.gelu_backward(dy, x, cdf_ref), dtype)
    np.testing.assert_array_equal(x, x_before)       # inputs are never modified


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_strided_inputs(name):
    kernels = activation_kernels(name)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 8)).T[::2]
    dy = rng.standard_normal((6, 12))[:, ::3].T
    y, cdf = kernels.gelu_forward(x)
    assert_same(y, ref.gelu_forward(np.ascontiguousarray(x))[0], np.float64)
    assert_same(kernels.gelu_backward(dy, x, cdf), ref.gelu_backward(dy, x, cdf), np.float64)


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_bad_arguments_raise_the_reference_message(name):
    kernels = activation_kernels(name)
    calls = [("gelu_forward", (np.zeros(3, dtype=np.int64),)),
             ("gelu_backward", (np.zeros(3), np.zeros(4), np.zeros(3))),
             ("gelu_backward", (np.zeros(3), np.zeros(3, dtype=np.float32), np.zeros(3)))]
    for function, args in calls:
        assert_raises_like_reference(kernels, ref, function, *args)


@pytest.mark.parametrize("name", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer, spread", [("GELU", 2.0), ("ReLU", 1.0)])
def test_activation_layer_matches_pytorch_on_each_backend(name, dtype, layer, spread):
    torch = pytest.importorskip("torch")
    activation_kernels(name)
    rng = np.random.default_rng(4)
    x = (spread * rng.standard_normal((4, 3, 17))).astype(dtype)
    weights = rng.standard_normal(x.shape).astype(dtype)
    ours = tgs.Tensor(x, dtype=dtype, requires_grad=True)
    with tgs.backend(name):
        y = getattr(nn, layer)()(ours)
        (y * tgs.Tensor(weights, dtype=dtype)).sum().backward()
    theirs = torch.tensor(x, requires_grad=True)
    ty = getattr(torch.nn, layer)()(theirs)
    (ty * torch.from_numpy(weights)).sum().backward()
    assert y.dtype == np.dtype(dtype)
    assert_same(y.numpy(), ty.detach().numpy(), dtype)
    assert_same(ours.grad.numpy(), theirs.grad.numpy(), dtype)


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_gelu_gradcheck_on_each_backend(name):
    activation_kernels(name)
    x = tgs.Tensor(np.random.default_rng(6).standard_normal((3, 4)) * 2, dtype=np.float64, requires_grad=True)
    with tgs.backend(name):
        assert tgs.gradcheck(lambda t: nn.functional.gelu(t), (x,))


@pytest.mark.parametrize("name", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (5,), (3, 5, 33), (64, 16, 28, 28)])
def test_relu_equals_the_reference(name, dtype, shape):
    """Exactly the reference's numbers (a max and a product: no rounding to differ in), on
    arrays small enough to run on the calling thread and large enough for the whole team."""
    kernels = activation_kernels(name)
    rng = np.random.default_rng(len(shape))
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    x_before = x.copy()
    y = kernels.relu_forward(x)
    np.testing.assert_array_equal(y, ref.relu_forward(x))
    assert y.dtype == np.dtype(dtype) and y.shape == x.shape
    dx = kernels.relu_backward(dy, y)
    np.testing.assert_array_equal(dx, ref.relu_backward(dy, y))
    assert dx.dtype == np.dtype(dtype) and dx.shape == x.shape
    np.testing.assert_array_equal(x, x_before)


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_relu_of_other_dtypes_and_strided_inputs(name):
    """Integer and float16 arrays take the reference's path; a strided view is read correctly."""
    kernels = activation_kernels(name)
    ints = np.array([-2, 0, 3])
    np.testing.assert_array_equal(kernels.relu_forward(ints), [0, 0, 3])
    half = np.array([-1.5, 2.5], dtype=np.float16)
    assert kernels.relu_forward(half).dtype == np.float16
    x = np.random.default_rng(1).standard_normal((6, 8)).T[::2]
    np.testing.assert_array_equal(kernels.relu_forward(x), np.maximum(x, 0))
    dy = np.ones((6, 12))[:, ::3].T
    np.testing.assert_array_equal(kernels.relu_backward(dy, np.maximum(x, 0)), (x > 0).astype(float))
    with pytest.raises(ValueError, match="relu_backward: dy of shape"):
        kernels.relu_backward(np.zeros(3), np.zeros(4))


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_relu_gradcheck_on_each_backend(name):
    activation_kernels(name)
    x = np.random.default_rng(7).standard_normal((3, 4))
    x[np.abs(x) < 0.1] = 0.5          # away from the kink, where finite differences straddle it
    x = tgs.Tensor(x, dtype=np.float64, requires_grad=True)
    with tgs.backend(name):
        assert tgs.gradcheck(lambda t: nn.functional.relu(t), (x,))
