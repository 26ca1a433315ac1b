"""Exact GELU and ReLU on the GPU: the reference itself, run on CuPy arrays.

Each line of reference/activation.py is one CuPy element-wise kernel (cupyx's erf, exp,
the products), already a single pass over the data on the device; a hand-written kernel
would only fuse those few passes.
"""
from tinygrad_seq.kernels.reference.activation import (gelu_backward, gelu_forward,  # noqa: F401
                                                       relu_backward, relu_forward)
