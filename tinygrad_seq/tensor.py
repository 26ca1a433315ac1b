"""The Tensor engine: a NumPy (or CuPy) array plus the Function that made it.

A `Function` is one node of the define-by-run graph.  Its `forward` computes arrays and
saves what the `backward` needs; its `backward` maps the gradient of its output(s) to
the gradients of its tensor inputs.  Both sit side by side in one small class (see the
`ops` package), written once against `xp`, the array module of the data.

`Tensor.backward()` walks the Functions in reverse topological order without recursion,
so a graph of any depth works.
"""
from __future__ import annotations

import contextlib
from collections import namedtuple
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from ._typing import ArrayLike, DeviceLike, DTypeLike, IntOrTuple
from .device import check_same_device, device_of, normalize_device, to_device, xp_of
from .runtime import enter_engine_memory, in_engine_memory, leave_engine_memory

_grad_enabled = [True]
# Called with no arguments after every backward() has filled the .grad of the leaves
# (DistributedDataParallel averages the gradients over the ranks there).
_post_backward_hooks = []
# Called with a leaf tensor as soon as backward() has accumulated the last of its gradient
# contributions of this backward, while the rest of the backward still runs (what lets
# DistributedDataParallel(overlap=True) start reducing a bucket early).  Empty: no cost.
_grad_ready_hooks = []


# Tensor has methods named int/float/bool, which would shadow the builtins inside its body for a
# type checker; the hints there use these names instead (as PyTorch's stubs do).
_int, _float, _bool = int, float, bool
# A plain number, and what arithmetic accepts on the other side of a Tensor
Scalar = Union[int, float, bool]
TensorOrScalar = Union["Tensor", int, float, bool, np.ndarray]


def is_grad_enabled() -> bool:
    return _grad_enabled[0]


class no_grad(contextlib.ContextDecorator):
    """`with no_grad():` (or `@no_grad()`) builds no graph: for evaluation and updates."""

    def __enter__(self) -> None:
        self._prev = _grad_enabled[0]
        _grad_enabled[0] = False

    def __exit__(self, *exc: Any) -> bool:
        _grad_enabled[0] = self._prev
        return False


class enable_grad(no_grad):
    def __enter__(self) -> None:
        self._prev = _grad_enabled[0]
        _grad_enabled[0] = True


class set_grad_enabled(no_grad):
    """`with set_grad_enabled(False):` as no_grad, `(True)` as enable_grad; calling it without
    `with` switches recording on or off from here on, as in PyTorch."""

    def __init__(self, mode: bool) -> None:
        self._prev = _grad_enabled[0]
        self.mode = bool(mode)
        _grad_enabled[0] = self.mode

    def __enter__(self) -> None:
        _grad_enabled[0] = self.mode


class return_types:
    """The (values, indices) named tuples of max/min/sort/topk/kthvalue/median(dim), named as
    PyTorch's torch.return_types: `values, indices = x.max(1)` and `x.max(1).indices` both work."""

    max = namedtuple("max", ("values", "indices"))
    min = namedtuple("min", ("values", "indices"))
    sort = namedtuple("sort", ("values", "indices"))
    topk = namedtuple("topk", ("values", "indices"))
    kthvalue = namedtuple("kthvalue", ("values", "indices"))
    median = namedtuple("median", ("values", "indices"))


class Function:
    """One differentiable op: subclasses define `forward(*arrays, **attrs)` and `backward(*grads)`.

    `forward` receives the input arrays (tensors unwrapped) and keyword attributes and returns
    one array or a tuple of arrays.  `backward` receives one gradient array per output (zeros
    where an output took no part in the loss) and returns one gradient per tensor input
    (None where an input needs none).  `self.needs_input_grad[i]` says whether input i wants one.
    """

    def save_for_backward(self, *arrays):
        self.saved = arrays

    @classmethod
    def apply(cls, *inputs, **attrs):
        tensors = [x if isinstance(x, Tensor) else None for x in inputs]
        arrays = [x.data if isinstance(x, Tensor) else x for x in inputs]
        check_same_device(cls.__name__, [t.data for t in tensors if t is not None])
        fn = cls()
        fn.needs_input_grad = tuple(t is not None and t.requires_grad for t in tensors)
        previous = enter_engine_memory()   # its big arrays come back next step (runtime.py)
        try:
            out = fn.forward(*arrays, **attrs)
        finally:
            leave_engine_memory(previous)
        track = _grad_enabled[0] and any(fn.needs_input_grad)
        if track:
            fn.parents = tensors
            # where each input came from, as of now: an in-place change (x[i] = v, x.add_(y))
            # gives x a new producer later, and this Function must still send its gradient
            # to the old one
            fn.edges = [(t._ctx, t._out_index, t.requires_grad) if t is not None else None for t in tensors]
            fn.freed = False
        if isinstance(out, tuple):
            fn.n_outputs = len(out)
            results = tuple(Tensor._wrap(o, fn if track else None, i) for i, o in enumerate(out))
            fn.output_meta = [(o.shape, o.dtype) for o in out]
            return results
        fn.n_outputs = 1
        fn.output_meta = [(out.shape, out.dtype)]
        return Tensor._wrap(out, fn if track else None, 0)

    def forward(self, *arrays, **attrs):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, *grads):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} has no backward")


def _as_array(data, dtype, device):
    """Turn user data into an array: floats default to float32, ints and bools keep theirs."""
    if isinstance(data, Tensor):
        data = data.data
    if dtype is not None:
        dtype = np.dtype(dtype)
    if type(data).__module__.startswith("cupy"):
        arr = data if dtype is None else data.astype(dtype, copy=False)
    else:
        arr = np.asarray(data)
        if dtype is not None:
            arr = arr.astype(dtype, copy=False)
        elif arr.dtype.kind == "f" and arr.dtype != np.float32:
            arr = arr.astype(np.float32)
        elif arr.dtype.kind not in "fiub":
            raise TypeError(f"Tensor: cannot hold data of dtype {arr.dtype}; give numbers, "
                            "a list of numbers or a numeric array")
    return to_device(arr, device) if device is not None else arr


class Tensor:
    """An n-dimensional array that records the operations applied to it.

    `Tensor(data, requires_grad=False, dtype=None, device=None)`: floats are float32 unless a
    dtype is given; integer and boolean data keep their dtype (targets, indices, masks).
    `.data` is the raw array (NumPy, or CuPy on 'cuda'); `.grad` is a Tensor or None.
    """

    __array_priority__ = 1000  # so ndarray + Tensor calls Tensor.__radd__

    def __init__(self, data: ArrayLike, requires_grad: _bool = False, dtype: DTypeLike = None,
                 device: Optional[DeviceLike] = None) -> None:
        self.data = _as_array(data, dtype, device)
        self.grad = None
        self._ctx = None
        self._out_index = 0
        self._retains_grad = False
        self.requires_grad = bool(requires_grad)
        if self.requires_grad and self.data.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients, not {self.data.dtype}")

    @classmethod
    def _wrap(cls, array, fn=None, index=0):
        t = cls.__new__(cls)
        t.data, t.grad, t._ctx, t._out_index, t._retains_grad = array, None, fn, index, False
        t.requires_grad = fn is not None
        return t

    # ------------------------------------------------------------------ properties
    @property
    def shape(self) -> Tuple[_int, ...]: return tuple(self.data.shape)
    @property
    def dtype(self) -> np.dtype: return self.data.dtype
    @property
    def ndim(self) -> _int: return self.data.ndim
    @property
    def device(self) -> DeviceLike: return device_of(self.data)
    @property
    def is_leaf(self) -> _bool: return self._ctx is None
    @property
    def T(self) -> Tensor: return self.permute(*reversed(range(self.ndim)))

    def size(self, dim: Optional[_int] = None) -> Union[Tuple[_int, ...], _int]:
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> _int:
        return self.ndim

    def numel(self) -> _int:
        return int(self.data.size)

    def __len__(self) -> _int:
        return self.shape[0]

    def numpy(self) -> np.ndarray:
        """The data as a NumPy array on the host (no graph)."""
        return to_device(self.data, "cpu")

    def item(self) -> Union[_float, _int, _bool]:
        if self.numel() != 1:
            raise ValueError(f"item() needs a tensor with one element, this one has shape {self.shape}")
        return self.numpy().reshape(()).item()

    def tolist(self) -> Any:
        return self.numpy().tolist()

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        dev = ", device='cuda'" if self.device == "cuda" else ""
        return f"Tensor({np.array2string(self.numpy(), precision=4, separator=', ')}, dtype={self.dtype}{dev}{grad})"

    def __hash__(self) -> _int:
        return id(self)

    def __bool__(self) -> _bool:
        if self.numel() != 1:
            raise ValueError(f"the truth value of a tensor of shape {self.shape} is ambiguous; use .any() or .all()")
        return bool(self.item())

    def __float__(self) -> _float:
        return float(self.item())

    def __int__(self) -> _int:
        return int(self.item())

    def __index__(self) -> _int:
        if self.dtype.kind not in "iu":
            raise TypeError("only integer tensors of one element can be used as an index")
        return int(self.item())

    # ------------------------------------------------------------------ graph
    def requires_grad_(self, requires_grad: _bool = True) -> Tensor:
        if requires_grad and self.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients, not {self.dtype}")
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self) -> Tensor:
        """Keep .grad on a non-leaf tensor too (PyTorch's retain_grad)."""
        self._retains_grad = True
        return self

    def detach(self) -> Tensor:
        """The same data, cut from the graph (for truncated BPTT and targets)."""
        return Tensor._wrap(self.data)

    def backward(self, gradient: Optional[Tensor] = None, retain_graph: _bool = False) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's `.grad`.

        Without `gradient`, self must hold one element (a loss).  The graph's saved arrays are
        freed afterwards unless `retain_graph=True`, as in PyTorch.
        """
        if not self.requires_grad:
            raise RuntimeError("backward(): this tensor does not require grad and has no graph; "
                               "did you build it under no_grad(), or forget requires_grad=True on the inputs?")
        xp = xp_of(self.data)
        if gradient is None:
            if self.numel() != 1:
                raise RuntimeError(f"backward() on a tensor of shape {self.shape} needs gradient=; "
                                   "reduce it to a scalar first (e.g. .sum() or .mean()) or pass a gradient of the same shape")
            grad = xp.ones_like(self.data)
        else:
            grad = gradient.data if isinstance(gradient, Tensor) else xp.asarray(gradient, dtype=self.dtype)
            if tuple(grad.shape) != self.shape:
                raise RuntimeError(f"backward(): gradient shape {tuple(grad.shape)} does not match tensor shape {self.shape}")
        if self._ctx is None:
            self._accumulate(grad)
        else:
            _run_backward(self, grad, retain_graph)
        for hook in tuple(_post_backward_hooks):
            hook()

    def _accumulate(self, grad):
        if grad.dtype != self.data.dtype:
            grad = grad.astype(self.data.dtype)
        if self.grad is None:
            self.grad = Tensor._wrap(grad.copy() if grad is self.data else grad)
        else:
            self.grad = Tensor._wrap(self.grad.data + grad)

    # ------------------------------------------------------------------ devices and dtypes
    def to(self, *args: Any, device: Optional[DeviceLike] = None, dtype: DTypeLike = None, non_blocking: _bool = False,
           copy: _bool = False) -> Tensor:
        """Move to 'cpu' / 'cuda' and/or cast; differentiable (the gradient moves back).
        As PyTorch: `x.to("cuda")`, `x.to(tgs.float64)`, `x.to("cpu", tgs.float64)`, `x.to(other)`."""
        for arg in args:
            if isinstance(arg, Tensor):
                device, dtype = arg.device, arg.dtype
            elif _is_device(arg):
                device = arg
            else:
                dtype = arg
        out = self
        if dtype is not None and np.dtype(dtype) != self.dtype:
            out = out.astype(dtype)
        if device is not None and normalize_device(device) != self.device:
            out = ops.ToDevice.apply(out, device=normalize_device(device))
        return out.clone() if copy and out is self else out

    def cpu(self) -> Tensor:
        return self.to("cpu")

    def cuda(self, device: Optional[DeviceLike] = None) -> Tensor:
        return self.to("cuda")

    def astype(self, dtype: DTypeLike) -> Tensor:
        return ops.Cast.apply(self, dtype=np.dtype(dtype))

    def type(self, dtype: DTypeLike = None) -> Union[str, Tensor]:
        """The dtype's name without an argument, else a cast (`x.type(tgs.float64)`)."""
        return str(self.dtype) if dtype is None else self.to(dtype=dtype)

    def type_as(self, other: Tensor) -> Tensor:
        return self.to(dtype=other.dtype)

    def float(self) -> Tensor: return self.astype(np.float32)
    def double(self) -> Tensor: return self.astype(np.float64)
    def half(self) -> Tensor: return self.astype(np.float16)
    def long(self) -> Tensor: return self.astype(np.int64)
    def int(self) -> Tensor: return self.astype(np.int32)
    def short(self) -> Tensor: return self.astype(np.int16)
    def char(self) -> Tensor: return self.astype(np.int8)
    def byte(self) -> Tensor: return self.astype(np.uint8)
    def bool(self) -> Tensor: return self.astype(np.bool_)

    def is_floating_point(self) -> _bool:
        return self.dtype.kind == "f"

    def element_size(self) -> _int:
        return self.dtype.itemsize

    nelement = numel

    def contiguous(self) -> Tensor:
        return self

    def clone(self) -> Tensor:
        return ops.Clone.apply(self)

    def new_tensor(self, data: ArrayLike, dtype: DTypeLike = None, requires_grad: _bool = False) -> Tensor:
        return Tensor(data, dtype=dtype or self.dtype, device=self.device, requires_grad=requires_grad)

    def new_full(self, size: Sequence[_int], fill_value: Scalar, dtype: DTypeLike = None,
                 requires_grad: _bool = False) -> Tensor:
        xp = xp_of(self.data)
        return Tensor(xp.full(_shape_args((size,)), fill_value, dtype=np.dtype(dtype or self.dtype)),
                      requires_grad=requires_grad)

    def new_zeros(self, *size: Union[_int, Sequence[_int]], dtype: DTypeLike = None,
                  requires_grad: _bool = False) -> Tensor:
        return self.new_full(_shape_args(size), 0, dtype, requires_grad)

    def new_ones(self, *size: Union[_int, Sequence[_int]], dtype: DTypeLike = None,
                 requires_grad: _bool = False) -> Tensor:
        return self.new_full(_shape_args(size), 1, dtype, requires_grad)

    new_empty = new_zeros

    # ------------------------------------------------------------------ arithmetic
    def _operand(self, other):
        """A non-tensor operand becomes a constant of this tensor's dtype and device."""
        if isinstance(other, Tensor):
            return other          # a device mismatch is caught by Function.apply
        xp = xp_of(self.data)
        dtype = self.dtype if self.dtype.kind == "f" else None
        arr = xp.asarray(other, dtype=dtype) if dtype is not None and np.ndim(other) == 0 else xp.asarray(other)
        if arr.dtype.kind == "f" and self.dtype.kind == "f" and arr.dtype != self.dtype:
            arr = arr.astype(self.dtype)
        return Tensor._wrap(arr)

    def __add__(self, other: TensorOrScalar) -> Tensor: return ops.Add.apply(self, self._operand(other))
    def __radd__(self, other: TensorOrScalar) -> Tensor: return ops.Add.apply(self._operand(other), self)
    def __sub__(self, other: TensorOrScalar) -> Tensor: return ops.Sub.apply(self, self._operand(other))
    def __rsub__(self, other: TensorOrScalar) -> Tensor: return ops.Sub.apply(self._operand(other), self)
    def __mul__(self, other: TensorOrScalar) -> Tensor: return ops.Mul.apply(self, self._operand(other))
    def __rmul__(self, other: TensorOrScalar) -> Tensor: return ops.Mul.apply(self._operand(other), self)
    def __truediv__(self, other: TensorOrScalar) -> Tensor:
        if self.dtype.kind in "iub":   # true division of integers is float32, as PyTorch's
            return self.float() / other
        return ops.Div.apply(self, self._operand(other))

    def __rtruediv__(self, other: TensorOrScalar) -> Tensor:
        if self.dtype.kind in "iub":
            return other / self.float()
        return ops.Div.apply(self._operand(other), self)
    def __floordiv__(self, other: TensorOrScalar) -> Tensor: return self.div(other, rounding_mode="floor")
    def __rfloordiv__(self, other: TensorOrScalar) -> Tensor:
        return self._operand(other).div(self, rounding_mode="floor")
    def __mod__(self, other: TensorOrScalar) -> Tensor: return self.remainder(other)
    def __rmod__(self, other: TensorOrScalar) -> Tensor: return self._operand(other).remainder(self)
    def __neg__(self) -> Tensor: return ops.Neg.apply(self)
    def __abs__(self) -> Tensor: return self.abs()
    def __matmul__(self, other: TensorOrScalar) -> Tensor: return ops.MatMul.apply(self, self._operand(other))
    def __rmatmul__(self, other: TensorOrScalar) -> Tensor: return ops.MatMul.apply(self._operand(other), self)

    def __pow__(self, exponent: TensorOrScalar) -> Tensor:
        if isinstance(exponent, Tensor):
            if self.dtype.kind == "f" and exponent.dtype.kind in "iub":
                exponent = exponent.to(dtype=self.dtype)   # float ** int keeps the float's dtype
            return ops.PowTensor.apply(self, exponent)
        return ops.Pow.apply(self, exponent=exponent)

    def __rpow__(self, base: TensorOrScalar) -> Tensor:
        return ops.PowTensor.apply(self._operand(base), self)

    def add(self, other: TensorOrScalar, *, alpha: _float = 1) -> Tensor:
        return self + (other if alpha == 1 else self._operand(other) * alpha)

    def sub(self, other: TensorOrScalar, *, alpha: _float = 1) -> Tensor:
        return self - (other if alpha == 1 else self._operand(other) * alpha)

    def mul(self, other: TensorOrScalar) -> Tensor: return self * other
    def div(self, other: TensorOrScalar, *, rounding_mode: Optional[str] = None) -> Tensor:
        """a / b; rounding_mode 'floor' or 'trunc' rounds the quotient (its gradient is zero)."""
        if rounding_mode is None:
            return self / other
        if self.dtype.kind in "iu" and (not isinstance(other, Tensor) or other.dtype.kind in "iu") \
                and not isinstance(other, float):
            other = other.data if isinstance(other, Tensor) else other
            q = xp_of(self.data).floor_divide(self.data, other) if rounding_mode == "floor" else \
                xp_of(self.data).trunc(self.data / other).astype(self.dtype)
            return Tensor._wrap(q)
        if rounding_mode not in ("floor", "trunc"):
            raise ValueError(f"div: rounding_mode must be None, 'floor' or 'trunc', not {rounding_mode!r}")
        return ops.Step.apply(self / other, kind=rounding_mode)

    def remainder(self, other: TensorOrScalar) -> Tensor:
        """a - b * floor(a / b) (the sign of b, as Python's % and PyTorch's remainder)."""
        if self.dtype.kind in "iu" and not isinstance(other, (float, Tensor)):
            return Tensor._wrap(self.data % other)
        return self - self.div(other, rounding_mode="floor") * other

    multiply, divide, true_divide, subtract = mul, div, div, sub
    floor_divide = __floordiv__

    def pow(self, exponent: TensorOrScalar) -> Tensor: return self ** exponent
    def neg(self) -> Tensor: return -self
    negative = neg
    def reciprocal(self) -> Tensor: return 1.0 / self
    def matmul(self, other: TensorOrScalar) -> Tensor: return self @ other
    mm = bmm = mv = matmul

    def dot(self, other: TensorOrScalar) -> Tensor:
        if self.ndim != 1 or other.ndim != 1:
            raise ValueError(f"dot: needs two 1-D tensors, got shapes {self.shape} and {tuple(other.shape)}")
        return self @ other

    def outer(self, other: TensorOrScalar) -> Tensor:
        return self.reshape(-1, 1) * other.reshape(1, -1)

    def maximum(self, other: TensorOrScalar) -> Tensor: return ops.Maximum.apply(self, self._operand(other))
    def minimum(self, other: TensorOrScalar) -> Tensor: return -ops.Maximum.apply(-self, -self._operand(other))

    def lerp(self, end: TensorOrScalar, weight: TensorOrScalar) -> Tensor:
        """self + weight * (end - self)."""
        return self + (self._operand(end) - self) * weight

    def __getitem__(self, index: Any) -> Tensor:
        return ops.GetItem.apply(self, index=_unwrap_index(index))

    def __setitem__(self, index: Any, value: TensorOrScalar) -> None:
        """x[index] = value, as PyTorch: in place, recorded in the graph when x or value takes
        part in one (refused for a leaf that requires grad, whose .grad would be ill-defined)."""
        index = _unwrap_index(index)
        value = value if isinstance(value, Tensor) else self._operand(value)
        self._assign(lambda old: ops.SetItem.apply(old, value, index=index),
                     lambda: self.data.__setitem__(index, value.data.astype(self.dtype, copy=False)),
                     "an index assignment", value)

    # comparisons make boolean tensors with no graph (masks, accuracy)
    def _compare(self, other, op):
        if isinstance(other, Tensor):
            check_same_device("comparison", [self.data, other.data])
            other = other.data
        return Tensor._wrap(op(self.data, other))

    def __eq__(self, other: TensorOrScalar) -> Tensor:  # type: ignore[override]
        return self._compare(other, lambda a, b: a == b)
    def __ne__(self, other: TensorOrScalar) -> Tensor:  # type: ignore[override]
        return self._compare(other, lambda a, b: a != b)
    def __lt__(self, other: TensorOrScalar) -> Tensor: return self._compare(other, lambda a, b: a < b)
    def __le__(self, other: TensorOrScalar) -> Tensor: return self._compare(other, lambda a, b: a <= b)
    def __gt__(self, other: TensorOrScalar) -> Tensor: return self._compare(other, lambda a, b: a > b)
    def __ge__(self, other: TensorOrScalar) -> Tensor: return self._compare(other, lambda a, b: a >= b)
    def __invert__(self) -> Tensor: return Tensor._wrap(~self.data)
    def __and__(self, other: TensorOrScalar) -> Tensor: return self._compare(other, lambda a, b: a & b)
    def __or__(self, other: TensorOrScalar) -> Tensor: return self._compare(other, lambda a, b: a | b)
    def __xor__(self, other: TensorOrScalar) -> Tensor: return self._compare(other, lambda a, b: a ^ b)
    eq, ne, lt, le, gt, ge = __eq__, __ne__, __lt__, __le__, __gt__, __ge__
    greater, less, greater_equal, less_equal, not_equal = gt, lt, ge, le, ne

    def logical_not(self) -> Tensor: return Tensor._wrap(xp_of(self.data).logical_not(self.data))
    def logical_and(self, other: TensorOrScalar) -> Tensor:
        return self._compare(other, lambda a, b: xp_of(a).logical_and(a, b))
    def logical_or(self, other: TensorOrScalar) -> Tensor:
        return self._compare(other, lambda a, b: xp_of(a).logical_or(a, b))
    def isnan(self) -> Tensor: return Tensor._wrap(xp_of(self.data).isnan(self.data))
    def isinf(self) -> Tensor: return Tensor._wrap(xp_of(self.data).isinf(self.data))
    def isfinite(self) -> Tensor: return Tensor._wrap(xp_of(self.data).isfinite(self.data))

    def isclose(self, other: TensorOrScalar, rtol: _float = 1e-05, atol: _float = 1e-08,
                equal_nan: _bool = False) -> Tensor:
        return self._compare(other, lambda a, b: xp_of(a).isclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan))

    def allclose(self, other: TensorOrScalar, rtol: _float = 1e-05, atol: _float = 1e-08,
                 equal_nan: _bool = False) -> _bool:
        return bool(self.isclose(other, rtol, atol, equal_nan).all())

    def equal(self, other: TensorOrScalar) -> _bool:
        return self.shape == other.shape and bool((self == other).all())

    def any(self, dim: Optional[IntOrTuple] = None, keepdim: _bool = False) -> Tensor:
        return Tensor._wrap(xp_of(self.data).asarray(self.data.any(axis=_axis(dim, self.ndim), keepdims=keepdim)))

    def all(self, dim: Optional[IntOrTuple] = None, keepdim: _bool = False) -> Tensor:
        return Tensor._wrap(xp_of(self.data).asarray(self.data.all(axis=_axis(dim, self.ndim), keepdims=keepdim)))

    def nonzero(self, *, as_tuple: _bool = False) -> Union[Tensor, Tuple[Tensor, ...]]:
        found = xp_of(self.data).nonzero(self.data)
        if as_tuple:
            return tuple(Tensor._wrap(i) for i in found)
        return Tensor._wrap(xp_of(self.data).stack(found, axis=-1) if found else xp_of(self.data).zeros((1, 0), np.int64))

    def count_nonzero(self, dim: Optional[IntOrTuple] = None) -> Tensor:
        return Tensor._wrap(xp_of(self.data).asarray(xp_of(self.data).count_nonzero(self.data, axis=_axis(dim, self.ndim))))

    # ------------------------------------------------------------------ elementwise
    def exp(self) -> Tensor: return ops.Exp.apply(self)
    def log(self) -> Tensor: return ops.Log.apply(self)
    def log2(self) -> Tensor: return self.log() * (1 / np.log(2))
    def log10(self) -> Tensor: return self.log() * (1 / np.log(10))
    def log1p(self) -> Tensor: return ops.Log1p.apply(self)
    def expm1(self) -> Tensor: return ops.Expm1.apply(self)
    def exp2(self) -> Tensor: return ops.PowTensor.apply(self._operand(2.0), self)
    def sqrt(self) -> Tensor: return ops.Sqrt.apply(self)
    def rsqrt(self) -> Tensor: return ops.Rsqrt.apply(self)
    def abs(self) -> Tensor: return ops.Abs.apply(self)
    absolute = abs
    def sin(self) -> Tensor: return ops.Sin.apply(self)
    def cos(self) -> Tensor: return ops.Cos.apply(self)
    def tan(self) -> Tensor: return ops.Tan.apply(self)
    def asin(self) -> Tensor: return ops.Asin.apply(self)
    def acos(self) -> Tensor: return ops.Acos.apply(self)
    def atan(self) -> Tensor: return ops.Atan.apply(self)
    def sinh(self) -> Tensor: return ops.Sinh.apply(self)
    def cosh(self) -> Tensor: return ops.Cosh.apply(self)
    def asinh(self) -> Tensor: return ops.Asinh.apply(self)
    def acosh(self) -> Tensor: return ops.Acosh.apply(self)
    def atanh(self) -> Tensor: return ops.Atanh.apply(self)
    arcsin, arccos, arctan, arcsinh, arccosh, arctanh = asin, acos, atan, asinh, acosh, atanh
    def erf(self) -> Tensor: return ops.Erf.apply(self)
    def tanh(self) -> Tensor: return ops.Tanh.apply(self)
    def sigmoid(self) -> Tensor: return ops.Sigmoid.apply(self)
    def relu(self) -> Tensor: return ops.ReLU.apply(self)
    def leaky_relu(self, negative_slope: _float = 0.01) -> Tensor:
        return ops.LeakyReLU.apply(self, negative_slope=negative_slope)
    def gelu(self, approximate: str = "none") -> Tensor: return ops.GELU.apply(self, approximate=approximate)
    def square(self) -> Tensor: return self * self

    def _step(self, kind):
        if self.dtype.kind != "f":
            return Tensor._wrap(xp_of(self.data).sign(self.data)) if kind == "sign" else self.clone()
        return ops.Step.apply(self, kind=kind)

    def floor(self) -> Tensor: return self._step("floor")
    def ceil(self) -> Tensor: return self._step("ceil")
    def trunc(self) -> Tensor: return self._step("trunc")
    fix = trunc
    def sign(self) -> Tensor: return self._step("sign")

    def round(self, decimals: _int = 0) -> Tensor:
        """Round half to even (as PyTorch); `decimals` places after the point."""
        if decimals == 0:
            return self._step("round")
        scale = 10.0 ** decimals
        return (self * scale)._step("round") / scale

    def clip(self, min: Optional[TensorOrScalar] = None, max: Optional[TensorOrScalar] = None) -> Tensor:
        if isinstance(min, Tensor) or isinstance(max, Tensor):
            out = self if min is None else self.maximum(min)
            return out if max is None else out.minimum(max)
        return ops.Clip.apply(self, low=min, high=max)

    clamp = clip
    def clamp_min(self, min: TensorOrScalar) -> Tensor: return self.clip(min=min)
    def clamp_max(self, max: TensorOrScalar) -> Tensor: return self.clip(max=max)

    def masked_fill(self, mask: Tensor, value: TensorOrScalar) -> Tensor:
        """Positions where `mask` is True take `value`; the gradient there is zero."""
        mask = mask.data if isinstance(mask, Tensor) else mask
        return ops.Where.apply(mask, self._operand(value), self)

    def where(self, condition: Tensor, other: TensorOrScalar) -> Tensor:
        """self where condition holds, else other (Tensor.where as PyTorch)."""
        condition = condition.data if isinstance(condition, Tensor) else condition
        return ops.Where.apply(condition, self, self._operand(other))

    def tril(self, diagonal: _int = 0) -> Tensor:
        """The lower triangle (entries j <= i + diagonal of the last two axes), the rest 0."""
        return self._triangle(diagonal, lower=True)

    def triu(self, diagonal: _int = 0) -> Tensor:
        """The upper triangle (entries j >= i + diagonal of the last two axes), the rest 0."""
        return self._triangle(diagonal, lower=False)

    def _triangle(self, diagonal, lower):
        if self.ndim < 2:
            raise ValueError(f"tril/triu: need a tensor of at least 2 dimensions, got shape {self.shape}")
        n, m = self.shape[-2:]
        keep = np.tri(n, m, diagonal, dtype=bool) if lower else ~np.tri(n, m, diagonal - 1, dtype=bool)
        keep = to_device(keep, self.device)
        return ops.Where.apply(keep, self, self._operand(0))

    def softmax(self, dim: _int = -1) -> Tensor:
        from .nn import functional as F
        return F.softmax(self, dim)

    def log_softmax(self, dim: _int = -1) -> Tensor:
        from .nn import functional as F
        return F.log_softmax(self, dim)

    # ------------------------------------------------------------------ reductions
    def sum(self, dim: Optional[IntOrTuple] = None, keepdim: _bool = False, *, axis: Optional[IntOrTuple] = None,
            keepdims: Optional[_bool] = None, dtype: DTypeLike = None) -> Tensor:
        dim, keepdim = _dims(dim, axis, keepdim, keepdims)
        x = self if dtype is None else self.to(dtype=dtype)
        if x.dtype.kind == "b":
            x = x.long()
        return ops.Sum.apply(x, axis=dim, keepdims=keepdim)

    def mean(self, dim: Optional[IntOrTuple] = None, keepdim: _bool = False, *, axis: Optional[IntOrTuple] = None,
             keepdims: Optional[_bool] = None) -> Tensor:
        """The mean over `dim`; NaN over zero elements, as PyTorch."""
        dim, keepdim = _dims(dim, axis, keepdim, keepdims)
        count = _count(self.shape, dim)
        return self.sum(dim, keepdim) * (1.0 / count if count else float("nan"))

    def var(self, dim: Optional[IntOrTuple] = None, keepdim: _bool = False, *, unbiased: Optional[_bool] = None,
            correction: Optional[_float] = None, axis: Optional[IntOrTuple] = None,
            keepdims: Optional[_bool] = None) -> Tensor:
        """Variance; like PyTorch the default is unbiased (correction=1), and NaN where the
        reduced axis has no more than `correction` elements."""
        dim, keepdim = _dims(dim, axis, keepdim, keepdims)
        if isinstance(dim, bool):  # var(False): PyTorch's old positional `unbiased`
            dim, unbiased = None, dim
        if correction is None:
            correction = 1 if unbiased is None or unbiased else 0
        dof = _count(self.shape, dim) - correction
        centred = self - self.mean(dim, keepdim=True)
        return (centred * centred).sum(dim, keepdim) * (1.0 / dof if dof > 0 else float("nan"))

    def std(self, dim: Optional[IntOrTuple] = None, keepdim: _bool = False, **kw: Any) -> Tensor:
        return self.var(dim, keepdim, **kw).sqrt()

    def prod(self, dim: Optional[IntOrTuple] = None, keepdim: _bool = False, *, dtype: DTypeLike = None) -> Tensor:
        x = self if dtype is None else self.to(dtype=dtype)
        if dim is None:
            return ops.Prod.apply(x.reshape(-1), axis=0)
        if x.ndim == 0:
            return x.clone()
        return ops.Prod.apply(x, axis=dim % x.ndim, keepdims=bool(keepdim))

    def cumsum(self, dim: _int, *, dtype: DTypeLike = None) -> Tensor:
        x = self if dtype is None else self.to(dtype=dtype)
        if x.ndim == 0:
            return x.clone()
        return ops.CumSum.apply(x, axis=dim % x.ndim)

    def logsumexp(self, dim: IntOrTuple, keepdim: _bool = False) -> Tensor:
        """log sum exp x over `dim`, computed as m + log sum exp(x - m) with m the (constant) max."""
        shift = Tensor._wrap(self.data.max(axis=_axis(dim, self.ndim), keepdims=True))
        shift = Tensor._wrap(xp_of(shift.data).where(xp_of(shift.data).isfinite(shift.data), shift.data, 0))
        out = (self - shift).exp().sum(dim, keepdim=True).log() + shift
        return out if keepdim else out.squeeze(dim)

    def norm(self, p: Union[str, _float] = "fro", dim: Optional[IntOrTuple] = None, keepdim: _bool = False) -> Tensor:
        """The p-norm over `dim` (all elements by default): (sum |x|^p)^(1/p)."""
        if p in ("fro", 2, 2.0):
            return (self * self).sum(dim, keepdim).sqrt()
        if p in (float("inf"), "inf"):
            return self.abs().amax(dim, keepdim)
        if p == 1:
            return self.abs().sum(dim, keepdim)
        return (self.abs() ** p).sum(dim, keepdim) ** (1.0 / p)

    def amax(self, dim: Optional[IntOrTuple] = None, keepdim: _bool = False, *, axis: Optional[IntOrTuple] = None,
             keepdims: Optional[_bool] = None) -> Tensor:
        """The largest values over `dim` (one or several); the gradient is split among ties."""
        dim, keepdim = _dims(dim, axis, keepdim, keepdims)
        if dim == ():
            dim = None
        return ops.Max.apply(self, axis=dim, keepdims=keepdim)

    def amin(self, dim: Optional[IntOrTuple] = None, keepdim: _bool = False, *, axis: Optional[IntOrTuple] = None,
             keepdims: Optional[_bool] = None) -> Tensor:
        return -(-self).amax(dim, keepdim, axis=axis, keepdims=keepdims)

    def max(self, dim: Optional[_int] = None, keepdim: _bool = False, *, axis: Optional[IntOrTuple] = None,
            keepdims: Optional[_bool] = None) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """As PyTorch: max() is the largest value (gradient split among ties); max(dim) the
        named tuple (values, indices), the gradient going to the index returned (the first
        maximum); max(other_tensor) the elementwise maximum.  NumPy's axis= gives the values."""
        if isinstance(dim, Tensor):
            return self.maximum(dim)
        if dim is None or axis is not None or isinstance(dim, (tuple, list)):
            return self.amax(dim, keepdim, axis=axis, keepdims=keepdims)
        return self._pick(return_types.max, self.argmax(dim, keepdim=True), dim, keepdim)

    def min(self, dim: Optional[_int] = None, keepdim: _bool = False, *, axis: Optional[IntOrTuple] = None,
            keepdims: Optional[_bool] = None) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        if isinstance(dim, Tensor):
            return self.minimum(dim)
        if dim is None or axis is not None or isinstance(dim, (tuple, list)):
            return self.amin(dim, keepdim, axis=axis, keepdims=keepdims)
        return self._pick(return_types.min, self.argmin(dim, keepdim=True), dim, keepdim)

    def _pick(self, kind, index, dim, keepdim):
        """kind(values, indices): self gathered at `index` (keepdim-shaped) along `dim`."""
        if self.ndim == 0:
            return kind(self.clone(), Tensor._wrap(xp_of(self.data).zeros((), np.int64)))
        dim = dim % self.ndim
        values = self.gather(dim, index)
        if not keepdim:
            values, index = values.squeeze(dim), index.squeeze(dim)
        return kind(values, index)

    def argmax(self, dim: Optional[_int] = None, keepdim: _bool = False, *, axis: Optional[IntOrTuple] = None,
               keepdims: Optional[_bool] = None) -> Tensor:
        dim, keepdim = _dims(dim, axis, keepdim, keepdims)
        xp = xp_of(self.data)
        if dim is None:
            idx = xp.asarray(self.data.argmax())
            return Tensor._wrap(idx.reshape((1,) * self.ndim) if keepdim else idx)
        if self.ndim == 0:
            return Tensor._wrap(xp.zeros((), np.int64))
        idx = self.data.argmax(axis=dim)
        if keepdim:
            idx = xp.expand_dims(idx, dim)
        return Tensor._wrap(idx.astype(np.int64, copy=False))

    def argmin(self, dim: Optional[_int] = None, keepdim: _bool = False, *, axis: Optional[IntOrTuple] = None,
               keepdims: Optional[_bool] = None) -> Tensor:
        data = self.data if self.dtype.kind != "b" else self.data.astype(np.int8)
        return Tensor._wrap(-data).argmax(dim, keepdim, axis=axis, keepdims=keepdims)

    def argsort(self, dim: _int = -1, descending: _bool = False, stable: _bool = False) -> Tensor:
        """Indices that sort `dim` (ties keep their order, as PyTorch's stable sort)."""
        data = self.data if self.ndim else self.data.reshape(1)
        xp = xp_of(data)
        if descending:
            # sorting the reversed axis stably and mapping back keeps ties in their order
            n = data.shape[dim]
            flipped = xp.flip(data, axis=dim)
            order = xp.flip(xp.argsort(flipped, axis=dim, kind="stable"), axis=dim)
            idx = n - 1 - order
        else:
            idx = xp.argsort(data, axis=dim, kind="stable")
        return Tensor._wrap(idx.astype(np.int64, copy=False).reshape(self.shape))

    def sort(self, dim: _int = -1, descending: _bool = False, stable: _bool = False) -> Tuple[Tensor, Tensor]:
        """Named tuple (values, indices) of `dim` sorted; the gradient follows the indices."""
        index = self.argsort(dim, descending)
        return return_types.sort(self.gather(dim, index) if self.ndim else self.clone(), index)

    def topk(self, k: _int, dim: _int = -1, largest: _bool = True, sorted: _bool = True) -> Tuple[Tensor, Tensor]:
        """Named tuple (values, indices) of the k largest (largest=False: smallest) along `dim`."""
        if self.ndim == 0:
            dim_size = 1
        else:
            dim_size = self.shape[dim]
        if not 0 <= k <= dim_size:
            raise ValueError(f"topk: k={k} is out of range for dimension {dim} of size {dim_size}")
        index = self.argsort(dim, descending=largest)
        if self.ndim:
            index = index[(slice(None),) * (dim % self.ndim) + (slice(0, k),)]
        return return_types.topk(self.gather(dim, index) if self.ndim else self.clone(), index)

    def kthvalue(self, k: _int, dim: _int = -1, keepdim: _bool = False) -> Tuple[Tensor, Tensor]:
        """Named tuple (values, indices) of the k-th smallest entry (k from 1) along `dim`."""
        size = self.shape[dim] if self.ndim else 1
        if not 1 <= k <= size:
            raise ValueError(f"kthvalue: k={k} is out of range for dimension {dim} of size {size}")
        return self._order_statistic(return_types.kthvalue, k - 1, dim, keepdim)

    def median(self, dim: Optional[_int] = None, keepdim: _bool = False) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """median() is the lower median of all elements; median(dim) the named tuple
        (values, indices) of the lower median along `dim` (PyTorch's rule for even counts)."""
        if dim is None:
            flat = self.reshape(-1)
            return flat._order_statistic(return_types.median, (flat.numel() - 1) // 2, 0, False).values
        size = self.shape[dim] if self.ndim else 1
        return self._order_statistic(return_types.median, (size - 1) // 2, dim, keepdim)

    def _order_statistic(self, kind, position, dim, keepdim):
        if self.ndim == 0:
            return kind(self.clone(), Tensor._wrap(xp_of(self.data).zeros((), np.int64)))
        dim = dim % self.ndim
        index = self.argsort(dim)[(slice(None),) * dim + (slice(position, position + 1),)]
        return self._pick(kind, index, dim, keepdim)

    def gather(self, dim: _int, index: Tensor) -> Tensor:
        """out[i][j] = self[index[i][j]][j] for dim 0 (torch.gather); differentiable in self."""
        index = index.data if isinstance(index, Tensor) else xp_of(self.data).asarray(index)
        return ops.Gather.apply(self, index, axis=dim % max(self.ndim, 1))

    def take_along_dim(self, indices: Tensor, dim: Optional[_int] = None) -> Tensor:
        """self picked at `indices` along `dim` (the flattened tensor when dim is None)."""
        if dim is None:
            return self.reshape(-1).gather(0, indices.reshape(-1) if isinstance(indices, Tensor) else np.ravel(indices))
        return self.gather(dim, indices)

    def scatter(self, dim: _int, index: Tensor, src: Optional[Tensor] = None, *,
                value: Optional[Scalar] = None) -> Tensor:
        """A copy with src (a tensor, or `value`) written at `index` along `dim` (torch.scatter)."""
        src = value if src is None else src
        index = index.data if isinstance(index, Tensor) else np.asarray(index)
        return ops.Scatter.apply(self, index, self._operand(src), axis=dim % self.ndim)

    def scatter_add(self, dim: _int, index: Tensor, src: Tensor) -> Tensor:
        """A copy with src added at `index` along `dim`, repeated positions adding up."""
        index = index.data if isinstance(index, Tensor) else np.asarray(index)
        return ops.ScatterAdd.apply(self, index, self._operand(src), axis=dim % self.ndim)

    def index_add(self, dim: _int, index: Tensor, source: Tensor, *, alpha: _float = 1) -> Tensor:
        """A copy with source's slices added at positions `index` along `dim`."""
        index = index.data if isinstance(index, Tensor) else np.asarray(index)
        shape = [1] * source.ndim
        shape[dim % source.ndim] = -1
        full = xp_of(index).broadcast_to(index.reshape(shape), source.shape)
        return self.scatter_add(dim, full, source if alpha == 1 else source * alpha)

    def scatter_(self, dim: _int, index: Tensor, src: Optional[Tensor] = None, *,
                 value: Optional[Scalar] = None) -> Tensor:
        return self._inplace(lambda t: t.scatter(dim, index, src, value=value), "scatter_", src)

    def scatter_add_(self, dim: _int, index: Tensor, src: Tensor) -> Tensor:
        return self._inplace(lambda t: t.scatter_add(dim, index, src), "scatter_add_", src)

    def index_add_(self, dim: _int, index: Tensor, source: Tensor, *, alpha: _float = 1) -> Tensor:
        return self._inplace(lambda t: t.index_add(dim, index, source, alpha=alpha), "index_add_", source)

    def masked_select(self, mask: Tensor) -> Tensor:
        """The entries where `mask` (broadcast to this shape) holds, as a 1-D tensor."""
        mask = mask.data if isinstance(mask, Tensor) else np.asarray(mask)
        return self[xp_of(self.data).broadcast_to(mask, self.shape)]

    def argwhere(self) -> Tensor:
        return self.nonzero()

    def unique(self, sorted: _bool = True, return_inverse: _bool = False, return_counts: _bool = False,
               dim: Optional[_int] = None) -> Union[Tensor, Tuple[Tensor, ...]]:
        """The distinct values, sorted (no gradient); optionally the inverse indices and counts."""
        if dim is not None:
            raise NotImplementedError("unique(dim=...) is not supported; flatten first")
        values, inverse, counts = np.unique(self.numpy(), return_inverse=True, return_counts=True)
        out = (Tensor._wrap(to_device(values, self.device)),)
        if return_inverse:
            out += (Tensor._wrap(to_device(inverse.reshape(self.shape).astype(np.int64), self.device)),)
        if return_counts:
            out += (Tensor._wrap(to_device(counts.astype(np.int64), self.device)),)
        return out[0] if len(out) == 1 else out

    def index_select(self, dim: _int, index: Tensor) -> Tensor:
        index = index.data if isinstance(index, Tensor) else np.asarray(index)
        return self[(slice(None),) * (dim % self.ndim) + (index.reshape(-1),)]

    # ------------------------------------------------------------------ shapes
    def reshape(self, *shape: Union[_int, Sequence[_int]]) -> Tensor:
        shape = _shape_args(shape)
        return ops.Reshape.apply(self, shape=shape)

    view = reshape

    def view_as(self, other: Tensor) -> Tensor: return self.reshape(other.shape)
    reshape_as = view_as

    def flatten(self, start_dim: _int = 0, end_dim: _int = -1) -> Tensor:
        nd = self.ndim
        if nd == 0:
            return self.reshape(1)
        s, e = start_dim % nd, end_dim % nd
        new = self.shape[:s] + (int(np.prod(self.shape[s:e + 1])),) + self.shape[e + 1:]
        return self.reshape(new)

    def unflatten(self, dim: _int, sizes: Sequence[_int]) -> Tensor:
        """Split dimension `dim` into `sizes` (one of them may be -1)."""
        dim %= self.ndim
        sizes = tuple(sizes)
        if -1 in sizes:
            known = int(np.prod([s for s in sizes if s != -1]))
            sizes = tuple(self.shape[dim] // known if s == -1 else s for s in sizes)
        return self.reshape(self.shape[:dim] + sizes + self.shape[dim + 1:])

    def permute(self, *dims: Union[_int, Sequence[_int]]) -> Tensor:
        dims = _shape_args(dims)
        return ops.Permute.apply(self, dims=tuple(d % self.ndim for d in dims))

    def transpose(self, dim0: _int = 0, dim1: _int = 1) -> Tensor:
        """Swap two dimensions (PyTorch's semantics, not NumPy's full reversal)."""
        if self.ndim == 0:
            return self.reshape(())
        dims = list(range(self.ndim))
        dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
        return self.permute(*dims)

    swapaxes = swapdims = transpose

    def movedim(self, source: IntOrTuple, destination: IntOrTuple) -> Tensor:
        source = (source,) if isinstance(source, int) else tuple(source)
        destination = (destination,) if isinstance(destination, int) else tuple(destination)
        source = [s % self.ndim for s in source]
        destination = [d % self.ndim for d in destination]
        order = [d for d in range(self.ndim) if d not in source]
        for dst, src in sorted(zip(destination, source)):
            order.insert(dst, src)
        return self.permute(*order)

    moveaxis = movedim

    def t(self) -> Tensor:
        if self.ndim > 2:
            raise ValueError(f"t() expects a tensor of at most 2 dimensions, got shape {self.shape}; use transpose(dim0, dim1)")
        return self.T

    def expand(self, *shape: Union[_int, Sequence[_int]]) -> Tensor:
        shape = _shape_args(shape)
        shape = tuple(s if s != -1 else self.shape[i - len(shape) + self.ndim] for i, s in enumerate(shape))
        return ops.Expand.apply(self, shape=shape)

    def expand_as(self, other: Tensor) -> Tensor:
        return self.expand(other.shape)

    def broadcast_to(self, *shape: Union[_int, Sequence[_int]]) -> Tensor:
        return self.expand(*shape)

    def repeat(self, *sizes: Union[_int, Sequence[_int]]) -> Tensor:
        """Tile the tensor `sizes` times along each dimension (torch's repeat, NumPy's tile)."""
        sizes = _shape_args(sizes)
        if len(sizes) < self.ndim:
            raise ValueError(f"repeat: give at least {self.ndim} sizes for a tensor of shape {self.shape}, got {sizes}")
        shape = (1,) * (len(sizes) - self.ndim) + self.shape
        spread = self.reshape(tuple(v for s in shape for v in (1, s)))
        tiled = spread.expand(tuple(v for r, s in zip(sizes, shape) for v in (r, s)))
        return tiled.reshape(tuple(r * s for r, s in zip(sizes, shape)))

    def tile(self, *dims: Union[_int, Sequence[_int]]) -> Tensor:
        dims = _shape_args(dims)
        return self.repeat((1,) * (self.ndim - len(dims)) + dims)

    def repeat_interleave(self, repeats: Union[_int, Tensor], dim: Optional[_int] = None) -> Tensor:
        """Each element repeated `repeats` times (an int, or one count per element) along `dim`."""
        x = self.reshape(-1) if dim is None else self
        dim = 0 if dim is None else dim % self.ndim
        repeats = repeats.numpy() if isinstance(repeats, Tensor) else repeats
        index = np.repeat(np.arange(x.shape[dim]), repeats)
        return x[(slice(None),) * dim + (to_device(index, x.device),)]

    def flip(self, *dims: Union[_int, Sequence[_int]]) -> Tensor:
        dims = _shape_args(dims)
        index = [slice(None)] * self.ndim
        for d in dims:
            index[d % self.ndim] = slice(None, None, -1)
        return self[tuple(index)]

    def fliplr(self) -> Tensor: return self.flip(1)
    def flipud(self) -> Tensor: return self.flip(0)

    def roll(self, shifts: IntOrTuple, dims: Optional[IntOrTuple] = None) -> Tensor:
        """Shift entries `shifts` places along `dims`, the last ones coming back at the front."""
        if dims is None:
            return self.reshape(-1).roll(shifts, 0).reshape(self.shape)
        shifts = (shifts,) if isinstance(shifts, int) else tuple(shifts)
        dims = (dims,) if isinstance(dims, int) else tuple(dims)
        out = self
        for shift, d in zip(shifts, dims):
            d %= self.ndim
            n = self.shape[d]
            index = to_device((np.arange(n) - shift) % max(n, 1), self.device)
            out = out[(slice(None),) * d + (index,)]
        return out

    def diagonal(self, offset: _int = 0, dim1: _int = 0, dim2: _int = 1) -> Tensor:
        """The diagonal of dims (dim1, dim2), `offset` above (> 0) or below (< 0) the main one,
        as the last dimension."""
        d1, d2 = dim1 % self.ndim, dim2 % self.ndim
        rest = [d for d in range(self.ndim) if d not in (d1, d2)]
        moved = self.permute(*rest, d1, d2)
        n, m = self.shape[d1], self.shape[d2]
        rows = np.arange(max(0, -offset), min(n, m - offset)) if min(n, m - offset) > max(0, -offset) else np.arange(0)
        cols = rows + offset
        return moved[(Ellipsis, to_device(rows, self.device), to_device(cols, self.device))]

    def diag(self, diagonal: _int = 0) -> Tensor:
        """1-D: the square matrix with this on its `diagonal`; 2-D: that diagonal as 1-D."""
        if self.ndim == 2:
            return self.diagonal(diagonal)
        if self.ndim != 1:
            raise ValueError(f"diag: expects a 1-D or 2-D tensor, got shape {self.shape}")
        n = self.shape[0] + abs(diagonal)
        rows = np.arange(self.shape[0]) + max(0, -diagonal)
        index = (to_device(rows, self.device), to_device(rows + diagonal, self.device))
        return ops.SetItem.apply(Tensor._wrap(xp_of(self.data).zeros((n, n), self.dtype)), self, index=index)

    def diag_embed(self) -> Tensor:
        n = self.shape[-1]
        eye = Tensor._wrap(to_device(np.eye(n, dtype=self.dtype), self.device))
        return self.unsqueeze(-1) * eye

    def unfold(self, dimension: _int, size: _int, step: _int) -> Tensor:
        """All windows of `size` entries, `step` apart, along `dimension`, as a new last
        dimension: shape (..., (n - size) // step + 1, ..., size)."""
        d = dimension % max(self.ndim, 1)
        n = self.shape[d] if self.ndim else 1
        if size > n:
            raise ValueError(f"unfold: size {size} is larger than dimension {dimension} of size {n}")
        starts = np.arange(0, n - size + 1, step)
        index = to_device(starts[:, None] + np.arange(size), self.device)
        windows = self[(slice(None),) * d + (index,)]
        return windows.movedim(d + 1, -1)

    def narrow(self, dim: _int, start: _int, length: _int) -> Tensor:
        return self[(slice(None),) * (dim % self.ndim) + (slice(start, start + length),)]

    def unsqueeze(self, dim: _int) -> Tensor:
        dim = dim if dim >= 0 else dim + self.ndim + 1
        return self.reshape(self.shape[:dim] + (1,) + self.shape[dim:])

    def squeeze(self, dim: Optional[IntOrTuple] = None) -> Tensor:
        """Drop dimensions of size 1 (all, or those of `dim`, an int or a tuple; others stay)."""
        if dim is None:
            dims = {d for d, s in enumerate(self.shape) if s == 1}
        else:
            dims = {d % max(self.ndim, 1) for d in ((dim,) if isinstance(dim, int) else dim)}
            dims = {d for d in dims if self.ndim and self.shape[d] == 1}
        return self.reshape(tuple(s for d, s in enumerate(self.shape) if d not in dims))

    def split(self, split_size_or_sections: Union[_int, Sequence[_int]], dim: _int = 0) -> Tuple[Tensor, ...]:
        """Pieces of `split_size` along `dim` (the last may be smaller), or of the given sizes."""
        length = self.shape[dim]
        if isinstance(split_size_or_sections, int):
            sizes = [split_size_or_sections] * (length // split_size_or_sections)
            if length % split_size_or_sections:
                sizes.append(length % split_size_or_sections)
        else:
            sizes = list(split_size_or_sections)
            if sum(sizes) != length:
                raise ValueError(f"split: sizes {sizes} do not add up to dimension {dim} of length {length}")
        if any(size < 0 for size in sizes):
            raise ValueError(f"split: sizes {sizes} must not be negative")
        return ops.Split.apply(self, sizes=sizes, axis=dim)

    def chunk(self, chunks: _int, dim: _int = 0) -> Tuple[Tensor, ...]:
        size = -(-self.shape[dim] // chunks)
        return self.split(size, dim)

    def unbind(self, dim: _int = 0) -> Tuple[Tensor, ...]:
        return tuple(self[(slice(None),) * (dim % self.ndim) + (i,)] for i in range(self.shape[dim]))

    # ------------------------------------------------------------------ in place
    # PyTorch's rule: an in-place change is recorded in the graph when the tensor or the new
    # values take part in one, and refused on a leaf that requires grad (its .grad would have
    # no meaning); under no_grad() (optimiser updates, initialisation) it just writes the data.
    def _assign(self, recorded, direct, what, *operands):
        tracked = _grad_enabled[0] and (self.requires_grad or any(
            isinstance(o, Tensor) and o.requires_grad for o in operands))
        if not tracked:
            direct()
            return self
        if self.requires_grad and self._ctx is None:
            raise RuntimeError(f"{what} on a leaf tensor that requires grad: do it under `with tgs.no_grad():` "
                               "(e.g. an update or initialisation), or on a copy made with .clone()")
        previous = Tensor._wrap(self.data, self._ctx, self._out_index)
        previous.requires_grad = self.requires_grad
        out = recorded(previous)
        if out.dtype != self.dtype:
            out = out.astype(self.dtype)
        self.data, self._ctx, self._out_index, self.requires_grad = out.data, out._ctx, out._out_index, out.requires_grad
        return self

    def _inplace(self, fn, what, *operands):
        """self <- fn(self), in place (see _assign)."""
        def direct():
            result = fn(Tensor._wrap(self.data)).data
            self.data[...] = result.astype(self.dtype, copy=False) if result.dtype != self.dtype else result
        return self._assign(fn, direct, what, *operands)

    def copy_(self, src: ArrayLike) -> Tensor:
        src = src if isinstance(src, Tensor) else Tensor._wrap(xp_of(self.data).asarray(src))
        src = src.to(device=self.device)
        return self._inplace(lambda t: src.expand(self.shape) * 1 if src.shape != self.shape else src * 1,
                             "copy_", src)

    def fill_(self, value: Scalar) -> Tensor:
        if isinstance(value, Tensor):
            return self.copy_(value.reshape(()).expand(self.shape))
        everywhere = xp_of(self.data).ones((), dtype=bool)
        return self._inplace(lambda t: t.masked_fill(everywhere, value), "fill_")

    def zero_(self) -> Tensor:
        return self.fill_(0)

    def add_(self, other: TensorOrScalar, *, alpha: _float = 1) -> Tensor:
        return self._inplace(lambda t: t.add(other, alpha=alpha), "add_", other)
    def sub_(self, other: TensorOrScalar, *, alpha: _float = 1) -> Tensor:
        return self._inplace(lambda t: t.sub(other, alpha=alpha), "sub_", other)
    def mul_(self, other: TensorOrScalar) -> Tensor: return self._inplace(lambda t: t * other, "mul_", other)
    def div_(self, other: TensorOrScalar) -> Tensor: return self._inplace(lambda t: t / other, "div_", other)
    def pow_(self, exponent: TensorOrScalar) -> Tensor: return self._inplace(lambda t: t ** exponent, "pow_", exponent)
    def clamp_(self, min: Optional[TensorOrScalar] = None, max: Optional[TensorOrScalar] = None) -> Tensor:
        return self._inplace(lambda t: t.clamp(min, max), "clamp_", min, max)
    clip_ = clamp_
    def neg_(self) -> Tensor: return self._inplace(lambda t: -t, "neg_")
    def exp_(self) -> Tensor: return self._inplace(lambda t: t.exp(), "exp_")
    def sqrt_(self) -> Tensor: return self._inplace(lambda t: t.sqrt(), "sqrt_")
    def abs_(self) -> Tensor: return self._inplace(lambda t: t.abs(), "abs_")
    def relu_(self) -> Tensor: return self._inplace(lambda t: t.relu(), "relu_")
    def tanh_(self) -> Tensor: return self._inplace(lambda t: t.tanh(), "tanh_")
    def sigmoid_(self) -> Tensor: return self._inplace(lambda t: t.sigmoid(), "sigmoid_")

    def masked_fill_(self, mask: Tensor, value: TensorOrScalar) -> Tensor:
        return self._inplace(lambda t: t.masked_fill(mask, value), "masked_fill_", value)

    def uniform_(self, a: _float = 0.0, b: _float = 1.0) -> Tensor:
        from .random import generator
        with no_grad():
            return self.copy_(Tensor._wrap(to_device(generator().uniform(a, b, self.shape), self.device)))

    def normal_(self, mean: _float = 0.0, std: _float = 1.0) -> Tensor:
        from .random import generator
        with no_grad():
            return self.copy_(Tensor._wrap(to_device(generator().normal(mean, std, self.shape), self.device)))

    def __iadd__(self, other: TensorOrScalar) -> Tensor: return self.add_(other)
    def __isub__(self, other: TensorOrScalar) -> Tensor: return self.sub_(other)
    def __imul__(self, other: TensorOrScalar) -> Tensor: return self.mul_(other)
    def __itruediv__(self, other: TensorOrScalar) -> Tensor: return self.div_(other)

    def detach_(self) -> Tensor:
        self._ctx, self.requires_grad = None, False
        return self


def _unwrap_index(index):
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    if isinstance(index, list):
        return np.asarray(index)
    return index


def _shape_args(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(int(s) for s in shape[0])
    return tuple(int(s) for s in shape)


def _dims(dim, axis, keepdim, keepdims):
    """PyTorch's dim=/keepdim= with NumPy's axis=/keepdims= accepted too."""
    if axis is not None:
        dim = axis
    if keepdims is not None:
        keepdim = keepdims
    if isinstance(dim, list):
        dim = tuple(dim)
    return dim, bool(keepdim)


def _axis(dim, ndim):
    """dim (None, an int or a sequence) as a NumPy axis; a 0-d tensor's dim 0 / -1 is no axis."""
    if dim is None:
        return None
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    return tuple(d % ndim for d in dims) if ndim else ()


def _count(shape, dim):
    """How many elements a reduction over `dim` combines into each result."""
    axis = _axis(dim, len(shape))
    if axis is None:
        return int(np.prod(shape))
    return int(np.prod([shape[d] for d in set(axis)]))


def _is_device(arg):
    """Whether a positional argument of Tensor.to names a device (else it names a dtype)."""
    if isinstance(arg, str):
        return arg.split(":")[0].lower() in ("cpu", "cuda")
    return type(arg).__name__ == "device"


def _topological_order(root_fn):
    """The Functions reachable from `root_fn`, each after every Function it reads from (a
    depth-first walk with an explicit stack, so a graph of any depth works)."""
    order, seen, stack = [], set(), [(root_fn, False)]
    while stack:
        fn, expanded = stack.pop()
        if expanded:
            order.append(fn)
            continue
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        if getattr(fn, "freed", False):
            raise RuntimeError("Trying to backward through the graph a second time (its saved arrays were "
                               "freed after the first backward); pass retain_graph=True to the first backward, "
                               "or rebuild the graph with a new forward pass")
        stack.append((fn, True))
        for edge in fn.edges:
            if edge is not None and edge[0] is not None and id(edge[0]) not in seen:
                stack.append((edge[0], False))
    return order


@in_engine_memory
def _run_backward(root, grad, retain_graph, capture=None):
    """Reverse-mode sweep over the Functions reachable from `root`, without recursion.

    Gradients accumulate into the leaves' (and retain_grad tensors') .grad; with `capture`, a
    dict {id(tensor): [tensor, None]} (autograd.grad), they are summed into it instead and no
    .grad changes."""
    order = _topological_order(root._ctx)
    pending = {id(root._ctx): [None] * root._ctx.n_outputs}
    pending[id(root._ctx)][root._out_index] = grad
    retained = {}
    # A backward may hand one array to two inputs (Add: dy, dy; an LSTM's two biases: db, db).
    # Two tensors must not keep it as their .grad: an in-place update of one (clip_grad_norm_'s
    # g *= coef) would change, here scale twice, the other.
    stored_ids = set()

    def own(g):
        if id(g) in stored_ids:
            g = g.copy()
        stored_ids.add(id(g))
        return g

    # with grad-ready hooks: how many contributions each leaf still waits for
    waiting = _leaf_contributions(order) if _grad_ready_hooks and capture is None else None
    for fn in reversed(order):
        out_grads = pending.pop(id(fn), None)
        if out_grads is None:
            if waiting is not None:
                _release_leaves(fn, waiting)
            continue
        if fn.n_outputs == 1:
            grads_in = (out_grads[0],)
        else:
            grads_in = tuple(g if g is not None else _zeros_like_meta(fn, i, grad)
                             for i, g in enumerate(out_grads))
        input_grads = fn.backward(*grads_in)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        for parent, edge, g in zip(fn.parents, fn.edges, input_grads):
            if parent is None or g is None or not edge[2]:
                continue
            producer, i = edge[0], edge[1]
            if capture is not None:
                if id(parent) in capture and (producer is None or parent._ctx is producer):
                    r = capture[id(parent)]
                    r[1] = g if r[1] is None else r[1] + g
                if producer is None:
                    continue
            elif producer is None:
                parent._accumulate(own(g))
                continue
            elif parent._retains_grad and parent._ctx is producer:
                retained.setdefault(id(parent), [parent, None])
                r = retained[id(parent)]
                r[1] = g if r[1] is None else r[1] + g
            slot = pending.setdefault(id(producer), [None] * producer.n_outputs)
            slot[i] = g if slot[i] is None else slot[i] + g
        if not retain_graph:
            fn.freed = True
            fn.saved = None
        if waiting is not None:
            _release_leaves(fn, waiting)
    for tensor, g in retained.values():
        tensor._accumulate(own(g))


def _leaf_contributions(order):
    """{id(leaf): number of edges into it} over the Functions of one backward."""
    counts = {}
    for fn in order:
        for parent, edge in zip(fn.parents, fn.edges):
            if parent is not None and edge[0] is None and edge[2]:
                counts[id(parent)] = counts.get(id(parent), 0) + 1
    return counts


def _release_leaves(fn, waiting):
    """`fn` has handed out its gradients: a leaf waiting for nothing else is ready."""
    for parent, edge in zip(fn.parents, fn.edges):
        if parent is not None and edge[0] is None and edge[2]:
            waiting[id(parent)] -= 1
            if not waiting[id(parent)]:
                for hook in tuple(_grad_ready_hooks):
                    hook(parent)


def _zeros_like_meta(fn, index, like):
    shape, dtype = fn.output_meta[index]
    return xp_of(like).zeros(shape, dtype=dtype)


# Last, because the ops subclass Function above: importing ops here, once, gives every method
# its op by name (ops -> tensor is the import every op module makes).
from . import ops  # noqa: E402
