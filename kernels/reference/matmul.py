"""Matrix products, the contract every backend's `matmul` keeps:

    matmul(a, b) = a @ b        (NumPy's / CuPy's rules: stacks of matrices, broadcasting, 1-D)

The engine runs every product of arrays through this family (`matmul_rows` in
tinygrad_seq/ops/linear.py), so that a backend can run the GEMMs on the same threads as its
other kernels (cython/matmul.py).
Here: the array library's own matmul (NumPy's OpenBLAS, cuBLAS on CuPy).
"""


def matmul(a, b):
    """a @ b."""
    return a @ b
