"""Making tensors: factories and the ops that take several tensors (cat, stack, where)."""
import numpy as np

from . import ops
from .device import to_device, xp_of
from .random import generator
from .tensor import Tensor

DEFAULT_FLOAT = np.float32


def tensor(data, dtype=None, device=None, requires_grad=False):
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, device=device)


def _shape(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def _make(array, dtype, device, requires_grad):
    array = array.astype(dtype or DEFAULT_FLOAT, copy=False)
    return Tensor(to_device(array, device or "cpu"), requires_grad=requires_grad, dtype=array.dtype)


def zeros(*shape, dtype=None, device=None, requires_grad=False):
    return _make(np.zeros(_shape(shape)), dtype, device, requires_grad)


def ones(*shape, dtype=None, device=None, requires_grad=False):
    return _make(np.ones(_shape(shape)), dtype, device, requires_grad)


def full(shape, fill_value, dtype=None, device=None, requires_grad=False):
    return _make(np.full(_shape((shape,)), fill_value), dtype, device, requires_grad)


def eye(n, m=None, dtype=None, device=None, requires_grad=False):
    return _make(np.eye(n, m), dtype, device, requires_grad)


def randn(*shape, dtype=None, device=None, requires_grad=False):
    """Standard normal samples from the engine's seeded generator."""
    return _make(generator().standard_normal(_shape(shape)), dtype, device, requires_grad)


def rand(*shape, dtype=None, device=None, requires_grad=False):
    """Uniform [0, 1) samples from the engine's seeded generator."""
    return _make(generator().random(_shape(shape)), dtype, device, requires_grad)


def randint(low, high, size, device=None):
    return Tensor(to_device(generator().integers(low, high, size=size, dtype=np.int64), device or "cpu"))


def arange(start, end=None, step=1, dtype=None, device=None):
    values = np.arange(start, end, step) if end is not None else np.arange(start)
    if dtype is None and values.dtype.kind == "f":
        dtype = DEFAULT_FLOAT
    return Tensor(to_device(values.astype(dtype or values.dtype), device or "cpu"))


def zeros_like(t, dtype=None, requires_grad=False):
    return Tensor(xp_of(t.data).zeros(t.shape, dtype=dtype or t.dtype), requires_grad=requires_grad, dtype=dtype or t.dtype)


def ones_like(t, dtype=None, requires_grad=False):
    return Tensor(xp_of(t.data).ones(t.shape, dtype=dtype or t.dtype), requires_grad=requires_grad, dtype=dtype or t.dtype)


def cat(tensors, dim=0):
    """Join tensors along an existing dimension (torch.cat)."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: needs at least one tensor")
    return ops.Concat.apply(*tensors, axis=dim % tensors[0].ndim)


concat = cat


def stack(tensors, dim=0):
    """Join same-shaped tensors along a new dimension (torch.stack)."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: needs at least one tensor")
    return ops.Stack.apply(*tensors, axis=dim % (tensors[0].ndim + 1))


def where(condition, x, y):
    """Elementwise choice: x where condition holds, else y (both differentiable)."""
    like = x if isinstance(x, Tensor) else y
    cond = condition.data if isinstance(condition, Tensor) else condition
    return ops.Where.apply(cond, like._operand(x), like._operand(y))


def one_hot(indices, num_classes=-1):
    """Integer indices (...,) -> one-hot (..., num_classes) as int64, like torch's one_hot."""
    idx = indices.data if isinstance(indices, Tensor) else np.asarray(indices)
    xp = xp_of(idx)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"one_hot: indices must be integers, not {idx.dtype}")
    if num_classes < 0:
        num_classes = int(idx.max()) + 1
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= num_classes):
        raise ValueError(f"one_hot: indices must lie in [0, {num_classes}), got [{int(idx.min())}, {int(idx.max())}]")
    out = xp.zeros(idx.shape + (num_classes,), dtype=np.int64)
    xp.put_along_axis(out, idx[..., None].astype(np.int64), 1, axis=-1)
    return Tensor(out)
