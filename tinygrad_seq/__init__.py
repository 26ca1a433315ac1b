"""tinygrad_seq: a readable autodiff engine for classic deep-learning architectures.

    import tinygrad_seq as tgs
    x = tgs.randn(4, 3, requires_grad=True)
    loss = (x @ tgs.randn(3, 2)).relu().sum()
    loss.backward()          # x.grad now holds d loss / d x

Importing this package compiles nothing: the Numba, Cython and CUDA kernels load on first use.
"""
from .backend import available_backends, backend, set_backend  # noqa: F401
from .creation import (arange, cat, concat, eye, full, one_hot, ones, ones_like, rand, randint,  # noqa: F401
                       randn, stack, tensor, where, zeros, zeros_like)
from .gradcheck import GradcheckError, gradcheck  # noqa: F401
from .random import manual_seed  # noqa: F401
from .tensor import Function, Tensor, enable_grad, is_grad_enabled, no_grad  # noqa: F401
from .value import Value  # noqa: F401
from . import nn  # noqa: F401,E402
from . import optim  # noqa: F401,E402

float32 = "float32"
float64 = "float64"
int64 = "int64"
__version__ = "0.1.0"
