"""Gradient clipping and weight penalties.

Exploding gradients (long recurrences especially) are tamed by rescaling the whole gradient
when its norm exceeds a threshold, `clip_grad_norm_`, which keeps its direction; or by
clipping each component, `clip_grad_value_`, which does not.

Regularisation adds a penalty on the weights to the loss:
    L1:  loss + lam * sum |w|        (drives weights to exactly zero: sparse models)
    L2:  loss + lam/2 * sum w^2      (weight decay: shrinks every weight towards zero)
The L2 penalty is what SGD's `weight_decay` applies directly to the gradient
(d/dw of wd/2 * w^2 = wd * w), so `SGD(..., weight_decay=wd)` equals adding
`wd / 2 * l2_penalty(params)` to the loss.
"""
import math

import numpy as np

from ..device import xp_of
from ..tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_", "l1_penalty", "l2_penalty",
           "parameters_to_vector", "vector_to_parameters"]


def _as_list(parameters):
    if isinstance(parameters, Tensor):
        return [parameters]
    return list(parameters)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Rescale the gradients in place so their joint norm is at most `max_norm`:
        total = ||(g_1, ..., g_n)||_p;   g_i <- g_i * min(1, max_norm / (total + 1e-6)).
    Returns the total norm before clipping (a scalar Tensor of the gradients' dtype, as PyTorch)."""
    grads = [p.grad.data for p in _as_list(parameters) if p.grad is not None]
    norm_type = float(norm_type)
    if not grads:
        return Tensor(0.0)
    xp = xp_of(grads[0])
    if norm_type == math.inf:
        total = max(float(xp.abs(g).max()) for g in grads)
    elif norm_type == 2.0:
        # one SIMD sum of products per gradient, accurate enough for a threshold and ~10x faster
        # than squaring into a float64 copy (3 ms of a char-LSTM step); einsum's own loop, not
        # BLAS's dot, which on long vectors wakes NumPy's OpenBLAS threads (they then spin ~0.1 s)
        total = math.sqrt(sum(float(xp.einsum("i,i->", flat, flat)) for flat in (g.ravel() for g in grads)))
    else:
        # a float64 accumulation: the sum of many powers in float32 loses digits
        total = float(sum(float((xp.abs(g).astype(np.float64) ** norm_type).sum()) for g in grads)) ** (1.0 / norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the gradients is {total}; "
                           "pass error_if_nonfinite=False to clip anyway")
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for g in grads:
            g *= g.dtype.type(coef)
    return Tensor(total, dtype=grads[0].dtype)


def clip_grad_value_(parameters, clip_value):
    """Clip every gradient component to [-clip_value, clip_value] in place."""
    for p in _as_list(parameters):
        if p.grad is not None:
            xp_of(p.grad.data).clip(p.grad.data, -clip_value, clip_value, out=p.grad.data)


def l1_penalty(parameters):
    """sum over parameters of sum |w|: add `lam * l1_penalty(model.parameters())` to the loss
    for L1 regularisation (its gradient is lam * sign(w))."""
    total = None
    for p in _as_list(parameters):
        term = p.abs().sum()
        total = term if total is None else total + term
    return total if total is not None else Tensor(0.0)


def l2_penalty(parameters):
    """sum over parameters of sum w^2: add `lam / 2 * l2_penalty(...)` to the loss for L2
    regularisation (gradient lam * w), the same as SGD's `weight_decay=lam`."""
    total = None
    for p in _as_list(parameters):
        term = (p * p).sum()
        total = term if total is None else total + term
    return total if total is not None else Tensor(0.0)


def parameters_to_vector(parameters):
    """All parameters flattened and joined into one 1-D array (a copy, no graph)."""
    arrays = [p.data.reshape(-1) for p in _as_list(parameters)]
    return Tensor(xp_of(arrays[0]).concatenate(arrays)) if arrays else Tensor(np.zeros(0, np.float32))


def vector_to_parameters(vector, parameters):
    """Copy consecutive slices of a 1-D vector back into the parameters, in place."""
    data = vector.data if isinstance(vector, Tensor) else vector
    start = 0
    for p in _as_list(parameters):
        p.data[...] = data[start:start + p.numel()].reshape(p.shape)
        start += p.numel()
    if start != data.shape[0]:
        raise ValueError(f"vector_to_parameters: the vector has {data.shape[0]} elements, the parameters {start}")
