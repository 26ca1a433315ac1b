"""How the CUDA kernels are launched: grid sizes, and arrays handed to @cuda.jit kernels.

Every element-wise kernel here is written as a grid-stride loop,

    for k in range(cuda.grid(1), n, cuda.gridsize(1)): ...

so any grid covers any n.  On a GPU the grid is as large as the work (up to a cap that
already fills every SM); under Numba's CUDA simulator, which runs each thread's body in
Python, a small grid keeps a launch to a few dozen threads that loop over the work.

Arrays: on a GPU the engine's arrays are CuPy arrays.  They are handed to kernels as
zero-copy Numba device views through the CUDA array interface (`sync=False`: the
kernels and CuPy's matmuls run on the same default stream, so they are already
ordered).  Under the simulator the arrays are NumPy and are passed as they are.

A Numba launch costs host time for every argument (its type is looked up, then it is
unpacked into pointer, shape and strides), a few microseconds per array: in a time loop
of one launch per step that is comparable to the step's GEMM.  `step_launcher` pays the
type look-up once per loop, and the recurrences pack what they write into one array.
"""
import contextlib

from numba import config, cuda

from tinygrad_seq.device import is_cupy_array

SIMULATOR = bool(config.ENABLE_CUDASIM)
THREADS_PER_BLOCK = 32 if SIMULATOR else 256
MAX_BLOCKS = 2 if SIMULATOR else 4096

_launch_log = None   # a list while recording_launches() is active


def blocks_for(n):
    """Blocks of THREADS_PER_BLOCK threads for n work items (grid-stride loops do the rest)."""
    return max(1, min(MAX_BLOCKS, -(-n // THREADS_PER_BLOCK)))


def kernel_arg(a):
    """What a kernel is given for `a`: a device view of a CuPy array, anything else as is."""
    return cuda.as_cuda_array(a, sync=False) if is_cupy_array(a) else a


def _log(kernel, args):
    if _launch_log is not None:
        arrays = sum(1 for a in args if hasattr(a, "shape") and getattr(a, "ndim", 0) > 0)
        _launch_log.append((kernel.py_func.__name__, arrays))


@contextlib.contextmanager
def recording_launches():
    """A list that receives (kernel name, number of array arguments) for each kernel launched
    inside the block: how tests count launches per training step."""
    global _launch_log
    saved, _launch_log = _launch_log, []
    try:
        yield _launch_log
    finally:
        _launch_log = saved


def launch(kernel, n, *args):
    """Run an element-wise grid-stride `kernel` over n work items."""
    args = [kernel_arg(a) for a in args]
    _log(kernel, args)
    kernel[blocks_for(n), THREADS_PER_BLOCK](*args)


def step_launcher(kernel, n, *arrays):
    """A function of the remaining (scalar) arguments that launches `kernel` over n work items on
    `arrays` then those scalars: for a time loop's launches.  The arrays become device views
    once, and the kernel's compiled overload is picked once, at the first launch (Numba's
    dispatcher would otherwise type every argument again at every launch)."""
    views = [kernel_arg(a) for a in arrays]
    blocks = blocks_for(n)
    chosen = []

    def launch_step(*scalars):
        args = views + list(scalars)
        if not chosen:
            chosen.append(kernel.specialize(*args))
        _log(kernel, args)
        chosen[0][blocks, THREADS_PER_BLOCK](*args)
    return launch_step
