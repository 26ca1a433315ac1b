"""Adam's update compiled with Numba (contract: reference/optim.py): one serial pass that reads
each element's p, g, m, v (and v_max) once and writes them back, where the array code makes
about eight passes with temporaries.

Serial, as the other memory-bound Numba loops are (see activation.py).  The element's arithmetic
is the reference's adam_element (which the CUDA kernel compiles too); the scalars come from the
reference's adam_scalars as float64 and are rounded to the parameter's dtype first, as NumPy
rounds a Python float meeting a float32 array, so float32 parameters are updated in float32.
Argument checks and the fallback for arrays the loop cannot update in place are the reference's
(compiled_adam_update).
"""
from numba import njit

from tinygrad_seq.kernels.reference.optim import adam_element, compiled_adam_update

_JIT = dict(cache=True, error_model="numpy", fastmath={"contract"})
_element = njit(inline="always", **_JIT)(adam_element)


@njit(**_JIT)
def _adam_loop(p, g, m, v, v_max, amsgrad, scalars):
    real = p.dtype.type
    decay, coupled = real(scalars[0]), real(scalars[1])
    beta1, one_minus_beta1 = real(scalars[2]), real(scalars[3])
    beta2, one_minus_beta2 = real(scalars[4]), real(scalars[5])
    step_size, bias_correction2_sqrt, eps = real(scalars[6]), real(scalars[7]), real(scalars[8])
    with_coupled = coupled != real(0)
    for j in range(p.shape[0]):
        p[j], m[j], v[j], top = _element(p[j], g[j], m[j], v[j], v_max[j] if amsgrad else real(0), amsgrad,
                                         with_coupled, decay, coupled, beta1, one_minus_beta1, beta2,
                                         one_minus_beta2, step_size, bias_correction2_sqrt, eps)
        if amsgrad:
            v_max[j] = top


def _fused(p, g, m, v, v_max, scalars):
    # without amsgrad the loop never touches v_max: v stands in for the typed argument
    _adam_loop(p, g, m, v, v if v_max is None else v_max, v_max is not None, scalars)


adam_update = compiled_adam_update(_fused)
