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

COMPILED = ("_recurrence", "_conv", "_softmax", "_activation")


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
