"""The masked-softmax kernel family on every CPU backend: the same numbers as the NumPy
reference, forward and backward, float32 and float64, with and without a mask (including
fully masked rows and -inf logits), the reference's error messages, and the layer-level
F.softmax under each backend against PyTorch.

(The CUDA kernels of this family are checked under the simulator in tests/cudasim and on a
real GPU in tests/test_cuda_gpu.py.)
"""
import functools

import numpy as np
import pytest
from kernel_checks import (SOFTMAX_BAD_CALLS, assert_raises_like_reference, assert_same_dtype_and_close,
                           backend_kernels)

import tinygrad_seq as tgs
from tinygrad_seq.backend import BACKENDS, unavailable_reason
from tinygrad_seq.kernels.reference import softmax as ref
from tinygrad_seq.nn import functional as F

COMPILED_CPU = [name for name, (_, devices) in BACKENDS.items() if "cpu" in devices and name != "numpy"]
DTYPES = [np.float32, np.float64]
TOLERANCE = {np.dtype(np.float32): dict(rtol=2e-5, atol=1e-6),
             np.dtype(np.float64): dict(rtol=1e-12, atol=1e-14)}


softmax_kernels = functools.partial(backend_kernels, family="softmax")   # (backend name) -> module
assert_same = functools.partial(assert_same_dtype_and_close, tolerance=TOLERANCE)   # (got, expected, dtype)


def logits_and_masks(rng, dtype, rows, length):
    """Logits with a wide range and a few -inf, and masks: none, random, one row all masked."""
    x = (4 * rng.standard_normal((rows, length))).astype(dtype)
    x[1, 0] = -np.inf                    # (with L = 1 that row is all -inf: see the test below)
    mask = rng.random((rows, length)) < 0.4
    mask[1, 1] = False                   # row 1 keeps a finite logit beside its -inf
    mask[2] = True                       # a fully masked row: all zeros, not NaN
    causal = np.triu(np.ones((length, length), dtype=bool), 1)[:rows] if rows <= length else None
    return x, [None, mask] + ([causal] if causal is not None else [])


@pytest.mark.parametrize("name", COMPILED_CPU)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 2), (5, 7), (9, 130)])
def test_forward_and_backward_equal_the_reference(name, dtype, shape):
    kernels = softmax_kernels(name)
    rng = np.random.default_rng(3)
    x, masks = logits_and_masks(rng, dtype, *shape)
    dy = rng.standard_normal(shape).astype(dtype)
    for mask in masks:
        x_before = x.copy()
        y = kernels.softmax_forward(x, mask)
        expected = ref.softmax_forward(x, mask)
        assert_same(y, expected, dtype)
        np.testing.assert_array_equal(x, x_before)          # inputs are never modified
        assert np.all(np.isfinite(y))
        if mask is not None:
            assert np.all(y[mask] == 0)
        assert_same(kernels.softmax_backward(dy, y), ref.softmax_backward(dy, expected), dtype)


@pytest.mark.parametrize("name", COMPILED_CPU)
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_row_of_minus_inf_logits_gives_zeros_like_the_reference(name, dtype):
    """No entry can take the probability mass, as in a fully masked row: all zeros, no NaN."""
    kernels = softmax_kernels(name)
    x = np.array([[-np.inf, -np.inf, -np.inf], [0.0, -np.inf, 1.0]], dtype=dtype)
    only_minus_inf_left = np.array([[False, False, False], [True, False, True]])
    for mask in (None, only_minus_inf_left):
        y = kernels.softmax_forward(x, mask)
        assert_same(y, ref.softmax_forward(x, mask), dtype)
        assert np.all(y[np.isneginf(x)] == 0) and np.all(y[0] == 0)  # exactly zero, not a tiny number


@pytest.mark.parametrize("name", COMPILED_CPU)
def test_non_contiguous_inputs(name):
    """The wrappers make their inputs contiguous (a transposed view, a strided mask)."""
    kernels = softmax_kernels(name)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 4)).T
    mask = (rng.random((4, 12)) < 0.3)[:, ::2]
    assert_same(kernels.softmax_forward(x, mask), ref.softmax_forward(np.ascontiguousarray(x), mask), np.float64)


@pytest.mark.parametrize("name", COMPILED_CPU)
def test_bad_arguments_raise_the_reference_message(name):
    kernels = softmax_kernels(name)
    for function, args in SOFTMAX_BAD_CALLS:
        assert_raises_like_reference(kernels, ref, function, *args)


@pytest.mark.parametrize("name", ["numpy"] + COMPILED_CPU)
@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_softmax_layer_matches_pytorch_on_each_backend(name, dtype):
    """F.softmax with an attention-style mask, forward and backward, through the registry."""
    torch = pytest.importorskip("torch")
    if unavailable_reason(name):
        pytest.skip(f"backend {name} unavailable: {unavailable_reason(name)}")
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 3, 5, 5)).astype(dtype)
    mask = np.triu(np.ones((5, 5), dtype=bool), 1)          # causal, broadcast over (2, 3)
    weights = rng.standard_normal(x.shape).astype(dtype)
    ours = tgs.Tensor(x, dtype=dtype, requires_grad=True)
    with tgs.backend(name):
        y = F.softmax(ours, dim=-1, mask=mask)
        (y * tgs.Tensor(weights, dtype=dtype)).sum().backward()
    theirs = torch.tensor(x, requires_grad=True)
    ty = torch.softmax(theirs.masked_fill(torch.from_numpy(mask), float("-inf")), dim=-1)
    (ty * torch.from_numpy(weights)).sum().backward()
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    assert y.dtype == np.dtype(dtype)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), **tol)
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), **tol)
