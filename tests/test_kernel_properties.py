"""Every kernel family on every compiled CPU backend (numba, cython) against the NumPy
reference (the `numpy` backend itself), over random *valid* arguments, and NaN/inf through
every family on every CPU backend.

Property-based (hypothesis): shapes, strides, paddings and dilations drawn from the whole valid
range, with the edges among them: padding wider than half the kernel (the Cython conv used to
segfault there), a kernel as large as the padded input, batch 1, T = 1, hidden size 1, fully
masked softmax rows, log-softmax rows of one entry; float32 and float64; forward and backward.
The values are drawn from a seed, not element by element, which keeps each example cheap.

Profiles (HYPOTHESIS_PROFILE): `ci` (the default) is derandomized with a fixed, modest example
budget, so every run checks the same examples and the whole file stays fast; `long`
(`HYPOTHESIS_PROFILE=long pytest tests/test_kernel_properties.py`) draws fresh, many more
examples on demand.

The regression cases of issue 15 (conv shapes that crashed the Cython backend) are explicit
examples as well as plain tests.
"""
import importlib
import os

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="the property-based tests need hypothesis "
                                 "(in the test extra)")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from kernel_checks import (RECURRENCE_KINDS, assert_matches, check_layer_norm_special_values,  # noqa: E402
                           check_log_softmax_special_values, check_softmax_special_values, lstm_xh_case,
                           recurrence_args)

from tinygrad_seq.backend import BACKENDS, unavailable_reason  # noqa: E402
from tinygrad_seq.kernels import reference  # noqa: E402
from tinygrad_seq.kernels.reference import activation as ref_activation  # noqa: E402,F401
from tinygrad_seq.kernels.reference import conv as ref_conv  # noqa: E402,F401
from tinygrad_seq.kernels.reference import normalization as ref_normalization  # noqa: E402
from tinygrad_seq.kernels.reference import recurrence as ref_recurrence  # noqa: E402,F401
from tinygrad_seq.kernels.reference import softmax as ref_softmax  # noqa: E402,F401

settings.register_profile("ci", derandomize=True, max_examples=60, deadline=None, database=None,
                          print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=400, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

COMPILED_CPU = [name for name, (_, devices) in BACKENDS.items() if "cpu" in devices and name != "numpy"]
CPU = ["numpy"] + COMPILED_CPU


def family(name, fam):
    reason = unavailable_reason(name)
    if reason:
        pytest.skip(f"backend {name} unavailable: {reason}")
    return importlib.import_module(f"{BACKENDS[name][0]}.{fam}")


def ref(fam):
    return importlib.import_module(f"{reference.__name__}.{fam}")


def both(name, fam, kernel, *args):
    """(backend's result, reference's result); NumPy's warnings about the NaN/inf inputs that
    the tests below feed on purpose are silenced."""
    with np.errstate(all="ignore"):
        return getattr(family(name, fam), kernel)(*args), getattr(ref(fam), kernel)(*args)


dtypes = st.sampled_from([np.float32, np.float64])
seeds = st.integers(0, 2 ** 32 - 1)


# ----------------------------------------------------------------------------- conv2d

@st.composite
def conv_cases(draw):
    """(x shape, w shape, stride, padding, dilation), always valid: the dilated kernel fits the
    padded input; padding up to 4 (more than half of most kernels); extra = 0 makes the kernel
    exactly as large as the padded input."""
    N, C, F = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 4)), draw(st.integers(0, 4)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    size = []
    for k, p, d in zip(kernel, padding, dilation):
        span = d * (k - 1) + 1
        size.append(max(1, span - 2 * p) + draw(st.integers(0, 5)))
    return (N, C, *size), (F, C, *kernel), stride, padding, dilation


CRASHED = [   # issue 15: the Cython conv segfaulted on these (window bounds not clamped)
    ((1, 1, 1, 1), (1, 1, 5, 5), (1, 1), (2, 2), (1, 1)),      # Conv2d(1, 1, 5, padding=2), 1x1 image
    ((2, 1, 4, 4), (3, 1, 11, 11), (1, 1), (5, 5), (1, 1)),    # --kernel-size 11 on a small map
    ((1, 2, 3, 2), (2, 2, 3, 3), (2, 3), (4, 4), (1, 1)),      # padding beyond the kernel
    ((1, 1, 1, 7), (1, 1, 1, 3), (1, 1), (3, 0), (1, 2)),
]


@pytest.mark.parametrize("name", COMPILED_CPU)
@settings(PROFILE)
@given(case=conv_cases(), dtype=dtypes, seed=seeds)
@example(case=CRASHED[0], dtype=np.float32, seed=0)
@example(case=CRASHED[1], dtype=np.float64, seed=1)
@example(case=CRASHED[2], dtype=np.float32, seed=2)
def test_conv2d_matches_the_reference(name, case, dtype, seed):
    x_shape, w_shape, stride, padding, dilation = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype) if seed % 2 else None
    y, expected = both(name, "conv", "conv2d_forward", x, w, b, stride, padding, dilation)
    assert_matches(y, expected, dtype, f"{name} conv2d_forward {case}")
    dy = rng.standard_normal(expected.shape).astype(dtype)
    assert_matches(*both(name, "conv", "conv2d_backward", dy, x, w, stride, padding, dilation, b is not None),
                   dtype, f"{name} conv2d_backward {case}")


@pytest.mark.parametrize("name", CPU)
@pytest.mark.parametrize("case", CRASHED)
def test_conv2d_with_padding_wider_than_the_window_reaches(name, case):
    """Regression (issue 15): exit 139 under cython.  Every output pixel whose window lies in the
    padding is the bias alone; forward and backward equal the reference."""
    x_shape, w_shape, stride, padding, dilation = case
    rng = np.random.default_rng(15)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0])
    y, expected = both(name, "conv", "conv2d_forward", x, w, b, stride, padding, dilation)
    assert_matches(y, expected, np.float64, name)
    dy = rng.standard_normal(y.shape)
    assert_matches(*both(name, "conv", "conv2d_backward", dy, x, w, stride, padding, dilation, True),
                   np.float64, name)


def test_conv2d_layer_on_a_1x1_image_under_every_cpu_backend():
    """The user-level reproduction: nn.Conv2d(1, 1, 5, padding=2) on a 1x1 image, forward and
    backward, the same under every CPU backend."""
    import tinygrad_seq as tgs
    results = {}
    for name in CPU:
        if unavailable_reason(name):
            continue
        with tgs.backend(name):
            tgs.manual_seed(0)
            conv = tgs.nn.Conv2d(1, 1, 5, padding=2)
            x = tgs.Tensor(np.full((1, 1, 1, 1), 0.5, np.float32), requires_grad=True)
            y = conv(x)
            y.sum().backward()
            results[name] = (y.data.copy(), x.grad.data.copy(), conv.weight.grad.data.copy())
    assert "numpy" in results and len(results) >= 2
    for name, got in results.items():
        for g, e in zip(got, results["numpy"]):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6, err_msg=name)


# ----------------------------------------------------------------------------- pooling

@st.composite
def pool_cases(draw):
    """(x shape, kernel, stride, padding), valid: padding at most half the kernel (PyTorch's
    rule, which the reference enforces), kernel at most the padded input."""
    N, C = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    size = [max(1, k - 2 * p) + draw(st.integers(0, 5)) for k, p in zip(kernel, padding)]
    return (N, C, *size), kernel, stride, padding


@pytest.mark.parametrize("name", COMPILED_CPU)
@settings(PROFILE)
@given(case=pool_cases(), dtype=dtypes, seed=seeds)
def test_pooling_matches_the_reference(name, case, dtype, seed):
    x_shape, kernel, stride, padding = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    if seed % 3 == 0:
        x = np.round(x)        # ties: the first maximum must win in every backend
    (y, argmax), (ry, rargmax) = both(name, "conv", "maxpool2d_forward", x, kernel, stride, padding)
    assert_matches((y, argmax), (ry, rargmax), dtype, f"{name} maxpool2d_forward {case}")
    dy = rng.standard_normal(ry.shape).astype(dtype)
    assert_matches(*both(name, "conv", "maxpool2d_backward", dy, rargmax, x.shape), dtype, "maxpool2d_backward")
    assert_matches(*both(name, "conv", "avgpool2d_forward", x, kernel, stride, padding), dtype, "avgpool2d_forward")
    assert_matches(*both(name, "conv", "avgpool2d_backward", dy, x.shape, kernel, stride, padding), dtype,
                   "avgpool2d_backward")


# ----------------------------------------------------------------------------- recurrences

def check_recurrence(name, kind, dtype, rng, T, B, H, edit=None):
    cell, forward_args, backward_args = recurrence_args(kind, rng, dtype, T, B, H)
    if edit is not None:
        edit(forward_args)
    got, expected = both(name, "recurrence", f"{cell}_forward", *forward_args)
    assert_matches(got, expected, dtype, f"{name} {kind} forward")
    got, expected = both(name, "recurrence", f"{cell}_backward", *backward_args(expected))
    assert_matches(got, expected, dtype, f"{name} {kind} backward")


@pytest.mark.parametrize("name", COMPILED_CPU)
@settings(PROFILE)
@given(kind=st.sampled_from(RECURRENCE_KINDS), dtype=dtypes, seed=seeds,
       T=st.integers(1, 4), B=st.integers(1, 3), H=st.integers(1, 20))
@example(kind="lstm", dtype=np.float32, seed=0, T=1, B=1, H=1)
@example(kind="gru", dtype=np.float64, seed=0, T=1, B=1, H=1)
@example(kind="rnn_relu", dtype=np.float32, seed=0, T=3, B=1, H=17)
def test_recurrences_match_the_reference(name, kind, dtype, seed, T, B, H):
    check_recurrence(name, kind, dtype, np.random.default_rng(seed), T, B, H)


@pytest.mark.parametrize("name", CPU)
@pytest.mark.parametrize("cell", ["rnn", "lstm"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_recurrent_forward_fills_a_strided_hs_out(name, cell, dtype):
    """hs_out (kernels/API.md): the states land in the given strided array, which is what comes
    back, with the values of a forward without it; the backward takes that hs as it is.  A
    wrong shape or dtype, or rows without unit stride, is a ValueError."""
    rng = np.random.default_rng(3)
    T, B, H, gates = 4, 3, 19, 4 if cell == "lstm" else 1
    xw = rng.standard_normal((T, B, gates * H)).astype(dtype)
    w_hh = (rng.standard_normal((gates * H, H)) / np.sqrt(H)).astype(dtype)
    h0, c0 = (rng.standard_normal((B, H)).astype(dtype) for _ in range(2))
    module = family(name, "recurrence")
    states = (h0, c0) if cell == "lstm" else (h0, "tanh")
    forward = getattr(module, f"{cell}_forward")
    fresh = forward(xw, w_hh, *states)
    rows = np.full((T + 1, B, 5 + H), np.nan, dtype=dtype)     # [x_t | h_{t-1}]-like rows, one step down
    hs_out = rows[1:, :, 5:]
    given = forward(xw, w_hh, *states, hs_out=hs_out)
    hs = given[0] if cell == "lstm" else given
    assert hs is hs_out
    for got, expected in zip(given if cell == "lstm" else [given], fresh if cell == "lstm" else [fresh]):
        np.testing.assert_allclose(got, expected, rtol=1e-6 if dtype == np.float32 else 1e-12, atol=1e-7)
    assert np.isnan(rows[0]).all() and np.isnan(rows[1:, :, :5]).all()     # nothing else written
    dhs = rng.standard_normal((T, B, H)).astype(dtype)
    if cell == "lstm":
        backward = module.lstm_backward(dhs, c0, w_hh, h0, c0, hs, *given[1:])
        expected = module.lstm_backward(dhs, c0, w_hh, h0, c0, fresh[0], *fresh[1:])
    else:
        backward = module.rnn_backward(dhs, w_hh, h0, hs, "tanh")
        expected = module.rnn_backward(dhs, w_hh, h0, fresh, "tanh")
    for got, want in zip(backward, expected):
        np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == np.float32 else 1e-12, atol=1e-6)
    for bad in (np.empty((T, B, H + 1), dtype), np.empty((T, B, H), np.float16 if dtype == np.float32 else np.float32),
                np.empty((T, B, H, 2), dtype)[..., 0]):
        with pytest.raises(ValueError, match="hs_out must be"):
            forward(xw, w_hh, *states, hs_out=bad)


@pytest.mark.parametrize("name", CPU)
@settings(PROFILE)
@given(dtype=dtypes, seed=seeds, T=st.integers(1, 4), B=st.integers(1, 3), I=st.integers(0, 9),
       H=st.integers(1, 40), bias=st.booleans())
@example(dtype=np.float32, seed=0, T=1, B=1, I=0, H=1, bias=False)
@example(dtype=np.float32, seed=1, T=3, B=2, I=65, H=33, bias=True)      # lstm_lm's inputs, H past one tile
def test_lstm_forward_xh_is_lstm_forward_on_projected_inputs(name, dtype, seed, T, B, I, H, bias):
    """lstm_forward_xh (kernels/API.md) gives lstm_forward's cs and gates for xw = x W_ih^T + b,
    and its hs in xh[1:, :, K:]; nothing else of xh is written, and the x part of xh's last row
    is never read (it holds NaN here)."""
    xh, w_x, w_hh, c0, xw, h0 = lstm_xh_case(np.random.default_rng(seed), dtype, T, B, I, H, bias)
    before = xh.copy()
    K = xh.shape[2] - H
    cs, gates = family(name, "recurrence").lstm_forward_xh(xh, w_x, w_hh, c0)
    hs, expected_cs, expected_gates = ref_recurrence.lstm_forward(xw, w_hh, h0, c0)
    assert_matches((xh[1:, :, K:], cs, gates), (hs, expected_cs, expected_gates), dtype, f"{name} lstm_forward_xh")
    np.testing.assert_array_equal(xh[:, :, :K], before[:, :, :K])
    np.testing.assert_array_equal(xh[0], before[0])


@pytest.mark.parametrize("name", CPU)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("where", ["x", "w_ih", "w_hh", "h0"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_lstm_forward_xh_nan_and_inf_propagate(name, dtype, where, value):
    """A bad number in an input, either weight or h0 spreads as through lstm_forward: NaN
    reaches the states, inf saturates the gates it enters."""
    xh, w_x, w_hh, c0, *_ = lstm_xh_case(np.random.default_rng(5), dtype, 4, 3, 6, 5, True)
    spot = {"x": (xh, (1, 2, 3)), "w_ih": (w_x, (6, 2)), "w_hh": (w_hh, (0, 1)), "h0": (xh, (0, 1, 9))}
    array, index = spot[where]
    array[index] = value
    K = xh.shape[2] - 5
    xw = (xh[:4, :, :K] @ w_x.T).astype(dtype)
    with np.errstate(all="ignore"):
        cs, gates = family(name, "recurrence").lstm_forward_xh(xh, w_x, w_hh, c0)
        expected = ref_recurrence.lstm_forward(xw, w_hh, np.ascontiguousarray(xh[0, :, K:]), c0)
    assert np.isnan(expected[0]).any() == np.isnan(value)
    assert_matches((xh[1:, :, K:], cs, gates), expected, dtype, f"{name} lstm_forward_xh, {value} in {where}")


@pytest.mark.parametrize("name", CPU)
def test_lstm_forward_xh_refuses_what_it_cannot_write_or_multiply(name):
    """The reference's ValueErrors in every backend: xh not C-contiguous (h_t is written into it:
    a copy would lose them), w_x not (4H, K) or w_hh not (4H, H), xh narrower than H, or a
    second dtype."""
    xh, w_x, w_hh, c0, *_ = lstm_xh_case(np.random.default_rng(2), np.float32, 3, 2, 4, 6, True)
    forward = family(name, "recurrence").lstm_forward_xh
    wide = np.zeros((4, 2, 2 * xh.shape[2]), np.float32)[:, :, ::2]
    for args, message in [((wide, w_x, w_hh, c0), "xh must be C-contiguous"),
                          ((xh, w_x[:, 1:], w_hh, c0), r"w_x has shape \(24, 4\), expected \(4H, K\) = \(24, 5\)"),
                          ((xh, w_x, w_hh[:, 1:], c0), r"w_hh has shape \(24, 5\), expected \(4H, H\)"),
                          ((xh[:, :, :5], w_x, w_hh, c0), "fewer than H = 6"),
                          ((xh, w_x, w_hh.astype(np.float64), c0), "w_hh is float64 but xh is float32"),
                          ((xh[0], w_x, w_hh, c0), r"expected xh \(T\+1, B, K\+H\)")]:
        with pytest.raises(ValueError, match=message):
            forward(*args)


# ----------------------------------------------------------------------------- softmax, GELU

@pytest.mark.parametrize("name", COMPILED_CPU)
@settings(PROFILE)
@given(rows=st.integers(1, 5), length=st.integers(1, 40), masking=st.sampled_from(["none", "random", "rows"]),
       dtype=dtypes, seed=seeds)
def test_softmax_matches_the_reference(name, rows, length, masking, dtype, seed):
    rng = np.random.default_rng(seed)
    x = (5 * rng.standard_normal((rows, length))).astype(dtype)
    mask = None
    if masking != "none":
        mask = rng.random((rows, length)) < 0.4
        if masking == "rows":
            mask[0] = True                           # a fully masked row: zeros
    y, expected = both(name, "softmax", "softmax_forward", x, mask)
    assert_matches(y, expected, dtype, f"{name} softmax_forward")
    if mask is not None:
        assert np.all(y[mask] == 0)                  # exactly zero, not merely small
    dy = rng.standard_normal(x.shape).astype(dtype)
    assert_matches(*both(name, "softmax", "softmax_backward", dy, expected), dtype, f"{name} softmax_backward")


@pytest.mark.parametrize("name", COMPILED_CPU)
@settings(PROFILE)
@given(rows=st.integers(1, 5), length=st.integers(1, 40), scale=st.sampled_from([0.1, 5.0, 300.0]),
       dtype=dtypes, seed=seeds)
def test_log_softmax_matches_the_reference(name, rows, length, scale, dtype, seed):
    rng = np.random.default_rng(seed)
    x = (scale * rng.standard_normal((rows, length))).astype(dtype)
    y, expected = both(name, "softmax", "log_softmax_forward", x)
    assert_matches(y, expected, dtype, f"{name} log_softmax_forward")
    dy = rng.standard_normal(x.shape).astype(dtype)
    assert_matches(*both(name, "softmax", "log_softmax_backward", dy, expected), dtype,
                   f"{name} log_softmax_backward")


@pytest.mark.parametrize("name", COMPILED_CPU)
@settings(PROFILE)
@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=3), dtype=dtypes, seed=seeds)
def test_gelu_matches_the_reference(name, shape, dtype, seed):
    rng = np.random.default_rng(seed)
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    (y, cdf), expected = both(name, "activation", "gelu_forward", x)
    assert_matches((y, cdf), expected, dtype, f"{name} gelu_forward")
    dy = rng.standard_normal(shape).astype(dtype)
    assert_matches(*both(name, "activation", "gelu_backward", dy, x, expected[1]), dtype, f"{name} gelu_backward")


@pytest.mark.parametrize("name", COMPILED_CPU)
@settings(PROFILE)
@given(rows=st.integers(0, 40), n=st.integers(1, 70), has_weight=st.booleans(), has_bias=st.booleans(),
       need_affine=st.booleans(), offset=st.sampled_from([0.0, 3.0, -50.0]), dtype=dtypes, seed=seeds)
def test_layer_norm_matches_the_reference(name, rows, n, has_weight, has_bias, need_affine, offset, dtype, seed):
    """Any rows (none too) and n, weight and bias each present or not, rows centred away from 0."""
    rng = np.random.default_rng(seed)
    x = (offset + rng.standard_normal((rows, n))).astype(dtype)
    weight = rng.standard_normal(n).astype(dtype) if has_weight else None
    bias = rng.standard_normal(n).astype(dtype) if has_bias else None
    got, expected = both(name, "normalization", "layer_norm_forward", x, weight, bias, 1e-5)
    assert_matches(tuple(got), tuple(expected), dtype, f"{name} layer_norm_forward")
    dy = rng.standard_normal(x.shape).astype(dtype)
    got, want = both(name, "normalization", "layer_norm_backward", dy, x, weight, *expected[1:], need_affine)
    assert_matches(tuple(got), tuple(want), dtype, f"{name} layer_norm_backward")


# ----------------------------------------------------------------------------- NaN and inf

DTYPE_IDS = [np.float32, np.float64]


@pytest.mark.parametrize("name", CPU)
@pytest.mark.parametrize("dtype", DTYPE_IDS)
@pytest.mark.parametrize("kind", RECURRENCE_KINDS)
@pytest.mark.parametrize("where", ["w_hh", "xw", "h0"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_recurrence_nan_and_inf_propagate(name, dtype, kind, where, value):
    """One bad number in a weight, an input or the initial state: NaN wherever the reference
    has NaN (issue 15: a NaN in an LSTM's weight_hh_l0[0, 0] came out finite under cython),
    the same infinities, and the same finite numbers elsewhere; forward and backward."""
    def edit(args):
        target = {"w_hh": args[1], "xw": args[0], "h0": args[3] if kind == "gru" else args[2]}[where]
        target.flat[0] = value

    check_recurrence(name, kind, dtype, np.random.default_rng(7), 4, 3, 5, edit=edit)


def test_lstm_with_a_nan_weight_gives_nan_under_every_cpu_backend():
    """The user-level case of issue 15: the output sum of an LSTM whose weight_hh_l0[0, 0] is
    NaN is NaN under every backend, never a finite number."""
    import tinygrad_seq as tgs
    for name in CPU:
        if unavailable_reason(name):
            continue
        with tgs.backend(name):
            tgs.manual_seed(0)
            lstm = tgs.nn.LSTM(3, 4)
            lstm.weight_hh_l0.data[0, 0] = np.nan
            out, _ = lstm(tgs.Tensor(np.ones((5, 2, 3), np.float32)))
            assert np.isnan(float(out.sum().data)), name


@pytest.mark.parametrize("name", CPU)
@pytest.mark.parametrize("dtype", DTYPE_IDS)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_conv_and_pooling_nan_and_inf_propagate(name, dtype, value):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 2, 6, 5)).astype(dtype)
    w = rng.standard_normal((3, 2, 3, 3)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    x[0, 1, 2, 3] = value
    x[1, 0, 0, 0] = value                                         # on the border (padding next to it)
    args = ((2, 1), (1, 2), (1, 1))
    y, expected = both(name, "conv", "conv2d_forward", x, w, b, *args)
    assert_matches(y, expected, dtype, "conv2d_forward")
    dy = rng.standard_normal(expected.shape).astype(dtype)
    dy[0, 0, 1, 1] = value
    assert_matches(*both(name, "conv", "conv2d_backward", dy, x, w, *args, True), dtype, "conv2d_backward")
    pool = ((3, 2), (2, 1), (1, 1))
    (y, argmax), (ry, rargmax) = both(name, "conv", "maxpool2d_forward", x, *pool)
    assert_matches((y, argmax), (ry, rargmax), dtype, "maxpool2d_forward")
    dy = rng.standard_normal(ry.shape).astype(dtype)
    dy[0, 0, 0, 0] = value
    assert_matches(*both(name, "conv", "maxpool2d_backward", dy, rargmax, x.shape), dtype, "maxpool2d_backward")
    assert_matches(*both(name, "conv", "avgpool2d_forward", x, *pool), dtype, "avgpool2d_forward")
    assert_matches(*both(name, "conv", "avgpool2d_backward", dy, x.shape, *pool), dtype, "avgpool2d_backward")


@pytest.mark.parametrize("name", CPU)
@pytest.mark.parametrize("dtype", DTYPE_IDS)
def test_softmax_nan_inf_and_masks(name, dtype):
    """NaN, +inf and -inf logits, fully masked rows and NaN gradients, as the reference and the
    IEEE rules have them (kernel_checks.check_softmax_special_values)."""
    check_softmax_special_values(lambda kernel, *args: both(name, "softmax", kernel, *args), dtype, name)


@pytest.mark.parametrize("name", CPU)
@pytest.mark.parametrize("dtype", DTYPE_IDS)
def test_log_softmax_nan_and_inf(name, dtype):
    """NaN, +inf and -inf logits and NaN/inf gradients, as the reference and the IEEE rules have
    them (kernel_checks.check_log_softmax_special_values)."""
    check_log_softmax_special_values(lambda kernel, *args: both(name, "softmax", kernel, *args), dtype, name)


@pytest.mark.parametrize("name", CPU)
@pytest.mark.parametrize("dtype", DTYPE_IDS)
@pytest.mark.parametrize("W", [2, 3, 6, 7, 8, 9, 15, 16, 17, 28, 33])
def test_maxpool_2x2_rows_of_every_length_match_the_reference(name, dtype, W):
    """The usual 2x2, stride-2 pool, which the Cython backend runs in a vectorised loop of
    blocks of 8 or 4 outputs (the last block shifted back to the row's end, so rows of 1-3,
    4-7, 8 and more outputs take different paths), on ties, NaN, +inf and -inf at every tap
    of a window, and odd H and W (the last row or column belongs to no window)."""
    rng = np.random.default_rng(W)
    x = rng.integers(-2, 3, size=(2, 3, 7, W)).astype(dtype)     # small integers: many ties
    flat = x.reshape(-1)
    spots = rng.permutation(flat.size)[: flat.size // 3]
    for k, value in enumerate((np.nan, np.inf, -np.inf)):
        flat[spots[k::3]] = value
    (y, argmax), (ry, rargmax) = both(name, "conv", "maxpool2d_forward", x, (2, 2), (2, 2), (0, 0))
    assert_matches((y, argmax), (ry, rargmax), dtype, f"maxpool2d_forward W={W}")
    dy = rng.standard_normal(ry.shape).astype(dtype)
    assert_matches(*both(name, "conv", "maxpool2d_backward", dy, rargmax, x.shape), dtype, "maxpool2d_backward")


@pytest.mark.parametrize("name", CPU)
@pytest.mark.parametrize("dtype", DTYPE_IDS)
def test_relu_nan_and_inf(name, dtype):
    """ReLU(NaN) = NaN, ReLU(-inf) = 0; the backward multiplies, so a NaN or inf in dy gives NaN
    where the input was not positive (as the engine's NumPy ReLU always did)."""
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, -3.0, 2.0, np.nan], dtype=dtype)
    y, expected = both(name, "activation", "relu_forward", x)
    assert_matches(y, expected, dtype, "relu_forward")
    assert np.isnan(y[0]) and y[1] == np.inf and y[2] == 0 and y[6] == 2
    dy = np.array([1.0, 1.0, np.nan, np.inf, 1.0, np.nan, np.inf, 1.0], dtype=dtype)
    dx, expected = both(name, "activation", "relu_backward", dy, expected)
    assert_matches(dx, expected, dtype, "relu_backward")
    assert dx[1] == 1 and np.isnan(dx[2]) and np.isnan(dx[3]) and dx[6] == np.inf and dx[7] == 0


@pytest.mark.parametrize("name", CPU)
@pytest.mark.parametrize("dtype", DTYPE_IDS)
def test_gelu_nan_and_inf(name, dtype):
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -3.0, 2.0], dtype=dtype)
    (y, cdf), expected = both(name, "activation", "gelu_forward", x)
    assert_matches((y, cdf), expected, dtype, "gelu_forward")
    assert np.isnan(y[0]) and y[1] == np.inf and cdf[1] == 1 and cdf[2] == 0
    dy = np.array([1.0, 1.0, 1.0, np.nan, np.inf, 1.0], dtype=dtype)
    assert_matches(*both(name, "activation", "gelu_backward", dy, x, expected[1]), dtype, "gelu_backward")


@pytest.mark.parametrize("name", COMPILED_CPU)
@pytest.mark.parametrize("dtype", DTYPE_IDS)
def test_layer_norm_nan_and_inf(name, dtype):
    check_layer_norm_special_values(family(name, "normalization"), ref_normalization, dtype)
