"""Process-wide settings that speed tinygrad_seq up, made only when asked for.

`import tinygrad_seq` changes nothing in the process: no environment variable, no allocator
option.  The engine does not need these settings to share the cores well: on the cython
backend its matrix products run on the compiled kernels' own thread team (the `matmul` kernel
family, kernels/cython/matmul.py), so NumPy's OpenBLAS pool is never woken whatever was
imported first.  They are extra speed on top, for a process that belongs to tinygrad_seq:
freed memory kept for reuse, and idle threads that sleep sooner.  The `tgs` command applies them to itself;
a script opts in with one call, as early as possible:

    import tinygrad_seq.runtime
    tinygrad_seq.runtime.configure_for_speed()

This module imports nothing heavy (no NumPy), so the call can come before NumPy loads.
"""
import functools
import os
import sys

# name -> (value, when the library reads it)
THREAD_SETTINGS = {
    # OpenBLAS worker threads spin for 2**28 cycles (~0.1 s) after every call before they sleep,
    # taking a core from whatever runs next (the compiled kernels' OpenMP team, SciPy's OpenBLAS
    # under the Numba kernels); 2**4 cycles lets them sleep at once.
    "OPENBLAS_THREAD_TIMEOUT": ("4", "numpy"),
    # GNU OpenMP's idle threads spin 300,000 times after a parallel region; 10,000 still covers
    # the wait at the recurrent kernels' per-step barrier.
    "GOMP_SPINCOUNT": ("10000", "libgomp"),
}
# the variables configure_for_speed() set in this process (not those the user had set)
SET_HERE = []


def _loaded(library):
    if library == "numpy":
        return "numpy" in sys.modules
    try:
        with open("/proc/self/maps") as maps:
            return any(library in line for line in maps)
    except OSError:   # not Linux: assume the worst, so the caller hears the setting may be late
        return True


def configure_for_speed(allocator=True, threads=True):
    """Tune this process for tinygrad_seq; returns a list of what it changed.

    threads:   sets OPENBLAS_THREAD_TIMEOUT=4 and GOMP_SPINCOUNT=10000 in os.environ unless
               already set (a value the user set is kept).  Each library reads its variable
               once, when it loads, so the setting takes effect only if NumPy (for OpenBLAS)
               or the first OpenMP kernel (for GOMP) has not loaded yet: call this first.
    allocator: on Linux with glibc, keeps freed array memory in the process for the next
               array of that size (mmap threshold 32 MB, trim threshold 256 MB).  Every op
               allocates its result, and the big ones (4 MB activations of a Transformer) would
               otherwise be mapped fresh from the kernel and page-faulted in each step.  The
               price is some fragmentation.  TGS_MALLOPT=0 in the environment skips it.
    """
    changed = []
    if threads:
        for name, (value, reader) in THREAD_SETTINGS.items():
            if name in os.environ:
                continue
            os.environ[name] = value
            SET_HERE.append(name)
            late = " (too late: already loaded)" if _loaded(reader) else ""
            changed.append(f"{name}={value}{late}")
    if allocator and _keep_freed_memory():
        changed.append("mallopt(M_MMAP_THRESHOLD=32 MiB, M_TRIM_THRESHOLD=256 MiB)")
    return changed


def _memory_reuse_turned_off():
    """TGS_MALLOPT=0: neither glibc's settings nor the engine's own handler keep freed memory."""
    return os.environ.get("TGS_MALLOPT", "1") == "0"


def _keep_freed_memory():
    if not sys.platform.startswith("linux") or _memory_reuse_turned_off():
        return False
    import ctypes
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # a C library without mallopt (musl)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3   # from glibc's <malloc.h>
    ok = mallopt(m_mmap_threshold, 32 * 2 ** 20)   # glibc's largest allowed value
    ok &= mallopt(m_trim_threshold, 256 * 2 ** 20)
    return bool(ok)


# ------------------------------------------------------------------ the engine's own memory
# Not a process setting: NumPy takes a memory handler per context (thread, asyncio task), and
# the engine makes its own one current only around its own work (each op's forward, the
# backward sweep, an optimiser step), so only the arrays it creates there come from it
# (kernels/cython/_memory.pyx: freed blocks of 1 MiB and more are kept for the next array of
# the same size).  Without it, a script that did not call configure_for_speed() page-faulted
# every big array in afresh each step (transformer: ~5,000 faults and 15-25% of the step).
# TGS_MALLOPT=0 turns it off as well.
_reusing = []     # [the compiled module] once looked up, [None] when unavailable or turned off


def _reusing_module():
    if not _reusing:
        module = None
        if not _memory_reuse_turned_off():
            try:
                from tinygrad_seq.kernels.cython import _memory as module
            except ImportError:      # not compiled here: arrays come from NumPy's default
                module = None
        _reusing.append(module)
    return _reusing[0]


def enter_engine_memory():
    """Make the engine's reusing memory handler current; returns what to give leave_engine_memory."""
    module = _reusing_module()
    return None if module is None else module.use_reusing_handler()


def leave_engine_memory(previous):
    """Make the handler that enter_engine_memory replaced current again."""
    if previous is not None:
        _reusing[0].restore(previous)


def in_engine_memory(function):
    """Decorator: the arrays `function` creates come from the engine's handler."""
    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        previous = enter_engine_memory()
        try:
            return function(*args, **kwargs)
        finally:
            leave_engine_memory(previous)
    return wrapped
