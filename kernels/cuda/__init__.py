"""CUDA kernels (Numba @cuda.jit) for the hot-loop families, on CuPy arrays.

Big matrix products go through `xp.matmul` (cuBLAS on CuPy); what is left of each hot
loop, the per-element work between the GEMMs, is one fused kernel per step:
`recurrence` (gate arithmetic and state update per time step), `conv` (im2col / col2im
around the GEMMs, and pooling), `softmax` (one block per row, shared-memory reductions);
`activation` (GELU) is the reference's CuPy element-wise code; `normalization`
(LayerNorm) one block per row, as softmax.

Without a GPU the kernels still run under Numba's CUDA simulator
(NUMBA_ENABLE_CUDASIM=1 set before numba is imported), on NumPy arrays; that is how
tests/cudasim checks them.  This file imports nothing heavy: numba is imported only
when the registry asks `unavailable_reason()` or loads a family module.
"""


def unavailable_reason():
    """None when the cuda backend can run here, else a one-line reason."""
    try:
        from numba import config, cuda
    except Exception as exc:  # ImportError, or numba-cuda failing to load its bindings
        return f"numba.cuda does not import ({type(exc).__name__}: {exc}); pip install tinygrad_seq[gpu]".splitlines()[0]
    if not (config.ENABLE_CUDASIM or cuda.is_available()):
        return "no GPU: numba.cuda.is_available() is False"
    try:
        import cupy  # noqa: F401
    except ImportError:
        return "CuPy not installed: pip install tinygrad_seq[gpu]"
    except Exception as exc:  # a CuPy built for another CUDA version fails here
        return f"CuPy does not import ({type(exc).__name__}: {exc})".splitlines()[0]
    return None
