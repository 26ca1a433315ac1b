"""Masked softmax and log-softmax, Cython backend: argument checks from the reference, loops in _softmax.pyx."""
import numpy as np

from tinygrad_seq.kernels.reference.softmax import (check_log_softmax_args, check_log_softmax_grad_args,
                                                    check_softmax_args, check_softmax_grad_args)

from . import _softmax


def softmax_forward(x, mask):
    """y = softmax(x) over the last axis; mask True = excluded (probability 0)."""
    check_softmax_args(x, mask)
    excluded = None if mask is None else np.ascontiguousarray(mask, dtype=bool).view(np.uint8)
    return _softmax.softmax_forward(np.ascontiguousarray(x), excluded)


def softmax_backward(dy, y):
    """dx = y * (dy - sum(dy * y, axis=-1, keepdims=True))."""
    check_softmax_grad_args(dy, y)
    return _softmax.softmax_backward(np.ascontiguousarray(dy), np.ascontiguousarray(y))


def log_softmax_forward(x):
    """y = (x - m) - log(sum(exp(x - m), axis=-1)), m = the row max."""
    check_log_softmax_args(x)
    return _softmax.log_softmax_forward(np.ascontiguousarray(x))


def log_softmax_backward(dy, y):
    """dx = dy - exp(y) * sum(dy, axis=-1, keepdims=True)."""
    check_log_softmax_grad_args(dy, y)
    return _softmax.log_softmax_backward(np.ascontiguousarray(dy), np.ascontiguousarray(y))
