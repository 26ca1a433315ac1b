"""Compiled kernels for the hot loops, one package per backend.

`reference` (NumPy or CuPy through `xp`) states each kernel's contract and is what every
other backend is tested against; `numba_cpu`, `cython` and `cuda` implement the same
functions.  The engine reaches them only through `tinygrad_seq.backend`.  Nothing in
here imports the engine's graph code.
"""
