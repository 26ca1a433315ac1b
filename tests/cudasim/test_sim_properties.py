"""Every CUDA kernel family under the simulator against the NumPy reference over random *valid*
arguments (hypothesis), as tests/test_kernel_properties.py does for the CPU backends: conv with
padding wider than half the kernel and a kernel as large as the padded input, pooling, the
recurrences (RNN tanh/relu, LSTM, GRU; T = 1, batch 1, hidden size 1 among the shapes) and the
masked softmax (fully masked rows, -inf logits); float32 and float64, forward and backward.
Then NaN and +-inf through the recurrences and the softmax, exactly where the reference puts
them.  The simulator runs every GPU thread in Python, so the shapes are tiny and the
derandomized budget small; HYPOTHESIS_PROFILE=long draws more."""
import os

import numpy as np
import pytest
from kernel_checks import RECURRENCE_KINDS, assert_matches, check_softmax_special_values, recurrence_args
from simcheck import assert_close

hypothesis = pytest.importorskip("hypothesis", reason="the property-based tests need hypothesis (test extra)")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tinygrad_seq.kernels.cuda import conv as cuda_conv  # noqa: E402
from tinygrad_seq.kernels.cuda import recurrence as cuda_recurrence  # noqa: E402
from tinygrad_seq.kernels.cuda import softmax as cuda_softmax  # noqa: E402
from tinygrad_seq.kernels.reference import conv as ref  # noqa: E402
from tinygrad_seq.kernels.reference import recurrence as ref_recurrence  # noqa: E402
from tinygrad_seq.kernels.reference import softmax as ref_softmax  # noqa: E402

settings.register_profile("sim-ci", derandomize=True, max_examples=25, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("sim-long", max_examples=100, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
PROFILE = settings.get_profile("sim-long" if os.environ.get("HYPOTHESIS_PROFILE") == "long" else "sim-ci")
# a softmax launch is blocks of threads meeting at barriers, each a Python thread here: the
# slowest launch to simulate, so it gets a third of the budget
SOFTMAX_PROFILE = settings(PROFILE, max_examples=PROFILE.max_examples // 3)


@st.composite
def conv_cases(draw):
    C, F = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    size = [max(1, d * (k - 1) + 1 - 2 * p) + draw(st.integers(0, 3))
            for k, p, d in zip(kernel, padding, dilation)]
    return (1, C, *size), (F, C, *kernel), stride, padding, dilation


@settings(PROFILE)
@given(case=conv_cases(), dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2 ** 16))
@example(case=((1, 1, 1, 1), (1, 1, 5, 5), (1, 1), (2, 2), (1, 1)), dtype=np.float32, seed=0)
@example(case=((1, 1, 3, 2), (1, 1, 3, 3), (2, 1), (3, 3), (1, 1)), dtype=np.float64, seed=1)
def test_conv2d_matches_the_reference(case, dtype, seed):
    x_shape, w_shape, stride, padding, dilation = case
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(x_shape).astype(dtype), rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    expected = ref.conv2d_forward(x, w, b, stride, padding, dilation)
    assert_close(cuda_conv.conv2d_forward(x, w, b, stride, padding, dilation), expected, dtype)
    dy = rng.standard_normal(expected.shape).astype(dtype)
    for got, want in zip(cuda_conv.conv2d_backward(dy, x, w, stride, padding, dilation, True),
                         ref.conv2d_backward(dy, x, w, stride, padding, dilation, True)):
        assert_close(got, want, dtype)


@st.composite
def pool_cases(draw):
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    size = [max(1, k - 2 * p) + draw(st.integers(0, 3)) for k, p in zip(kernel, padding)]
    return (1, draw(st.integers(1, 2)), *size), kernel, stride, padding


@settings(PROFILE)
@given(case=pool_cases(), dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2 ** 16))
def test_pooling_matches_the_reference(case, dtype, seed):
    x_shape, kernel, stride, padding = case
    x = np.random.default_rng(seed).standard_normal(x_shape).astype(dtype)
    y, argmax = cuda_conv.maxpool2d_forward(x, kernel, stride, padding)
    ry, rargmax = ref.maxpool2d_forward(x, kernel, stride, padding)
    assert_close(y, ry, dtype)
    np.testing.assert_array_equal(argmax, rargmax)
    assert_close(cuda_conv.avgpool2d_forward(x, kernel, stride, padding),
                 ref.avgpool2d_forward(x, kernel, stride, padding), dtype)


# ----------------------------------------------------------------------------- recurrences

def both(cuda_module, ref_module, kernel, *args):
    """(CUDA result, reference result); NumPy's warnings about the NaN/inf fed on purpose are
    silenced."""
    with np.errstate(all="ignore"):
        return getattr(cuda_module, kernel)(*args), getattr(ref_module, kernel)(*args)


def check_recurrence(kind, dtype, rng, T, B, H, edit=None):
    """Forward, then backward from the reference's forward outputs, against the reference."""
    cell, forward_args, backward_args = recurrence_args(kind, rng, dtype, T, B, H)
    if edit is not None:
        edit(forward_args)
    got, expected = both(cuda_recurrence, ref_recurrence, f"{cell}_forward", *forward_args)
    assert_matches(got, expected, dtype, f"cuda {kind} forward")
    got, expected = both(cuda_recurrence, ref_recurrence, f"{cell}_backward", *backward_args(expected))
    assert_matches(got, expected, dtype, f"cuda {kind} backward")


@settings(PROFILE)
@given(kind=st.sampled_from(RECURRENCE_KINDS), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2 ** 16), T=st.integers(1, 3), B=st.integers(1, 2), H=st.integers(1, 6))
@example(kind="lstm", dtype=np.float32, seed=0, T=1, B=1, H=1)
@example(kind="gru", dtype=np.float64, seed=0, T=1, B=1, H=1)
@example(kind="rnn_relu", dtype=np.float32, seed=0, T=2, B=1, H=1)
@example(kind="rnn_tanh", dtype=np.float64, seed=0, T=1, B=2, H=1)
def test_recurrences_match_the_reference(kind, dtype, seed, T, B, H):
    check_recurrence(kind, dtype, np.random.default_rng(seed), T, B, H)


# ----------------------------------------------------------------------------- softmax

@settings(SOFTMAX_PROFILE)
@given(rows=st.integers(1, 4), length=st.integers(1, 20), masking=st.sampled_from(["none", "random", "rows"]),
       neg_inf=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2 ** 16))
@example(rows=1, length=1, masking="rows", neg_inf=False, dtype=np.float32, seed=0)
@example(rows=2, length=17, masking="rows", neg_inf=True, dtype=np.float64, seed=0)
def test_softmax_matches_the_reference(rows, length, masking, neg_inf, dtype, seed):
    """Random masks, a fully masked first row ("rows"), -inf logits (the attention's way of
    masking) sprinkled in: exactly zero wherever masked or -inf, never NaN."""
    rng = np.random.default_rng(seed)
    x = (5 * rng.standard_normal((rows, length))).astype(dtype)
    if neg_inf:
        x[rng.random(x.shape) < 0.3] = -np.inf
    mask = None
    if masking != "none":
        mask = rng.random(x.shape) < 0.4
        if masking == "rows":
            mask[0] = True
    y, expected = both(cuda_softmax, ref_softmax, "softmax_forward", x, mask)
    assert_matches(y, expected, dtype, "cuda softmax_forward")
    assert not np.isnan(y).any()
    assert np.all(y[np.isneginf(x)] == 0)
    if mask is not None:
        assert np.all(y[mask] == 0)
    dy = rng.standard_normal(x.shape).astype(dtype)
    assert_matches(*both(cuda_softmax, ref_softmax, "softmax_backward", dy, expected), dtype,
                   "cuda softmax_backward")


# ----------------------------------------------------------------------------- NaN and inf

# the simulator computes each GPU thread with NumPy scalars in a thread of its own, out of
# reach of np.errstate: NaN/inf arithmetic there warns, as intended
NAN_ARITHMETIC_WARNS = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning",
                                                  "ignore:overflow encountered:RuntimeWarning")


@NAN_ARITHMETIC_WARNS
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", RECURRENCE_KINDS)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_recurrence_nan_and_inf_propagate(dtype, kind, value):
    """One bad number in the recurrent weight, the input projection or the initial state (one
    case each): NaN wherever the reference has NaN, the same infinities, the same finite numbers
    elsewhere; forward and backward."""
    for where in ("w_hh", "xw", "h0"):
        def edit(args):
            target = {"w_hh": args[1], "xw": args[0], "h0": args[3] if kind == "gru" else args[2]}[where]
            target.flat[0] = value

        check_recurrence(kind, dtype, np.random.default_rng(7), 3, 2, 3, edit=edit)


@NAN_ARITHMETIC_WARNS
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_nan_inf_and_masks(dtype):
    """NaN, +inf and -inf logits, fully masked rows and NaN gradients, as the reference and the
    IEEE rules have them (kernel_checks.check_softmax_special_values)."""
    check_softmax_special_values(lambda kernel, *args: both(cuda_softmax, ref_softmax, kernel, *args), dtype, "cuda")
