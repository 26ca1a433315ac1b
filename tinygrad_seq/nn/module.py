"""nn.Module: a tree of layers holding Parameters and buffers, as in PyTorch."""
from __future__ import annotations

from collections import OrderedDict, namedtuple
from typing import (Any, Callable, ItemsView, Iterable, Iterator, KeysView, Mapping, Optional, Tuple, TypeVar,
                    Union, ValuesView)

import numpy as np

from .._typing import ArrayLike, DeviceLike, DTypeLike
from ..device import normalize_device, to_device
from ..tensor import Tensor

__all__ = ["Parameter", "Module", "Sequential", "ModuleList", "ModuleDict"]


IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])
M = TypeVar("M", bound="Module")   # methods that return self return the caller's own class


class Parameter(Tensor):
    """A Tensor that a Module owns and an optimiser updates (requires_grad=True by default)."""

    def __init__(self, data: ArrayLike, requires_grad: bool = True, dtype: DTypeLike = None) -> None:
        if isinstance(data, Tensor):
            data = data.data
        super().__init__(data, requires_grad=requires_grad, dtype=dtype)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class Module:
    """Base class of every layer and model: set Parameters and sub-Modules as attributes and
    they are found by `parameters()`, saved by `state_dict()` and moved by `to()`."""

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # ------------------------------------------------------------------ registration
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                                 "before setting attributes")
        for store in (self._parameters, self._buffers, self._modules):
            store.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        elif name in self.__dict__.get("_buffer_names", ()):
            self._buffers[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        for store in (self._parameters, self._buffers, self._modules):
            store.pop(name, None)
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Optional[Parameter]) -> None:
        """Register a Parameter (or None, for an absent bias) under `name`."""
        if param is None:
            self._parameters.pop(name, None)
            object.__setattr__(self, name, None)
        else:
            setattr(self, name, param)

    def register_buffer(self, name: str, tensor: Optional[Tensor], persistent: bool = True) -> None:
        """State that is saved and moved with the module but not trained (running statistics)."""
        names = self.__dict__.setdefault("_buffer_names", set())
        names.add(name)
        if not persistent:
            self.__dict__.setdefault("_non_persistent", set()).add(name)
        setattr(self, name, tensor)

    def add_module(self, name: str, module: Optional[Module]) -> None:
        setattr(self, name, module)

    # ------------------------------------------------------------------ traversal
    def named_modules(self, prefix: str = "", remove_duplicate: bool = True,
                      _seen: Optional[set] = None) -> Iterator[Tuple[str, Module]]:
        """(dotted name, module) for self and every sub-module, depth first; a module reached
        twice (shared) is listed once unless remove_duplicate=False, as in PyTorch."""
        if remove_duplicate:
            _seen = set() if _seen is None else _seen
            if id(self) in _seen:
                return
            _seen.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(f"{prefix}.{name}" if prefix else name, remove_duplicate, _seen)

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator[Tuple[str, Module]]:
        return iter(self._modules.items())

    def children(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def named_parameters(self, prefix: str = "", recurse: bool = True) -> Iterator[Tuple[str, Parameter]]:
        seen = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mod_prefix, module in modules:
            for name, p in module._parameters.items():
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{mod_prefix}.{name}" if mod_prefix else name), p

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "") -> Iterator[Tuple[str, Tensor]]:
        for mod_prefix, module in self.named_modules(prefix):
            for name, b in module._buffers.items():
                if b is not None:
                    yield (f"{mod_prefix}.{name}" if mod_prefix else name), b

    def buffers(self) -> Iterator[Tensor]:
        for _, b in self.named_buffers():
            yield b

    # ------------------------------------------------------------------ state
    def state_dict(self) -> OrderedDict[str, Tensor]:
        """Parameters and persistent buffers by dotted name, as detached Tensors (PyTorch order)."""
        state = OrderedDict()
        for mod_prefix, module in self.named_modules(remove_duplicate=False):
            skip = module.__dict__.get("_non_persistent", set())
            for store in (module._parameters, module._buffers):
                for name, value in store.items():
                    if value is not None and name not in skip:
                        state[f"{mod_prefix}.{name}" if mod_prefix else name] = value.detach()
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Copy values (Tensors or arrays, e.g. `{k: v.numpy() for k, v in torch_sd.items()}`) in place.

        strict: missing or unexpected keys are a RuntimeError naming them (as PyTorch); a shape
        mismatch is always a ValueError naming the key, and nothing is loaded unless every
        value fits.  Returns (missing_keys, unexpected_keys)."""
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise RuntimeError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        targets = {}
        for mod_prefix, module in self.named_modules(remove_duplicate=False):
            for store in (module._parameters, module._buffers):
                for name, value in store.items():
                    if value is not None:
                        targets[f"{mod_prefix}.{name}" if mod_prefix else name] = value
        arrays = {}
        for key, value in state_dict.items():
            if key not in targets:
                continue
            array = value.numpy() if isinstance(value, Tensor) else np.asarray(
                value.detach().cpu().numpy() if hasattr(value, "detach") else value)
            if tuple(array.shape) != targets[key].shape:
                raise ValueError(f"load_state_dict: {key} has shape {tuple(array.shape)} in the checkpoint "
                                 f"but {targets[key].shape} in the model")
            arrays[key] = array
        for key, array in arrays.items():  # only once every shape is known to fit
            target = targets[key]
            target.data = to_device(array.astype(target.dtype, copy=True), target.device)
        return IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------------ modes and devices
    def train(self: M, mode: bool = True) -> M:
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self: M) -> M:
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad.data[...] = 0

    def requires_grad_(self: M, requires_grad: bool = True) -> M:
        """Freeze (False) or unfreeze every parameter, e.g. for transfer learning."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def apply(self: M, fn: Callable[[Module], Any]) -> M:
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    def _map_arrays(self, fn):
        for m in self.modules():
            for store in (m._parameters, m._buffers):
                for value in store.values():
                    if value is not None:
                        value.data = fn(value.data)
                        if value.grad is not None:
                            value.grad.data = fn(value.grad.data)
        return self

    def to(self: M, device: Optional[DeviceLike] = None, dtype: DTypeLike = None) -> M:
        """Move (and/or cast) every parameter and buffer in place; returns self.  As in PyTorch,
        `model.to(tgs.float64)` (a dtype in the first place) casts."""
        if dtype is None and _is_dtype(device):
            device, dtype = None, device
        if device is not None:
            device = normalize_device(device)
            self._map_arrays(lambda a: to_device(a, device))
        if dtype is not None:
            dtype = np.dtype(dtype)
            self._map_arrays(lambda a: a.astype(dtype) if a.dtype.kind == "f" else a)
        return self

    def cpu(self: M) -> M:
        return self.to("cpu")

    def cuda(self: M) -> M:
        return self.to("cuda")

    def double(self: M) -> M:
        return self.to(dtype=np.float64)

    def float(self: M) -> M:
        return self.to(dtype=np.float32)

    @property
    def device(self) -> str:
        for p in self.parameters():
            return p.device
        return "cpu"

    # ------------------------------------------------------------------ calling
    def forward(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._modules.items():
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        return lines[0] + ")" if len(lines) == 1 else "\n".join(lines) + "\n)"


class Sequential(Module):
    """Modules applied one after another: Sequential(Linear(2, 16), ReLU(), Linear(16, 1))."""

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, m in modules[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(modules):
                self.add_module(str(i), m)

    def __getitem__(self, i: Union[int, slice]) -> Module:
        items = list(self._modules.values())
        return Sequential(*items[i]) if isinstance(i, slice) else items[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module: Module) -> Sequential:
        self.add_module(str(len(self)), module)
        return self

    def forward(self, x: Any) -> Any:
        for m in self._modules.values():
            x = m(x)
        return x


class ModuleList(Module):
    """A list of sub-modules that are registered (their parameters are found)."""

    def __init__(self, modules: Iterable[Module] = ()) -> None:
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module: Module) -> ModuleList:
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules: Iterable[Module]) -> ModuleList:
        for m in modules:
            self.append(m)
        return self

    def __getitem__(self, i: Union[int, slice]) -> Module:
        items = list(self._modules.values())
        return ModuleList(items[i]) if isinstance(i, slice) else items[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class ModuleDict(Module):
    def __init__(self, modules: Optional[Mapping[str, Module]] = None) -> None:
        super().__init__()
        for name, m in (modules or {}).items():
            self.add_module(name, m)

    def __getitem__(self, name: str) -> Module:
        return self._modules[name]

    def __setitem__(self, name: str, module: Module) -> None:
        self.add_module(name, module)

    def __contains__(self, name: object) -> bool:
        return name in self._modules

    def __len__(self):
        return len(self._modules)

    def keys(self) -> KeysView[str]:
        return self._modules.keys()

    def items(self) -> ItemsView[str, Module]:
        return self._modules.items()

    def values(self) -> ValuesView[Module]:
        return self._modules.values()


def _is_dtype(value) -> bool:
    """Whether `value` names a dtype (np.float64, "float64", tgs.float64), not a device."""
    if value is None or (isinstance(value, str) and value.split(":")[0] in ("cpu", "cuda")):
        return False
    try:
        np.dtype(value)
    except TypeError:
        return False
    return True
