"""Adam's (and AdamW's) update of one parameter in one CUDA kernel.

The optimiser's array code (tinygrad_seq/optim/optimizers.py) is about eight element-wise
passes over the parameter, each a kernel launch and a trip through memory on a GPU; here
each thread reads p, g, m, v (and the running max of v) once and writes them back:

    p <- p * decay                          (AdamW: decay = 1 - lr * weight_decay, else 1)
    g <- g + weight_decay * p               (Adam's coupled L2: weight_decay, else 0)
    m <- beta1 m + (1 - beta1) g
    v <- beta2 v + (1 - beta2) g^2          (amsgrad: v_max <- max(v_max, v), used below)
    p <- p - step_size * m / (sqrt(v) / bias_correction2_sqrt + eps)

with step_size = lr / (1 - beta1^t) and bias_correction2_sqrt = sqrt(1 - beta2^t), in that
order, in the parameter's float type (the scalars are passed in it), as the array code does.
"""
import math

from numba import cuda

from tinygrad_seq.device import xp_of

from ._launch import launch


@cuda.jit(cache=True)
def _adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, decay, weight_decay, beta1, beta2,
               step_size, bias_correction2_sqrt, eps, amsgrad):
    one = param.dtype.type(1)
    for k in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        p = param[k] * decay
        g = grad[k] + weight_decay * p
        m = exp_avg[k] * beta1 + (one - beta1) * g
        v = exp_avg_sq[k] * beta2 + (one - beta2) * g * g
        exp_avg[k] = m
        exp_avg_sq[k] = v
        if amsgrad:
            v = max(max_exp_avg_sq[k], v)
            max_exp_avg_sq[k] = v
        param[k] = p - step_size * m / (math.sqrt(v) / bias_correction2_sqrt + eps)


def _flat(a):
    """A 1-D view of contiguous `a` (None when a view is impossible: the update must be in place)."""
    return a.reshape(-1) if a.flags.c_contiguous else None


def adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, *, lr, beta1, beta2, eps, weight_decay,
                decoupled, step):
    """Update param, exp_avg, exp_avg_sq (and max_exp_avg_sq, None without amsgrad) in place; False
    (nothing done) when an array is not contiguous or the dtypes differ, for the caller's array code."""
    arrays = [param, grad, exp_avg, exp_avg_sq] + ([] if max_exp_avg_sq is None else [max_exp_avg_sq])
    if any(a.dtype != param.dtype or a.shape != param.shape for a in arrays):
        return False
    flat = [_flat(a) for a in arrays]
    if any(a is None for a in flat):
        return False
    if max_exp_avg_sq is None:      # not read with amsgrad off; not an alias of v either, as the
        flat.append(xp_of(param).empty(1, dtype=param.dtype))   # simulator writes every argument back
    real = param.dtype.type
    decay, coupled = (1 - lr * weight_decay, 0.0) if decoupled else (1.0, weight_decay)
    launch(_adam_step, param.size, *flat, real(decay), real(coupled), real(beta1), real(beta2),
           real(lr / (1 - beta1 ** step)), real((1 - beta2 ** step) ** 0.5), real(eps), max_exp_avg_sq is not None)
    return True
