"""Matrix products for the Numba backend: NumPy's (reference/matmul.py).  Numba's own np.dot
calls SciPy's BLAS with no gain over NumPy's, and Numba has no persistent thread team to share."""
from tinygrad_seq.kernels.reference.matmul import matmul  # noqa: F401
