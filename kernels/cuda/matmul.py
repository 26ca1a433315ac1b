"""Matrix products on the GPU: the reference on CuPy arrays (cuBLAS)."""
from tinygrad_seq.kernels.reference.matmul import matmul  # noqa: F401
