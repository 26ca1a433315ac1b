"""Adam's update, Cython backend: argument checks, scalars and the fallback for arrays the loop
cannot update in place are the reference's (compiled_adam_update); the fused loop is _optim.pyx's."""
from tinygrad_seq.kernels.reference.optim import compiled_adam_update

from . import _optim


def _fused(p, g, m, v, v_max, scalars):
    # without amsgrad the loop never touches v_max: v stands in for the typed argument
    _optim.adam_update(p, g, m, v, v if v_max is None else v_max, v_max is not None, scalars)


adam_update = compiled_adam_update(_fused)
