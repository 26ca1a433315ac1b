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


def _ulps64(got, exact):
    """|got - exact| in units of the last place of `exact` (float64)."""
    return np.abs(got - exact) / np.spacing(np.abs(exact))


def test_float64_is_libm():
    """float64 exp and tanh are libm's (correctly rounded to within an ulp), compared in ulps
    with Python's `math`: NumPy's own np.exp is no reference here, as on AVX-512 CPUs it runs
    its SIMD exp, 1 ulp off libm at some points (a bit-for-bit test passed on one CPU only)."""
    import math
    x = np.concatenate([np.linspace(-20, 20, 1001), [-708.0, -1e-300, 0.0, 1e-300, 709.0]])
    exp_exact = np.array([math.exp(v) for v in x])
    tanh_exact = np.array([math.tanh(v) for v in x])
    assert np.max(_ulps64(_elementwise(_fastmath.exp)(x), exp_exact)) <= 1
    nonzero = tanh_exact != 0
    got_tanh = _elementwise(_fastmath.tanh)(x)
    assert np.max(_ulps64(got_tanh[nonzero], tanh_exact[nonzero])) <= 1
    assert np.all(got_tanh[~nonzero] == 0)
    sig = _elementwise(_fastmath.sigmoid)(x)
    sig_exact = np.array([1 / (1 + math.exp(-v)) for v in x])
    assert np.max(_ulps64(sig, sig_exact)) <= 2


def test_nan_and_inf_propagate_in_both_precisions():
    """IEEE semantics: NaN in, NaN out; +-inf give the functions' limits (float32 and float64)."""
    for dtype in (np.float32, np.float64):
        x = np.array([np.nan, -np.inf, np.inf], dtype=dtype)
        e = _elementwise(_fastmath.exp)(x)
        s = _elementwise(_fastmath.sigmoid)(x)
        t = _elementwise(_fastmath.tanh)(x)
        assert np.isnan(e[0]) and np.isnan(s[0]) and np.isnan(t[0]), dtype
        assert e[1] == 0 and s[1] == 0 and t[1] == -1 and t[2] == 1, dtype
        assert s[2] == 1 and (e[2] == np.inf or e[2] > 1e37), dtype


def test_no_numba_kernel_assumes_finite_values():
    """Every @njit kernel's fastmath flags keep IEEE NaN/inf: none of `fastmath=True` (which
    includes nnan and ninf), 'fast', 'nnan' or 'ninf', under which LLVM may fold away the very
    comparisons that let a NaN through.  The NaN/inf behaviour itself is tested per family in
    tests/test_kernel_properties.py."""
    import importlib
    from numba.core.registry import CPUDispatcher
    kernels = []
    for family in ("recurrence", "conv", "softmax", "activation", "_fastmath"):
        module = importlib.import_module(f"tinygrad_seq.kernels.numba_cpu.{family}")
        kernels += [(family, name, obj) for name, obj in vars(module).items() if isinstance(obj, CPUDispatcher)]
    assert len(kernels) >= 10
    for family, name, kernel in kernels:
        flags = kernel.targetoptions.get("fastmath", False)
        assert flags is not True, f"{family}.{name}: fastmath=True"
        flags = set(flags) if flags else set()
        assert not flags & {"fast", "nnan", "ninf"}, f"{family}.{name}: fastmath={flags}"
