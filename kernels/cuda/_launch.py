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
"""
from numba import config, cuda

from tinygrad_seq.device import is_cupy_array

SIMULATOR = bool(config.ENABLE_CUDASIM)
THREADS_PER_BLOCK = 32 if SIMULATOR else 256
MAX_BLOCKS = 2 if SIMULATOR else 4096


def blocks_for(n):
    """Blocks of THREADS_PER_BLOCK threads for n work items (grid-stride loops do the rest)."""
    return max(1, min(MAX_BLOCKS, -(-n // THREADS_PER_BLOCK)))


def kernel_arg(a):
    """What a kernel is given for `a`: a device view of a CuPy array, anything else as is."""
    return cuda.as_cuda_array(a, sync=False) if is_cupy_array(a) else a


def launch(kernel, n, *args):
    """Run an element-wise grid-stride `kernel` over n work items."""
    kernel[blocks_for(n), THREADS_PER_BLOCK](*[kernel_arg(a) for a in args])
