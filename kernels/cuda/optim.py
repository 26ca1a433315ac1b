"""Adam's (and AdamW's) update of one parameter in one CUDA kernel (contract: reference/optim.py).

The optimiser's array code (the reference) is about eight element-wise passes over the
parameter, each a kernel launch and a trip through memory on a GPU; here each thread reads
p, g, m, v (and the running max of v) once and writes them back, with the reference's
arithmetic in its order (adam_element, which the Numba CPU loop compiles too), in the
parameter's float type, on the scalars it computes (adam_scalars, rounded to that type as the
array code rounds them).  Argument checks and the fallback for arrays the kernel cannot update
in place are the reference's (compiled_adam_update).
"""
from numba import cuda

from tinygrad_seq.device import xp_of
from tinygrad_seq.kernels.reference.optim import adam_element, compiled_adam_update

from ._launch import launch

_element = cuda.jit(device=True)(adam_element)


@cuda.jit(cache=True)
def _adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, decay, coupled, beta1, one_minus_beta1,
               beta2, one_minus_beta2, step_size, bias_correction2_sqrt, eps, amsgrad):
    zero = param.dtype.type(0)
    with_coupled = coupled != zero
    for k in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        param[k], exp_avg[k], exp_avg_sq[k], top = _element(
            param[k], grad[k], exp_avg[k], exp_avg_sq[k], max_exp_avg_sq[k] if amsgrad else zero, amsgrad,
            with_coupled, decay, coupled, beta1, one_minus_beta1, beta2, one_minus_beta2, step_size,
            bias_correction2_sqrt, eps)
        if amsgrad:
            max_exp_avg_sq[k] = top


def _fused(p, g, m, v, v_max, scalars):
    amsgrad = v_max is not None
    if not amsgrad:     # never read then; not v either, as the simulator writes every argument back
        v_max = xp_of(p).empty(1, dtype=p.dtype)
    real = p.dtype.type
    launch(_adam_step, p.size, p, g, m, v, v_max, *(real(s) for s in scalars), amsgrad)


adam_update = compiled_adam_update(_fused)
