"""The CUDA conv and pooling kernels under the simulator against the NumPy reference over random
*valid* shapes (hypothesis), as tests/test_kernel_properties.py does for the CPU backends:
padding wider than half the kernel, a kernel as large as the padded input, batch 1.  The
simulator runs every GPU thread in Python, so the shapes are tiny and the derandomized budget
small; HYPOTHESIS_PROFILE=long draws more."""
import os

import numpy as np
import pytest
from simcheck import assert_close

hypothesis = pytest.importorskip("hypothesis", reason="the property-based tests need hypothesis (test extra)")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tinygrad_seq.kernels.cuda import conv as cuda_conv  # noqa: E402
from tinygrad_seq.kernels.reference import conv as ref  # noqa: E402

settings.register_profile("sim-ci", derandomize=True, max_examples=25, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("sim-long", max_examples=100, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
PROFILE = settings.get_profile("sim-long" if os.environ.get("HYPOTHESIS_PROFILE") == "long" else "sim-ci")


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
