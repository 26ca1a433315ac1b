"""Exact GELU and ReLU, Cython backend: argument checks from the reference, loops in
_activation.pyx (ReLU of a dtype other than float32/float64 is the reference's)."""
import numpy as np

from tinygrad_seq.kernels.reference import activation as reference
from tinygrad_seq.kernels.reference.activation import check_activation_args, check_relu_grad_args

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


def _compiled(*arrays):
    return all(a.dtype == arrays[0].dtype and a.dtype in (np.float32, np.float64) for a in arrays)


def relu_forward(x):
    """y = max(x, 0)."""
    if not _compiled(x):
        return reference.relu_forward(x)
    flat = _flat(x)
    return _activation.relu(flat, flat, False).reshape(x.shape)


def relu_backward(dy, y):
    """dx = dy * [y > 0]."""
    check_relu_grad_args(dy, y)
    if not _compiled(dy, y):
        return reference.relu_backward(dy, y)
    return _activation.relu(_flat(y), _flat(dy), True).reshape(y.shape)
