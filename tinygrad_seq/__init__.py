"""tinygrad_seq: a readable autodiff engine for classic deep-learning architectures.

    import tinygrad_seq as tgs
    x = tgs.randn(4, 3, requires_grad=True)
    loss = (x @ tgs.randn(3, 2)).relu().sum()
    loss.backward()          # x.grad now holds d loss / d x

Importing this package compiles nothing: the Numba, Cython and CUDA kernels load on first use.
"""
import os as _os
import sys as _sys

# NumPy loads OpenBLAS on import, and OpenBLAS reads OPENBLAS_THREAD_TIMEOUT only then.
_NUMPY_CAME_FIRST = "numpy" in _sys.modules and "OPENBLAS_THREAD_TIMEOUT" not in _os.environ
# OpenBLAS worker threads keep spinning for 2**28 cycles (~0.1 s) after each call before they
# sleep.  The engine's GEMMs run in NumPy's OpenBLAS, the Numba kernels' in SciPy's and the
# Cython kernels on their own OpenMP team, and on a 2-core machine the idle pool's spinning
# threads take the cores the busy one needs (lstm_lm training step on the numba backend:
# 197 ms -> 83 ms; on the cython backend ~2x).  2**4 cycles lets them sleep at once.  It must be
# set before NumPy loads OpenBLAS; a value already set is kept.
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
# The same for the OpenMP team of the Cython kernels: GNU OpenMP's idle threads spin 300,000
# times (milliseconds) before sleeping, slowing the NumPy GEMMs that follow every kernel call
# (lstm_lm step 95 -> 80 ms).  10,000 spins still covers the wait at the LSTM kernels'
# per-step barrier.  It must be set before libgomp loads; a value already set is kept.
_os.environ.setdefault("GOMP_SPINCOUNT", "10000")


def _reuse_freed_arrays():
    """Keep freed array memory in the process for the next array of that size (glibc only).

    Every op allocates its result, and the big ones (a Transformer's 16x128x512 activations
    are 4 MB) are above glibc's mmap threshold: each is mapped fresh from the kernel, which
    zeroes it page by page on first touch, and unmapped when freed, so the next step pays the
    same page faults again.  Serving them from the heap instead, and not handing the heap's
    top back to the kernel below 256 MB, made a transformer training step ~1.4x faster and
    the CNN step ~1.15x; the price is some fragmentation (peak memory of `tgs train charlm`,
    200 steps: 174-193 MiB with it, 162-178 without; PyTorch's: ~440).  TGS_MALLOPT=0 leaves
    the allocator alone."""
    import ctypes
    if not _sys.platform.startswith("linux") or _os.environ.get("TGS_MALLOPT", "1") == "0":
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # a C library without mallopt (musl)
        return
    m_trim_threshold, m_mmap_threshold = -1, -3   # from glibc's <malloc.h>
    mallopt(m_mmap_threshold, 32 * 2 ** 20)        # glibc's largest allowed value
    mallopt(m_trim_threshold, 256 * 2 ** 20)


_reuse_freed_arrays()

if _NUMPY_CAME_FIRST:
    import warnings as _warnings
    _warnings.warn("numpy was imported before tinygrad_seq, so its OpenBLAS threads keep spinning ~0.1 s "
                   "after every matrix product and slow the compiled kernels down (a char-LSTM trains "
                   "~2x slower); import tinygrad_seq first, or set OPENBLAS_THREAD_TIMEOUT=4 in the "
                   "environment", RuntimeWarning, stacklevel=2)

from .backend import available_backends, backend, set_backend  # noqa: F401
from .creation import (arange, cat, concat, eye, full, one_hot, ones, ones_like, rand, randint,  # noqa: F401
                       randn, stack, tensor, where, zeros, zeros_like)
from .gradcheck import GradcheckError, gradcheck  # noqa: F401
from .random import manual_seed  # noqa: F401
from .tensor import Function, Tensor, enable_grad, is_grad_enabled, no_grad  # noqa: F401
from .value import Value  # noqa: F401
from . import nn  # noqa: F401,E402
from . import optim  # noqa: F401,E402
from . import viz  # noqa: F401,E402

float32 = "float32"
float64 = "float64"
int64 = "int64"
from ._version import __version__  # noqa: E402  (one place: pyproject.toml, via the package metadata)
# PyTorch's module-level spellings (issue 20): torch.* functions, dtype aliases, device, cuda,
# save/load, utils.data.  They include float, int, bool, max, sum, ... (as torch.float, torch.max):
# from here on those names are tinygrad_seq's in this file, so this block stays last.
from .creation import (empty, empty_like, from_numpy, full_like, is_tensor, linspace, logspace,  # noqa: F401,E402
                       multinomial, rand_like, randn_like, randperm)
from .tensor import set_grad_enabled  # noqa: F401,E402
from .torch_compat import *  # noqa: F401,F403,E402
from .serialization import load, save  # noqa: F401,E402
from . import autograd, utils  # noqa: F401,E402
