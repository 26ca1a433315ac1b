"""Log-softmax in the `softmax` kernel family on every CPU backend: the NumPy reference's
numbers (forward and backward, float32 and float64, rows below and above the Cython team's
threshold), its IEEE rules (which are PyTorch's), its error messages; and the engine's
F.log_softmax and F.cross_entropy, which run through it, against finite differences and
PyTorch on each backend.

(NaN/inf through every CPU backend: test_kernel_properties.py; the CUDA kernels: tests/cudasim
and tests/test_cuda_gpu.py.)
"""
import functools

import numpy as np
import pytest
from kernel_checks import LOG_SOFTMAX_BAD_CALLS, assert_raises_like_reference, backend_kernels

import tinygrad_seq as tgs
from tinygrad_seq import gradcheck
from tinygrad_seq.backend import BACKENDS, unavailable_reason
from tinygrad_seq.kernels.reference import softmax as ref
from tinygrad_seq.nn import functional as F

COMPILED_CPU = [name for name, (_, devices) in BACKENDS.items() if "cpu" in devices and name != "numpy"]
DTYPES = [np.float32, np.float64]
# (2048, 65): the lstm_lm workload's logits; (500, 65) and (520, 65) fall either side of the
# Cython team's threshold (2**15 elements); (5, 1000) is a row longer than any SIMD unrolling
SHAPES = [(1, 1), (3, 65), (500, 65), (520, 65), (2048, 65), (5, 1000)]

softmax_kernels = functools.partial(backend_kernels, family="softmax")


def relative_error(got, exact):
    """max |got - exact| relative to the output's magnitude (1 + max |exact|)."""
    return np.max(np.abs(got.astype(np.float64) - exact)) / (1 + np.max(np.abs(exact)))


@pytest.mark.parametrize("name", COMPILED_CPU)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_backward_agree_with_the_float64_reference(name, dtype, shape):
    """Both dtypes against the reference computed in float64 from the same inputs: float32
    within ~1e-6 of the output's magnitude (a few float32 ulp), float64 within 1e-13."""
    kernels = softmax_kernels(name)
    rng = np.random.default_rng(sum(shape))
    x = (4 * rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    copies = x.copy(), dy.copy()
    y = kernels.log_softmax_forward(x)
    dx = kernels.log_softmax_backward(dy, y)
    exact_y = ref.log_softmax_forward(x.astype(np.float64))
    exact_dx = ref.log_softmax_backward(dy.astype(np.float64), y.astype(np.float64))
    tol = 2e-6 if dtype == np.float32 else 1e-13
    assert y.dtype == dx.dtype == np.dtype(dtype) and y.shape == dx.shape == shape
    assert relative_error(y, exact_y) < tol
    assert relative_error(dx, exact_dx) < tol
    np.testing.assert_array_equal(x, copies[0])          # inputs are never modified
    np.testing.assert_array_equal(dy, copies[1])
    # and against the reference run in the same dtype, as the other families are checked
    same = dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(y, ref.log_softmax_forward(x), **same)
    np.testing.assert_allclose(dx, ref.log_softmax_backward(dy, y), **same)


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_reference_has_pytorchs_special_values(dtype):
    """The rules every backend copies from the reference are PyTorch's: NaN or +inf in a row, or
    only -inf, make the row NaN; -inf beside a finite max is -inf; a single finite logit is 0."""
    torch = pytest.importorskip("torch")
    inf, nan = np.inf, np.nan
    rows = [[1.0, nan, 2.0], [1.0, inf, 2.0], [-inf, 3.0, 1.0], [-inf, -inf, -inf], [inf, -inf, inf],
            [1000.0, -1000.0, 0.0]]
    with np.errstate(all="ignore"):
        for row in rows:
            x = np.array([row], dtype=dtype)
            np.testing.assert_array_equal(ref.log_softmax_forward(x),
                                          torch.log_softmax(torch.from_numpy(x), dim=-1).numpy())
        for single in (5.0, inf, -inf, nan):
            x = np.array([[single]], dtype=dtype)
            np.testing.assert_array_equal(ref.log_softmax_forward(x),
                                          torch.log_softmax(torch.from_numpy(x), dim=-1).numpy())


@pytest.mark.parametrize("name", COMPILED_CPU)
@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_of_one_entry_and_of_only_minus_inf(name, dtype):
    """n = 1: a finite logit gives exactly 0 and a gradient of exactly dy - sum(dy) = 0; +-inf
    or NaN alone give NaN; a row of only -inf is NaN at any length, as in the reference."""
    kernels = softmax_kernels(name)
    x = np.array([[2.5], [-3e4], [np.inf], [-np.inf], [np.nan]], dtype=dtype)
    y = kernels.log_softmax_forward(x)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(y, ref.log_softmax_forward(x))
    assert np.all(y[:2] == 0) and np.all(np.isnan(y[2:]))
    dx = kernels.log_softmax_backward(np.full_like(x, 0.75), y)
    assert np.all(dx[:2] == 0) and np.all(np.isnan(dx[2:]))
    all_minus_inf = np.full((3, 70), -np.inf, dtype=dtype)
    all_minus_inf[1] = 0.0
    y = kernels.log_softmax_forward(all_minus_inf)
    assert np.all(np.isnan(y[[0, 2]]))
    np.testing.assert_allclose(y[1], -np.log(70.0), rtol=1e-6)


@pytest.mark.parametrize("name", COMPILED_CPU)
def test_non_contiguous_inputs(name):
    """The wrappers make their inputs contiguous (a transposed view, every other column)."""
    kernels = softmax_kernels(name)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 4)).T
    dy = rng.standard_normal((4, 12))[:, ::2]
    y = kernels.log_softmax_forward(x)
    np.testing.assert_allclose(y, ref.log_softmax_forward(np.ascontiguousarray(x)), rtol=1e-12)
    np.testing.assert_allclose(kernels.log_softmax_backward(dy, y.T.copy().T),
                               ref.log_softmax_backward(np.ascontiguousarray(dy), y), rtol=1e-12)


@pytest.mark.parametrize("name", COMPILED_CPU)
def test_bad_arguments_raise_the_reference_message(name):
    kernels = softmax_kernels(name)
    for function, args in LOG_SOFTMAX_BAD_CALLS:
        assert_raises_like_reference(kernels, ref, function, *args)


def _on_backend(name):
    if unavailable_reason(name):
        pytest.skip(f"backend {name} unavailable: {unavailable_reason(name)}")
    return tgs.backend(name)


@pytest.mark.parametrize("name", ["numpy"] + COMPILED_CPU)
def test_the_op_runs_in_the_backends_kernels(name, monkeypatch):
    """ops.LogSoftmax calls the chosen backend's log_softmax_forward and _backward (one row per
    position: a (2, 3, 5) input is 6 rows of 5)."""
    module = softmax_kernels(name)
    calls = []
    for function in ("log_softmax_forward", "log_softmax_backward"):
        real = getattr(module, function)
        monkeypatch.setattr(module, function, lambda *args, real=real, function=function:
                            calls.append((function, args[0].shape)) or real(*args))
    x = tgs.Tensor(np.random.default_rng(0).standard_normal((2, 3, 5)), requires_grad=True)
    with tgs.backend(name):
        F.log_softmax(x, dim=-1).sum().backward()
    assert calls == [("log_softmax_forward", (6, 5)), ("log_softmax_backward", (6, 5))]


@pytest.mark.parametrize("name", ["numpy"] + COMPILED_CPU)
def test_log_softmax_and_cross_entropy_pass_gradcheck(name):
    """float64 finite differences through the engine: log_softmax along a middle dim (moved last
    and back), and cross_entropy with class weights, an ignored target and (N, C, d) logits."""
    rng = np.random.default_rng(2)
    with _on_backend(name):
        assert gradcheck(lambda x: F.log_softmax(x, dim=1), [rng.standard_normal((2, 4, 3))])
        target = np.array([0, 3, -100, 2, 1])
        weight = tgs.Tensor(np.array([0.5, 2.0, 1.0, 1.5]), dtype=np.float64)
        assert gradcheck(lambda x: F.cross_entropy(x, tgs.Tensor(target), weight=weight),
                         [rng.standard_normal((5, 4))])
        spatial_target = tgs.Tensor(rng.integers(0, 4, size=(2, 3)))
        assert gradcheck(lambda x: F.cross_entropy(x, spatial_target), [rng.standard_normal((2, 4, 3))])


@pytest.mark.parametrize("name", ["numpy"] + COMPILED_CPU)
@pytest.mark.parametrize("dtype", DTYPES)
def test_log_softmax_and_cross_entropy_match_pytorch(name, dtype):
    """Values and input gradients of F.log_softmax (dim 1 of a 3-D input) and of F.cross_entropy
    on (64, 65) logits (the char-LM's vocabulary), against torch.nn.functional."""
    torch = pytest.importorskip("torch")
    TF = torch.nn.functional
    rng = np.random.default_rng(9)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-13)
    x = (3 * rng.standard_normal((2, 7, 4))).astype(dtype)
    w = rng.standard_normal(x.shape).astype(dtype)
    logits = (3 * rng.standard_normal((64, 65))).astype(dtype)
    target = rng.integers(0, 65, size=64)
    ours_x = tgs.Tensor(x, dtype=dtype, requires_grad=True)
    ours_logits = tgs.Tensor(logits, dtype=dtype, requires_grad=True)
    with _on_backend(name):
        y = F.log_softmax(ours_x, dim=1)
        (y * tgs.Tensor(w, dtype=dtype)).sum().backward()
        loss = F.cross_entropy(ours_logits, tgs.Tensor(target))
        loss.backward()
    theirs_x, theirs_logits = torch.tensor(x, requires_grad=True), torch.tensor(logits, requires_grad=True)
    ty = TF.log_softmax(theirs_x, dim=1)
    (ty * torch.from_numpy(w)).sum().backward()
    tloss = TF.cross_entropy(theirs_logits, torch.from_numpy(target))
    tloss.backward()
    assert y.dtype == loss.dtype == np.dtype(dtype)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), **tol)
    np.testing.assert_allclose(ours_x.grad.numpy(), theirs_x.grad.numpy(), **tol)
    np.testing.assert_allclose(loss.numpy(), tloss.detach().numpy(), **tol)
    np.testing.assert_allclose(ours_logits.grad.numpy(), theirs_logits.grad.numpy(), **tol)
