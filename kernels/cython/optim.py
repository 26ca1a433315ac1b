"""Adam's update, Cython backend: argument checks, scalars and the fallback for arrays the loop
cannot update in place are the reference's (compiled_adam_update); the fused loop is _optim.pyx's."""
from tinygrad_seq.kernels.reference.optim import compiled_adam_update

from . import _optim

# From this many elements a parameter's update is shared by the OpenMP team; below it the calling
# thread does it alone.  The pass is memory-bound and takes ~0.5 ns per float32 element from L3, so
# the team pays only once the arrays leave the cache: on the 2-core EPYC, loaded by other jobs,
# waking the team cost more than it saved at every size up to 1M elements (262k, the lstm_lm's
# largest weight: 0.13 ms alone, 0.4-1.2 ms on the team), and from 2M the team's best runs were
# 1.3-1.6x faster than the calling thread's, its medians equal.
TEAM_MIN_SIZE = 1 << 21


def _fused(p, g, m, v, v_max, scalars):
    # without amsgrad the loop never touches v_max: v stands in for the typed argument
    _optim.adam_update(p, g, m, v, v if v_max is None else v_max, v_max is not None, scalars,
                       p.size >= TEAM_MIN_SIZE)


adam_update = compiled_adam_update(_fused)
