"""The vectorisable float32 exp / sigmoid / tanh that the Numba kernels inline (kernels/numba_cpu/_fastmath.py)."""
import numpy as np
import pytest

pytest.importorskip("numba", reason="the fast-math helpers are Numba code")
from numba import njit  # noqa: E402

from tinygrad_seq.kernels.numba_cpu import _fastmath  # noqa: E402


def _elementwise(fn):
    @njit
    def apply(x):
        y = np.empty_like(x)
        for i in range(x.shape[0]):
            y[i] = fn(x[i])
        return y
    return apply


@pytest.mark.parametrize("name, reference, low, high", [
    ("exp", np.exp, -87.0, 87.0),
    ("sigmoid", lambda x: 1 / (1 + np.exp(-x)), -30.0, 30.0),
    ("tanh", np.tanh, -10.0, 10.0),
])
def test_float32_within_a_few_ulp_of_float64(name, reference, low, high):
    x = np.concatenate([np.linspace(low, high, 200001), np.linspace(-1, 1, 20001)]).astype(np.float32)
    got = _elementwise(getattr(_fastmath, name))(x)
    assert got.dtype == np.float32
    exact = reference(x.astype(np.float64))
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got - exact) / np.maximum(ulp, np.spacing(np.float32(1e-30)))) <= 4


def test_exp_limits_and_nan():
    x = np.array([-np.inf, -1000, -88, 88, 1000, np.nan, 0], dtype=np.float32)
    got = _elementwise(_fastmath.exp)(x)
    assert np.all(got[:3] == 0)                      # exactly 0 below the float32 range: masking needs e^-inf = 0
    assert np.all(np.isfinite(got[3:5])) and got[3] > 1e37
    assert np.isnan(got[5]) and got[6] == 1
    sig = _elementwise(_fastmath.sigmoid)(np.array([-np.inf, np.inf, -200, 200], dtype=np.float32))
    np.testing.assert_allclose(sig, [0, 1, 0, 1], rtol=0, atol=1e-37)   # 0 and 1 to float32's absolute precision
    th = _elementwise(_fastmath.tanh)(np.array([-np.inf, np.inf, 0], dtype=np.float32))
    np.testing.assert_array_equal(th, [-1, 1, 0])


def test_float64_is_libm():
    x = np.linspace(-20, 20, 1001)
    np.testing.assert_array_equal(_elementwise(_fastmath.exp)(x), np.exp(x))
    np.testing.assert_allclose(_elementwise(_fastmath.tanh)(x), np.tanh(x), rtol=0, atol=1e-15)
