"""Layer normalisation, Cython backend: argument checks from the reference, row loops in
_normalization.pyx (and _normalization.h)."""
import numpy as np

from tinygrad_seq.kernels.reference.normalization import check_layer_norm_args, check_layer_norm_grad_args

from . import _normalization


def _optional(a, dtype):
    """(array, present): the compiled functions take an array of x's dtype either way."""
    return (np.ascontiguousarray(a), True) if a is not None else (np.empty(0, dtype=dtype), False)


def layer_norm_forward(x, weight, bias, eps):
    """(y, mean, rstd): y = (x - mean) * rstd * weight + bias per row, rstd = 1 / sqrt(var + eps)."""
    check_layer_norm_args(x, weight, bias)
    (w, has_weight), (b, has_bias) = _optional(weight, x.dtype), _optional(bias, x.dtype)
    return _normalization.layer_norm_forward(np.ascontiguousarray(x), w, b, has_weight, has_bias, float(eps))


def layer_norm_backward(dy, x, weight, mean, rstd, need_affine):
    """(dx, dweight, dbias): dx = rstd (g - mean(g) - xhat mean(g xhat)), g = dy * weight."""
    check_layer_norm_grad_args(dy, x, weight, mean, rstd)
    w, has_weight = _optional(weight, x.dtype)
    return _normalization.layer_norm_backward(np.ascontiguousarray(dy), np.ascontiguousarray(x), w, has_weight,
                                              np.ascontiguousarray(mean), np.ascontiguousarray(rstd),
                                              bool(need_affine))
