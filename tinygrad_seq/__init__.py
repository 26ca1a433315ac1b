"""tinygrad_seq: a readable autodiff engine for classic deep-learning architectures.

    import tinygrad_seq as tgs
    x = tgs.randn(4, 3, requires_grad=True)
    loss = (x @ tgs.randn(3, 2)).relu().sum()
    loss.backward()          # x.grad now holds d loss / d x

Importing this package compiles nothing and changes nothing in the process (no environment
variable, no allocator option; `tinygrad_seq.runtime.configure_for_speed()` makes those on
request).  Its names load on first use, so `import tinygrad_seq.runtime` or the `tgs` command
can run before NumPy loads; the Numba, Cython and CUDA kernels load when a kernel is first run.
"""
import importlib as _importlib
import sys as _sys
import types as _types

# public name -> the submodule that defines it
_EXPORTS = {
    **dict.fromkeys(("available_backends", "backend", "set_backend"), "backend"),
    **dict.fromkeys(("arange", "cat", "concat", "eye", "full", "one_hot", "ones", "ones_like", "rand",
                     "randint", "randn", "stack", "tensor", "where", "zeros", "zeros_like"), "creation"),
    **dict.fromkeys(("GradcheckError", "gradcheck"), "gradcheck"),
    "manual_seed": "random",
    **dict.fromkeys(("Function", "Tensor", "enable_grad", "is_grad_enabled", "no_grad"), "tensor"),
    "Value": "value",
    # PyTorch's module-level spellings (issue 20)
    **dict.fromkeys(("empty", "empty_like", "from_numpy", "full_like", "is_tensor", "linspace", "logspace",
                     "multinomial", "rand_like", "randn_like", "randperm"), "creation"),
    "set_grad_enabled": "tensor",
    **dict.fromkeys(("load", "save"), "serialization"),
}
_SUBMODULES = ("nn", "optim", "autograd", "utils", "viz")
# torch.* spellings (dtype aliases, device, cuda, float, int, bool, max, sum, ...): whatever
# tinygrad_seq.torch_compat.__all__ lists, looked up there when no name above matches.
_TORCH_COMPAT = "torch_compat"
# Submodules whose names the public API gives to something else: tgs.device is torch's device
# class (torch_compat), not the tinygrad_seq.device module of array-module helpers.
_SHADOWED_SUBMODULES = ("device",)

float32 = "float32"
float64 = "float64"
int64 = "int64"
from ._version import __version__  # noqa: E402  (one place: pyproject.toml, via the package metadata)
__all__ = sorted(_EXPORTS) + list(_SUBMODULES) + ["float32", "float64", "int64"]


def __getattr__(name):
    if name in _SUBMODULES:
        value = _importlib.import_module(f"{__name__}.{name}")
    elif name in _EXPORTS:
        value = getattr(_importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    elif not name.startswith("__") and name in _torch_names():
        value = getattr(_importlib.import_module(f"{__name__}.{_TORCH_COMPAT}"), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def _torch_names():
    return _importlib.import_module(f"{__name__}.{_TORCH_COMPAT}").__all__


def __dir__():
    return sorted(set(globals()) | set(__all__) | set(_torch_names()))


class _Package(_types.ModuleType):
    """Keeps `tgs.backend`, `tgs.tensor` and `tgs.device` the public functions and class:
    importing the submodules of the same names would otherwise bind the modules over them."""

    def __setattr__(self, name, value):
        if (name in _EXPORTS or name in _SHADOWED_SUBMODULES) and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
