"""Adam's (and AdamW's) update of one parameter, written once against `xp` (NumPy or CuPy).

In place on param, exp_avg (m), exp_avg_sq (v) and, with amsgrad, max_exp_avg_sq (v_max):

    p <- p * (1 - lr * weight_decay)            AdamW (decoupled), when weight_decay != 0
    g <- g + weight_decay * p                   Adam (coupled L2), when weight_decay != 0
    m <- beta1 m + (1 - beta1) g
    v <- beta2 v + (1 - beta2) g^2              amsgrad: v_max <- max(v_max, v), used for v below
    p <- p - step_size m / (sqrt(v) / bias_correction2_sqrt + eps)

with step_size = lr / (1 - beta1^t) and bias_correction2_sqrt = sqrt(1 - beta2^t) for step t
(1 on the first update).  Every scalar is computed in Python floats and rounded once to the
parameter's float type (`adam_scalars`), and the array arithmetic runs in that type, in the
order above: the compiled backends take the same scalars and keep the same order, so they
differ from this code by rounding (and fused multiply-adds) only.
"""
import math

from tinygrad_seq.device import xp_of

# The order of the scalars that adam_scalars returns and the compiled loops take.
ADAM_SCALARS = ("decay", "coupled_weight_decay", "beta1", "one_minus_beta1", "beta2", "one_minus_beta2",
                "step_size", "bias_correction2_sqrt", "eps")


def adam_scalars(lr, beta1, beta2, eps, weight_decay, decoupled, step):
    """The per-call scalars of the update, in ADAM_SCALARS order, as Python floats: decay is 1 and
    coupled_weight_decay 0 where that form of weight decay is off (the coupled term is then skipped,
    as 0 * inf would be NaN; multiplying by a decay of 1 is exact, so the loops always do it)."""
    decay = 1 - lr * weight_decay if decoupled and weight_decay else 1.0
    coupled = weight_decay if weight_decay and not decoupled else 0.0
    return (float(decay), float(coupled), float(beta1), float(1 - beta1), float(beta2), float(1 - beta2),
            float(lr / (1 - beta1 ** step)), float((1 - beta2 ** step) ** 0.5), float(eps))


def check_adam_args(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step):
    """ValueError unless param is a float array, grad has its shape, the state arrays its shape
    and dtype, and step (the count of updates, this one included) is at least 1."""
    if param.dtype.kind != "f":
        raise ValueError(f"adam_update: param must be a float array, got {param.dtype}")
    if tuple(grad.shape) != tuple(param.shape):
        raise ValueError(f"adam_update: grad of shape {tuple(grad.shape)} must have param's shape {tuple(param.shape)}")
    state = {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq, "max_exp_avg_sq": max_exp_avg_sq}
    for name, array in state.items():
        if array is not None and (tuple(array.shape) != tuple(param.shape) or array.dtype != param.dtype):
            raise ValueError(f"adam_update: {name} ({tuple(array.shape)}, {array.dtype}) must have param's "
                             f"shape and dtype ({tuple(param.shape)}, {param.dtype})")
    if step < 1:
        raise ValueError(f"adam_update: step must count this update (>= 1), got {step}")


def adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, *, lr, beta1, beta2, eps, weight_decay,
                decoupled, step):
    """The update above, in place; max_exp_avg_sq is None without amsgrad.  Any memory layout."""
    check_adam_args(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step)
    _array_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq,
                  adam_scalars(lr, beta1, beta2, eps, weight_decay, decoupled, step))


def _array_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, scalars):
    xp = xp_of(param)
    decay, coupled, beta1, one_minus_beta1, beta2, one_minus_beta2, step_size, bias_correction2_sqrt, eps = scalars
    if decay != 1:
        param *= decay
    if coupled:
        grad = grad + coupled * param
    exp_avg *= beta1
    exp_avg += one_minus_beta1 * grad
    exp_avg_sq *= beta2
    exp_avg_sq += one_minus_beta2 * grad * grad
    second = exp_avg_sq
    if max_exp_avg_sq is not None:
        second = xp.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
    denom = xp.sqrt(second) / bias_correction2_sqrt + eps
    param -= step_size * exp_avg / denom



def adam_element(p, g, m, v, v_max, amsgrad, with_coupled, decay, coupled, beta1, one_minus_beta1, beta2,
                 one_minus_beta2, step_size, bias_correction2_sqrt, eps):
    """(p, m, v, v_max) after one element's update: _array_update in scalar form and in its order,
    which the Numba CPU and CUDA kernels compile (plain Python on numbers of one float type;
    with_coupled: coupled != 0, decided by the caller in that type).  Without amsgrad v_max is
    returned as given."""
    p = p * decay                  # exact when decay is 1 (Adam), NaN and inf included
    if with_coupled:
        g = g + coupled * p
    m = m * beta1 + one_minus_beta1 * g
    v = v * beta2 + one_minus_beta2 * g * g
    second = v
    if amsgrad:
        if not (v > v_max or v != v):       # np.maximum: a NaN on either side wins
            second = v_max
        v_max = second
    return p - step_size * m / (math.sqrt(second) / bias_correction2_sqrt + eps), m, v, v_max


def flat_operands(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq):
    """(p, g, m, v, v_max) as the compiled backends' loops take them: 1-D views of the arrays they
    update in place, the gradient as a contiguous array of param's dtype (copied only when it is
    not one already), v_max None without amsgrad.  None when a loop cannot update these arrays in
    place (a dtype other than float32/float64, or an array that is not C-contiguous)."""
    xp = xp_of(param)
    in_place = [param, exp_avg, exp_avg_sq] + ([] if max_exp_avg_sq is None else [max_exp_avg_sq])
    if param.dtype not in (xp.float32, xp.float64) or not all(a.flags.c_contiguous for a in in_place):
        return None
    flat = [a.reshape(-1) for a in in_place] + [None]
    return flat[0], xp.ascontiguousarray(grad, dtype=param.dtype).reshape(-1), flat[1], flat[2], flat[3]


def compiled_adam_update(loop):
    """A compiled backend's adam_update around its fused `loop(p, g, m, v, v_max, scalars)`, which
    updates the 1-D arrays of flat_operands in place with the scalars of adam_scalars.  Arrays the
    loop cannot take (flat_operands None) get the reference's array code, which takes any layout."""
    def adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, *, lr, beta1, beta2, eps, weight_decay,
                    decoupled, step):
        check_adam_args(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step)
        flat = flat_operands(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq)
        scalars = adam_scalars(lr, beta1, beta2, eps, weight_decay, decoupled, step)
        if flat is None:
            _array_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, scalars)
        else:
            loop(*flat, scalars)
    adam_update.__doc__ = f"In place, one fused pass: reference/optim.py's update ({loop.__module__})."
    return adam_update
