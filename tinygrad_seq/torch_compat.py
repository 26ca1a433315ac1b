"""PyTorch's module-level names that tutorials reach for: dtype aliases, `device`, `cuda`,
`Generator`, and `torch.f(tensor, ...)` spellings of the Tensor methods.

Each function here is the Tensor method of the same name (`tgs.sort(x, 1)` is `x.sort(1)`),
so the op and its documentation live in one place, tensor.py.
"""
import builtins

import numpy as np

from .device import cupy_or_none, normalize_device
from .tensor import Tensor, return_types  # noqa: F401 (re-exported)

# dtypes, as the NumPy dtype names (these shadow float/int/bool in this module: use builtins.*)
#  the engine uses everywhere (`x.dtype == tgs.long` holds)
float16 = half = "float16"
float32 = float = "float32"
float64 = double = "float64"
uint8 = "uint8"
int8 = "int8"
int16 = short = "int16"
int32 = int = "int32"
int64 = long = "int64"
bool = "bool"


class device:
    """tgs.device("cpu") / ("cuda") / ("cuda:0"): accepted wherever a device name is."""

    def __init__(self, type, index=None):
        self.type = normalize_device(type)
        self.index = index if index is not None else (builtins.int(str(type).split(":")[1]) if ":" in str(type) else None)

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self):
        return f"device(type={self.type!r}" + ("" if self.index is None else f", index={self.index}") + ")"

    def __eq__(self, other):
        return normalize_device(str(other)) == self.type

    def __hash__(self):
        return hash(self.type)


class cuda:
    """tgs.cuda.is_available(): whether CuPy sees a GPU (the engine's 'cuda' device)."""

    @staticmethod
    def is_available():
        return cupy_or_none() is not None

    @staticmethod
    def device_count():
        return cupy_or_none().cuda.runtime.getDeviceCount() if cupy_or_none() is not None else 0

    @staticmethod
    def manual_seed(seed):
        from .random import manual_seed
        manual_seed(seed)

    manual_seed_all = manual_seed


class Generator:
    """A random generator of its own, for DataLoader(shuffle=True, generator=g), randperm,
    randint and multinomial: `g = tgs.Generator().manual_seed(0)`."""

    def __init__(self, device="cpu"):
        self.rng = np.random.default_rng()
        self._seed = None

    def manual_seed(self, seed):
        self._seed = builtins.int(seed)
        self.rng = np.random.default_rng(self._seed)
        return self

    def initial_seed(self):
        return self._seed


def _method_as_function(name):
    def function(input, *args, **kwargs):
        return getattr(input, name)(*args, **kwargs)
    function.__name__ = function.__qualname__ = name
    function.__doc__ = f"torch.{name}(input, ...): the same as input.{name}(...) (see Tensor.{name})."
    return function


TENSOR_FUNCTIONS = (
    "abs", "acos", "acosh", "allclose", "amax", "amin", "any", "all", "argmax", "argmin", "argsort", "asin",
    "asinh", "atan", "atanh", "ceil", "chunk", "clamp", "clip", "cos", "cosh", "count_nonzero", "cumsum",
    "diag", "diag_embed", "diagonal", "div", "dot", "equal", "erf", "exp", "exp2", "expm1", "flatten", "flip",
    "fliplr", "flipud", "floor", "floor_divide", "gather", "index_select", "isclose", "isfinite", "isinf",
    "isnan", "kthvalue", "lerp", "log", "log10", "log1p", "log2", "logical_and", "logical_not",
    "logical_or", "logsumexp", "masked_fill", "masked_select", "matmul", "max", "maximum", "mean", "median", "min",
    "minimum", "mm", "bmm", "mv", "movedim", "moveaxis", "mul", "narrow", "neg", "nonzero", "norm", "numel",
    "outer", "permute", "pow", "prod", "reciprocal", "remainder", "repeat_interleave", "reshape", "relu",
    "roll", "round", "scatter", "scatter_add", "index_add", "unique", "argwhere", "rsqrt", "sigmoid", "sign", "sin", "sinh", "softmax", "log_softmax", "sort", "split",
    "sqrt", "square", "squeeze", "std", "sub", "sum", "swapaxes", "t", "take_along_dim", "tan", "tanh",
    "tile", "topk", "transpose", "tril", "triu", "trunc", "unbind", "unflatten", "unsqueeze", "var",
)
for _name in TENSOR_FUNCTIONS:
    globals()[_name] = _method_as_function(_name)
del _name


def einsum(equation, *operands):
    """Einstein summation with an explicit output ('bij,bjk->bik'); differentiable in every operand."""
    from .ops import Einsum
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    return Einsum.apply(*operands, equation=equation)


def add(input, other, *, alpha=1):
    return (input if isinstance(input, Tensor) else Tensor(input)).add(other, alpha=alpha)


def numel(input):
    return input.numel()


def clone(input):
    return input.clone()


def broadcast_to(input, shape):
    return input.expand(shape)


__all__ = ["float16", "half", "float32", "float", "float64", "double", "uint8", "int8", "int16", "short",
           "int32", "int", "int64", "long", "bool", "device", "cuda", "Generator", "return_types",
           "add", "einsum", "numel", "clone", "broadcast_to", *TENSOR_FUNCTIONS]
