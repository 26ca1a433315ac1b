"""Cython kernels: kernels/cython/_*.pyx, compiled by setup.py, behind thin Python wrappers
(recurrence.py, conv.py, softmax.py, activation.py) that check their arguments with the
reference's own checks (the C loops run without bounds checks, so a wrong shape must never
reach them).

The OpenMP regions use every core unless TGS_CYTHON_THREADS (or `set_num_threads`) says
otherwise (why that pays, and what it needs: _common.pxi).

The compiled modules are optional: without a C compiler at install time they are simply
missing, `unavailable_reason()` says so and the registry falls back to another backend.
"""
import importlib
import os
import sys

COMPILED = ("_recurrence", "_conv", "_softmax", "_activation")
# Idle threads of the kernels' OpenMP team spin this many times before they sleep (GNU OpenMP's
# default, 300,000 pause instructions, is milliseconds on AMD Zen: after every kernel and team GEMM
# the team's idle thread held a core the rest of the step needed; numpy-first transformer step
# on a loaded 2-core EPYC: 116-411 ms with the default, 79-170 ms with this).
TEAM_SPINCOUNT = "10000"


def _load_openmp_with_brief_spinning():
    """Load GNU OpenMP for the kernels with GOMP_SPINCOUNT=TEAM_SPINCOUNT, which it reads only
    as it loads, and take the variable out of the environment again: the setting belongs to the
    kernels' team, and nothing else (another library, a child process) sees a changed environment.
    Left alone when OpenMP is already loaded or the user chose a spin count or wait policy."""
    if not sys.platform.startswith("linux") or {"GOMP_SPINCOUNT", "OMP_WAIT_POLICY"} & set(os.environ):
        return
    try:
        with open("/proc/self/maps") as maps:
            # any libgomp.so.1 (PyTorch ships one of that name): the modules would share it
            if any(os.path.basename(line.rstrip()).startswith("libgomp.so.1") for line in maps):
                return
        import ctypes
        os.environ["GOMP_SPINCOUNT"] = TEAM_SPINCOUNT
        try:
            ctypes.CDLL("libgomp.so.1")     # the library the compiled modules link (their DT_NEEDED)
        finally:
            del os.environ["GOMP_SPINCOUNT"]
    except OSError:       # no /proc, or no GNU OpenMP: the modules load whatever they link
        pass


_load_openmp_with_brief_spinning()


def unavailable_reason():
    """None when every compiled module imports, else a one-line reason (compiles nothing)."""
    for name in COMPILED:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except Exception as exc:  # ImportError; ValueError when built against another NumPy ABI
            detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
            return (f"not compiled: run `pip install -e .` on a machine with a C compiler "
                    f"({name}: {detail})")
    return None


def set_num_threads(n):
    """Threads for every compiled module's OpenMP regions (1 = serial; default: all cores)."""
    for name in COMPILED:
        importlib.import_module(f"{__name__}.{name}").set_num_threads(n)
    try:                              # the matmul family's team (optional: matmul.py)
        importlib.import_module(f"{__name__}.matmul").set_num_threads(n)
    except ImportError:
        pass
