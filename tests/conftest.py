# tinygrad_seq before anything imports numpy: it sets OPENBLAS_THREAD_TIMEOUT, which NumPy's
# OpenBLAS reads only when it loads (see tinygrad_seq/__init__.py).
import tinygrad_seq  # noqa: F401
