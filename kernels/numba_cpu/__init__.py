"""Numba @njit CPU kernels: each family module is thin Python wrappers over compiled loops.

Kernels are compiled on first call (`cache=True` keeps the machine code in __pycache__ for the
next process); importing this package compiles nothing and does not import numba either.
"""


def unavailable_reason():
    """None when numba and SciPy import (numba's np.dot calls SciPy's BLAS), else why not.
    Importing them compiles nothing."""
    try:
        import numba  # noqa: F401
    except Exception as exc:  # ImportError, or a numba built against another NumPy
        return f"numba does not import ({type(exc).__name__}: {exc})".splitlines()[0]
    try:
        import scipy.linalg.cython_blas  # noqa: F401
    except Exception as exc:
        return f"scipy does not import; numba's np.dot needs its BLAS ({type(exc).__name__}: {exc})".splitlines()[0]
    return None
