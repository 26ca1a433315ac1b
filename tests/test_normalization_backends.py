"""The normalization kernel family (LayerNorm) on every CPU backend against the NumPy reference
(float32 and float64, rows 1, rows below and above the cython team's threshold, n off the SIMD
widths, weight and bias each present or None, dweight/dbias asked for or not), NaN and inf,
the reference's error messages, the cython team's determinism, and ops.LayerNorm in the engine:
gradcheck, PyTorch's F.layer_norm forward and backward, dtypes, and the kernels actually called.

(The cuda backend runs under the simulator in tests/cudasim/test_sim_normalization.py.)
"""
import functools
import importlib

import numpy as np
import pytest
from kernel_checks import (NORMALIZATION_BAD_CALLS, assert_matches, assert_raises_like_reference, backend_kernels,
                           check_layer_norm_special_values)

import tinygrad_seq as tgs
from tinygrad_seq import Tensor, gradcheck, nn
from tinygrad_seq.backend import BACKENDS, observe_kernels, unavailable_reason
from tinygrad_seq.kernels.reference import normalization as ref
from tinygrad_seq.nn import functional as F

COMPILED_CPU = [name for name, (_, devices) in BACKENDS.items() if "cpu" in devices and name != "numpy"]
DTYPES = [np.float32, np.float64]
# (rows, n): one element; one row; n a multiple of 16 and not; no rows; the transformer's n = 128
# below the cython team's threshold (2**15 elements) and two shapes above it
SHAPES = [(1, 1), (1, 37), (5, 16), (7, 33), (0, 5), (3, 128), (257, 128), (300, 130)]
AFFINE = [(True, True), (False, False), (True, False), (False, True)]

normalization_kernels = functools.partial(backend_kernels, family="normalization")   # (backend name) -> module


def _inputs(rng, dtype, rows, n, has_weight, has_bias):
    x = (1.5 * rng.standard_normal((rows, n)) + rng.standard_normal((rows, 1))).astype(dtype)
    dy = rng.standard_normal((rows, n)).astype(dtype)
    weight = rng.standard_normal(n).astype(dtype) if has_weight else None
    bias = rng.standard_normal(n).astype(dtype) if has_bias else None
    return x, dy, weight, bias


@pytest.mark.parametrize("name", COMPILED_CPU)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("affine", AFFINE)
def test_forward_and_backward_equal_the_reference(name, dtype, shape, affine):
    kernels = normalization_kernels(name)
    x, dy, weight, bias = _inputs(np.random.default_rng(sum(shape)), dtype, *shape, *affine)
    inputs = [None if a is None else a.copy() for a in (x, dy, weight, bias)]
    got = kernels.layer_norm_forward(x, weight, bias, 1e-5)
    expected = ref.layer_norm_forward(x, weight, bias, 1e-5)
    assert_matches(tuple(got), tuple(expected), dtype, f"{name} forward")
    for need_affine in (True, False):
        grads = kernels.layer_norm_backward(dy, x, weight, *expected[1:], need_affine)
        assert_matches(tuple(grads), ref.layer_norm_backward(dy, x, weight, *expected[1:], need_affine), dtype,
                       f"{name} backward need_affine={need_affine}")
    for before, after in zip(inputs, (x, dy, weight, bias)):
        if before is not None:
            np.testing.assert_array_equal(before, after)          # inputs are never modified


@pytest.mark.parametrize("name", ["numpy"] + COMPILED_CPU)
def test_a_large_mean_does_not_cancel_the_variance(name):
    """Two passes (mean, then sum (x - mean)^2), not E[x^2] - mean^2: rows around 1e4 with
    spread 1 keep their variance in float32."""
    kernels = normalization_kernels(name)
    rng = np.random.default_rng(3)
    x = (1e4 + rng.standard_normal((4, 64))).astype(np.float32)
    y, mean, rstd = kernels.layer_norm_forward(x, None, None, 1e-5)
    exact = x.astype(np.float64)
    np.testing.assert_allclose(rstd, 1 / np.sqrt(exact.var(axis=1) + 1e-5), rtol=1e-3)
    np.testing.assert_allclose(y.std(axis=1), 1, rtol=1e-3)


@pytest.mark.parametrize("name", COMPILED_CPU)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_inf_spread_as_in_the_reference(name, dtype):
    check_layer_norm_special_values(normalization_kernels(name), ref, dtype)


def test_the_reference_itself_follows_the_nan_rules():
    for dtype in DTYPES:
        check_layer_norm_special_values(ref, ref, dtype)


@pytest.mark.parametrize("name", COMPILED_CPU)
def test_bad_arguments_raise_the_reference_message(name):
    kernels = normalization_kernels(name)
    for function, args in NORMALIZATION_BAD_CALLS:
        assert_raises_like_reference(kernels, ref, function, *args)


def test_the_cython_team_is_deterministic_and_shares_rows_as_one_thread_would():
    """Per row the numbers do not depend on the team's size (each row is one thread's); dweight
    and dbias are the same every call for one team size and within rounding across sizes."""
    kernels = normalization_kernels("cython")
    compiled = importlib.import_module("tinygrad_seq.kernels.cython._normalization")
    x, dy, weight, bias = _inputs(np.random.default_rng(2), np.float32, 300, 130, True, True)
    threads = compiled.get_num_threads()
    results = {}
    try:
        for n in (1, 2, 3, 2):
            compiled.set_num_threads(n)
            y, mean, rstd = kernels.layer_norm_forward(x, weight, bias, 1e-5)
            result = (y, mean, rstd) + tuple(kernels.layer_norm_backward(dy, x, weight, mean, rstd, True))
            if n in results:
                for a, b in zip(results[n], result):
                    np.testing.assert_array_equal(a, b)
            results[n] = result
    finally:
        compiled.set_num_threads(threads)
    for other in (results[2], results[3]):
        for k, (a, b) in enumerate(zip(results[1], other)):
            if k < 4:
                np.testing.assert_array_equal(a, b)
            else:
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


# ------------------------------------------------------------------------- the op in the engine

@pytest.mark.parametrize("normalized_shape, affine", [((3, 4), True), (4, False), (4, True)])
def test_gradcheck_on_the_cython_backend(normalized_shape, affine):
    normalization_kernels("cython")
    rng = np.random.default_rng(4)
    shape = (2, 3, 4)
    inputs = [rng.standard_normal(shape)]
    if affine:
        param_shape = normalized_shape if isinstance(normalized_shape, tuple) else (normalized_shape,)
        inputs += [rng.standard_normal(param_shape), rng.standard_normal(param_shape)]
    with tgs.backend("cython"):
        assert gradcheck(lambda x, *wb: F.layer_norm(x, normalized_shape, *wb), inputs)


@pytest.mark.parametrize("name", ["numpy"] + COMPILED_CPU)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("normalized_shape, affine", [((10,), (True, True)), ((6, 10), (True, True)),
                                                      ((10,), (False, False)), ((10,), (True, False)),
                                                      ((10,), (False, True))])
def test_layer_norm_matches_pytorch_on_each_backend(name, dtype, normalized_shape, affine):
    torch = pytest.importorskip("torch")
    if unavailable_reason(name):
        pytest.skip(f"backend {name} unavailable: {unavailable_reason(name)}")
    rng = np.random.default_rng(5)
    x = (2 * rng.standard_normal((4, 6, 10)) + 1).astype(dtype)
    weights = rng.standard_normal(x.shape).astype(dtype)
    params = [rng.standard_normal(normalized_shape).astype(dtype) if present else None for present in affine]
    ours = [Tensor(a, dtype=dtype, requires_grad=True) if a is not None else None for a in [x] + params]
    theirs = [torch.tensor(a, requires_grad=True) if a is not None else None for a in [x] + params]
    with tgs.backend(name):
        y = F.layer_norm(ours[0], normalized_shape, ours[1], ours[2], 1e-5)
        (y * Tensor(weights, dtype=dtype)).sum().backward()
    ty = torch.nn.functional.layer_norm(theirs[0], normalized_shape, theirs[1], theirs[2], 1e-5)
    (ty * torch.from_numpy(weights)).sum().backward()
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    assert y.dtype == np.dtype(dtype)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), **tol)
    for a, b in zip(ours, theirs):
        if a is not None:
            assert a.grad.dtype == np.dtype(dtype)
            np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), **tol)


def test_the_module_calls_the_family_forward_and_backward():
    normalization_kernels("cython")
    layer = nn.LayerNorm(12)
    x = Tensor(np.random.default_rng(6).standard_normal((3, 5, 12)), requires_grad=True)
    calls = []
    with tgs.backend("cython"), observe_kernels(lambda family, function, args, seconds: calls.append((family, function))):
        layer(x).sum().backward()
    assert [c for c in calls if c[0] == "normalization"] == [("normalization", "layer_norm_forward"),
                                                             ("normalization", "layer_norm_backward")]
    assert layer.weight.grad.shape == (12,) and layer.bias.grad.shape == (12,)


@pytest.mark.parametrize("name", ["numpy"] + COMPILED_CPU)
def test_dtypes_follow_the_arithmetic_of_x_weight_and_bias(name):
    """float16 x is normalised in float32 and returned as float16 (without parameters) or the
    parameters' float32; float32 x with float64 parameters gives float64; gradients take their
    input's dtype."""
    if unavailable_reason(name):
        pytest.skip(f"backend {name} unavailable: {unavailable_reason(name)}")
    rng = np.random.default_rng(8)
    x16 = rng.standard_normal((3, 8)).astype(np.float16)
    expected = ref.layer_norm_forward(x16.astype(np.float32), None, None, 1e-5)[0]
    with tgs.backend(name):
        half = Tensor(x16, dtype=np.float16, requires_grad=True)
        y = F.layer_norm(half, 8)
        y.sum().backward()
        assert y.dtype == np.float16 and half.grad.dtype == np.float16
        np.testing.assert_allclose(y.numpy(), expected, rtol=2e-3, atol=2e-3)
        w = Tensor(np.ones(8), dtype=np.float32, requires_grad=True)
        assert F.layer_norm(Tensor(x16, dtype=np.float16), 8, w).dtype == np.float32
        w64 = Tensor(np.ones(8), dtype=np.float64, requires_grad=True)
        x32 = Tensor(x16.astype(np.float32), requires_grad=True)
        y = F.layer_norm(x32, 8, w64)
        y.sum().backward()
        assert y.dtype == np.float64 and x32.grad.dtype == np.float32 and w64.grad.dtype == np.float64
