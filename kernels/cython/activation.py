"""Exact GELU, Cython backend: argument checks from the reference, loops in _activation.pyx."""
import numpy as np

from tinygrad_seq.kernels.reference.activation import check_activation_args

from . import _activation


def _flat(a):
    return np.ascontiguousarray(a).reshape(-1)


def gelu_forward(x):
    """(y, cdf): y = x * Phi(x), cdf = Phi(x)."""
    check_activation_args("gelu_forward", x)
    y, cdf = _activation.gelu_forward(_flat(x))
    return y.reshape(x.shape), cdf.reshape(x.shape)


def gelu_backward(dy, x, cdf):
    """dx = dy * (Phi(x) + x * phi(x))."""
    check_activation_args("gelu_backward", dy, x, cdf)
    return _activation.gelu_backward(_flat(dy), _flat(x), _flat(cdf)).reshape(x.shape)
