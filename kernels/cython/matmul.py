"""Matrix products, Cython backend: the GEMMs on the kernels' OpenMP team (_team_gemm.pyx).

Each of the team's threads runs a single-threaded BLAS GEMM on its share, and every BLAS library
in the process is held at one thread for the call, so no BLAS thread pool is woken: the engine's
speed no longer depends on whether NumPy's OpenBLAS was told (by OPENBLAS_THREAD_TIMEOUT, before
NumPy loaded) to stop its idle threads spinning.  Products too small to share, odd dtypes and
broadcast batches go to NumPy, which runs products that small on the calling thread.
"""
import os
import threading

import numpy as np

from . import _team_gemm

# Below this many multiply-adds a product runs on the calling thread: OpenBLAS itself starts
# threads only from 65536 * 4 (its GEMM_MULTITHREAD_THRESHOLD), and waking the team costs more.
TEAM_MIN_WORK = 2 ** 18


def _threads():
    """The team size of every Cython kernel: $TGS_CYTHON_THREADS, else the cores this process may use."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        return max(1, int(os.environ.get("TGS_CYTHON_THREADS", cores)))
    except ValueError:
        return cores


_state = {"threads": _threads(), "blas": None, "gemm": "SciPy's BLAS"}
# one product at a time holds the BLAS libraries: two Python threads interleaving their
# hold-and-restore could otherwise leave them at one thread for good
_holding = threading.Lock()


def set_num_threads(n):
    _state["threads"] = max(1, int(n))


def gemm_library():
    """Which BLAS the team's GEMMs call (known after the first product that used the team)."""
    return _state["gemm"]


def _blas_libraries():
    """threadpoolctl's handles on the BLAS libraries loaded now (NumPy's, SciPy's), found once;
    the first call also hands NumPy's OpenBLAS to the team (_use_numpy_blas)."""
    if _state["blas"] is None:
        try:
            from threadpoolctl import ThreadpoolController
            _state["blas"] = ThreadpoolController().select(user_api="blas").lib_controllers
        except Exception:   # threadpoolctl missing or unable to read a library: pin none
            _state["blas"] = []
        _use_numpy_blas(_state["blas"])
    return _state["blas"]


# NumPy's wheels bundle OpenBLAS with 64-bit integers, its symbols renamed (scipy-openblas64)
NUMPY_BLAS_GEMMS = (("scipy_sgemm_64_", "scipy_dgemm_64_"), ("sgemm_64_", "dgemm_64_"), ("sgemm64_", "dgemm64_"))


def _use_numpy_blas(libraries):
    """Run the team's GEMMs on NumPy's own OpenBLAS where it has the ILP64 Fortran GEMMs, else on
    SciPy's (the module's default).  Why: the two wheels bundle different OpenBLAS releases, and
    on a Xeon (Sapphire Rapids class) NumPy's 0.3.31 ran the transformer's MLP products
    (2048x128 @ 128x512, one thread) at 135 GFLOP/s where SciPy's 0.3.30 ran them at 94
    (BENCHMARKS.md); it is also the library `a @ b` runs on everywhere else in the engine."""
    import ctypes
    numpy_dir = os.path.dirname(os.path.dirname(os.path.abspath(np.__file__)))
    for lib in libraries:
        path = os.path.abspath(getattr(lib, "filepath", "") or "")
        if getattr(lib, "internal_api", None) != "openblas" or not (
                path.startswith(os.path.join(numpy_dir, "numpy.libs"))
                or path.startswith(os.path.join(numpy_dir, "numpy") + os.sep)):
            continue
        try:
            library = ctypes.CDLL(path)     # already loaded: the same handle NumPy uses
        except OSError:
            continue
        for single, double in NUMPY_BLAS_GEMMS:
            try:
                addresses = [ctypes.cast(getattr(library, name), ctypes.c_void_p).value for name in (single, double)]
            except AttributeError:
                continue
            _team_gemm.use_blas(*addresses)
            _state["gemm"] = f"NumPy's OpenBLAS ({single})"
            return


def matmul(a, b):
    """a @ b with NumPy's rules; stacks of equal batch shape and plain matrices on the team."""
    threads = _state["threads"]
    if (threads < 2 or a.dtype != b.dtype or a.dtype not in (np.float32, np.float64)
            or a.ndim < 2 or b.ndim < 2 or a.shape[:-2] != b.shape[:-2] or a.shape[-1] != b.shape[-2]):
        return a @ b
    batch_shape, (M, K), N = a.shape[:-2], a.shape[-2:], b.shape[-1]
    batch = int(np.prod(batch_shape)) if batch_shape else 1
    if batch * M * N * K < TEAM_MIN_WORK:
        return a @ b
    a3, b3 = a.reshape(batch, M, K), b.reshape(batch, K, N)   # views, except merged batch axes
    out = np.empty((batch, M, N), dtype=a.dtype)
    with _holding:
        held = [(lib, lib.num_threads) for lib in _blas_libraries()]
        for lib, _ in held:
            lib.set_num_threads(1)
        try:
            done = _team_gemm.matmul3(a3, b3, out, threads)
        finally:
            for lib, n in held:
                lib.set_num_threads(n)
    if not done:
        return a @ b
    return out.reshape(*batch_shape, M, N)
