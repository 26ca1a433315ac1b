"""Adam's update, Cython backend: argument checks, scalars and the fallback for arrays the loop
cannot update in place are the reference's (compiled_adam_update); the fused loop is _optim.pyx's."""
from tinygrad_seq.kernels.reference.optim import compiled_adam_update

from . import _optim

# From this many elements a parameter's update is shared by the OpenMP team; below it (biases,
# norms, small heads) the calling thread does it alone, as waking the team costs more than it saves.
TEAM_MIN_SIZE = 1 << 15


def _fused(p, g, m, v, v_max, scalars):
    # without amsgrad the loop never touches v_max: v stands in for the typed argument
    _optim.adam_update(p, g, m, v, v if v_max is None else v_max, v_max is not None, scalars,
                       p.size >= TEAM_MIN_SIZE)


adam_update = compiled_adam_update(_fused)
