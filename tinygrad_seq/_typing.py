"""Names for the argument types that the public API's hints share (hints only: nothing here is
checked at run time)."""
from typing import Any, Tuple, Union

import numpy as np

# What np.dtype() accepts: "float32", np.float64, np.dtype("int64"), ...
DTypeLike = Union[str, type, np.dtype, None]
# "cpu", "cuda" or "cuda:0"
DeviceLike = str
# What Tensor() and tgs.tensor() accept: a Tensor, a NumPy (or CuPy) array, nested lists, a number
ArrayLike = Any
# A size per spatial dimension, or one for all of them (kernel_size=3 or (3, 5)), as in PyTorch
IntOrTuple = Union[int, Tuple[int, ...]]
