"""The `matmul` kernel family: every backend's product equals NumPy's, for the layouts the engine
passes (transposed views, stacks of matrices), and on the cython backend no BLAS thread pool
is woken, so the engine does not depend on OPENBLAS_THREAD_TIMEOUT or on import order."""
import os
import subprocess
import sys

import numpy as np
import pytest

from tinygrad_seq.backend import unavailable_reason
from tinygrad_seq.kernels.reference import matmul as reference

BACKENDS = [name for name in ("numba", "cython") if unavailable_reason(name) is None]
SHAPES = [((300, 70), (70, 129)), ((2048, 66), (66, 256)), ((8, 128, 32), (8, 32, 128)),
          ((2, 3, 40, 64), (2, 3, 64, 50)), ((7, 100), (100, 2000)), ((3, 4), (4, 5)), ((6, 50, 60), (60, 70))]


def _module(name):
    import importlib
    return importlib.import_module(f"tinygrad_seq.kernels.{'numba_cpu' if name == 'numba' else name}.matmul")


def _transposed(x):
    """The same values as a transposed view of a C-ordered array (what x.T hands the engine)."""
    return np.ascontiguousarray(np.swapaxes(x, -1, -2)).swapaxes(-1, -2)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shapes", SHAPES)
def test_product_matches_numpy_for_every_layout(name, dtype, shapes):
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal(s).astype(dtype) for s in shapes)
    tol = dict(rtol=1e-4, atol=1e-3) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    for x, y in [(a, b), (_transposed(a), b), (a, _transposed(b)), (_transposed(a), _transposed(b))]:
        got = _module(name).matmul(x, y)
        assert got.shape == reference.matmul(x, y).shape and got.dtype == dtype
        np.testing.assert_allclose(got, x.astype(np.float64) @ y.astype(np.float64), **tol)


@pytest.mark.skipif("cython" not in BACKENDS, reason="needs the compiled Cython kernels (a C compiler at install)")
def test_nan_and_inf_propagate_as_in_numpy():
    a = np.ones((64, 64), dtype=np.float32)
    b = np.ones((64, 128), dtype=np.float32)
    a[3, 5], b[7, 9] = np.nan, np.inf
    got, want = _module("cython").matmul(a, b), a @ b
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))


# After the work, the process sleeps 50 ms: the CPU time it uses meanwhile is spinning BLAS threads.
SPIN_AFTER = """
import time, numpy as np
import tinygrad_seq as tgs
from tinygrad_seq import nn
from tinygrad_seq.nn import functional as F

def spin_ms(work):
    work()
    start = time.process_time()
    time.sleep(0.05)
    return (time.process_time() - start) * 1e3

a = np.ones((512, 512), dtype=np.float32)
lstm, head = nn.LSTM(65, 128, batch_first=True), nn.Linear(128, 65)
x = tgs.randn(16, 32, 65)
def step():
    out, _ = lstm(x)
    head(out).sum().backward()
with tgs.backend("cython"):
    step()
    engine = min(spin_ms(step) for _ in range(3))
numpy = max(spin_ms(lambda: a @ a) for _ in range(3))
print(numpy, engine)
"""


@pytest.mark.skipif("cython" not in BACKENDS, reason="needs the compiled Cython kernels (a C compiler at install)")
def test_a_training_step_wakes_no_blas_threads_when_numpy_came_first():
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_THREAD_TIMEOUT", "GOMP_SPINCOUNT")}
    result = subprocess.run([sys.executable, "-c", SPIN_AFTER], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    numpy_spin, engine_spin = map(float, result.stdout.split())
    if numpy_spin < 10:
        pytest.skip("NumPy's BLAS does not spin after a product here (one core, or another BLAS)")
    assert engine_spin < numpy_spin / 3


@pytest.mark.skipif("cython" not in BACKENDS, reason="needs the compiled Cython kernels (a C compiler at install)")
def test_blas_thread_counts_are_held_only_during_the_product():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    team = _module("cython")     # loads SciPy's BLAS before the first count
    before = [lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]
    a = np.ones((256, 256), dtype=np.float32)
    team.matmul(a, a)
    after = [lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]
    assert after == before


@pytest.mark.skipif("cython" not in BACKENDS, reason="needs the compiled Cython kernels (a C compiler at install)")
def test_the_team_runs_on_numpy_s_openblas_and_both_libraries_agree():
    """The team calls NumPy's own (ILP64) OpenBLAS where NumPy bundles one; SciPy's stays usable
    and gives the same products, for every layout and both dtypes."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    team = _module("cython")
    from tinygrad_seq.kernels.cython import _team_gemm
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((300, 170)), rng.standard_normal((170, 90))
    team.matmul(a, b)
    numpy_dir = os.path.dirname(np.__file__)
    bundled = [lib for lib in threadpoolctl.threadpool_info() if lib["internal_api"] == "openblas"
               and os.path.dirname(lib["filepath"]).startswith(numpy_dir)]   # numpy.libs beside numpy/
    if not bundled:
        pytest.skip("this NumPy does not bundle OpenBLAS (another BLAS or a system build)")
    assert team.gemm_library().startswith("NumPy's OpenBLAS")
    for dtype in (np.float32, np.float64):
        x, y = a.astype(dtype), b.astype(dtype)
        for xs, ys in [(x, y), (_transposed(x), y), (x, _transposed(y))]:
            on_numpy = team.matmul(xs, ys)
            _team_gemm.use_blas(0, 0)
            try:
                on_scipy = team.matmul(xs, ys)
            finally:
                team._use_numpy_blas(team._blas_libraries())
            tol = 1e-4 if dtype == np.float32 else 1e-12
            np.testing.assert_allclose(on_numpy, on_scipy, rtol=tol, atol=tol)
            np.testing.assert_allclose(on_numpy, xs.astype(np.float64) @ ys, rtol=tol, atol=tol)
    with pytest.raises(ValueError, match="both"):
        _team_gemm.use_blas(1, 0)
