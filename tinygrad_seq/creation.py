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
    array = array.astype(np.dtype(dtype) if dtype is not None else DEFAULT_FLOAT, copy=False)
    return Tensor(to_device(array, device or "cpu"), requires_grad=requires_grad, dtype=array.dtype)


def zeros(*shape, dtype=None, device=None, requires_grad=False):
    return _make(np.zeros(_shape(shape)), dtype, device, requires_grad)


def ones(*shape, dtype=None, device=None, requires_grad=False):
    return _make(np.ones(_shape(shape)), dtype, device, requires_grad)


def _default_dtype(value, dtype):
    """PyTorch's inference for a fill value: bool stays bool, an int gives int64, a float float32."""
    if dtype is not None:
        return dtype
    if isinstance(value, (bool, np.bool_)):
        return np.bool_
    if isinstance(value, (int, np.integer)):
        return np.int64
    return DEFAULT_FLOAT


def full(size, fill_value, *, dtype=None, device=None, requires_grad=False):
    if isinstance(fill_value, Tensor):
        fill_value = fill_value.item()
    return _make(np.full(_shape((size,)), fill_value), _default_dtype(fill_value, dtype), device, requires_grad)


def full_like(t, fill_value, *, dtype=None, device=None, requires_grad=False):
    return full(t.shape, fill_value, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def empty(*shape, dtype=None, device=None, requires_grad=False):
    """A tensor of `shape` to be filled in; zeros here (no uninitialised memory is handed out)."""
    return zeros(*shape, dtype=dtype, device=device, requires_grad=requires_grad)


def linspace(start, end, steps, *, dtype=None, device=None, requires_grad=False):
    """`steps` evenly spaced values from start to end, both included."""
    return _make(np.linspace(float(start), float(end), int(steps)), dtype, device, requires_grad)


def logspace(start, end, steps, base=10.0, *, dtype=None, device=None, requires_grad=False):
    return _make(np.logspace(float(start), float(end), int(steps), base=base), dtype, device, requires_grad)


def eye(n, m=None, dtype=None, device=None, requires_grad=False):
    return _make(np.eye(n, m), dtype, device, requires_grad)


def randn(*shape, dtype=None, device=None, requires_grad=False):
    """Standard normal samples from the engine's seeded generator."""
    return _make(generator().standard_normal(_shape(shape)), dtype, device, requires_grad)


def rand(*shape, dtype=None, device=None, requires_grad=False):
    """Uniform [0, 1) samples from the engine's seeded generator."""
    return _make(generator().random(_shape(shape)), dtype, device, requires_grad)


def _rng(generator_):
    """A Generator's NumPy generator, or the engine's seeded one."""
    return generator() if generator_ is None else generator_.rng


def randint(low, high=None, size=None, *, generator=None, dtype=None, device=None):
    """Integers uniform in [low, high); `randint(high, size)` as PyTorch starts at 0."""
    if size is None:
        low, high, size = 0, low, high
    values = _rng(generator).integers(low, high, size=_shape((size,)), dtype=np.int64)
    return Tensor(to_device(values.astype(dtype or np.int64), device or "cpu"))


def randperm(n, *, generator=None, dtype=None, device=None):
    """A random permutation of 0 .. n-1."""
    return Tensor(to_device(_rng(generator).permutation(int(n)).astype(dtype or np.int64), device or "cpu"))


def rand_like(t, *, dtype=None):
    return rand(t.shape, dtype=dtype or t.dtype, device=t.device)


def randn_like(t, *, dtype=None):
    return randn(t.shape, dtype=dtype or t.dtype, device=t.device)


def multinomial(input, num_samples, replacement=False, *, generator=None):
    """Indices drawn from each row of `input` (non-negative weights, not necessarily normalised):
    shape (num_samples,) for one row, (rows, num_samples) for a matrix.  Without replacement an
    index is drawn at most once per row."""
    weights = input.numpy() if isinstance(input, Tensor) else np.asarray(input)
    rows = np.atleast_2d(weights).astype(np.float64)
    if (rows < 0).any() or not np.isfinite(rows).all():
        raise ValueError("multinomial: the weights must be finite and non-negative")
    if (rows.sum(axis=1) <= 0).any():
        raise ValueError("multinomial: every row needs a positive total weight")
    if not replacement and num_samples > (rows > 0).sum(axis=1).min():
        raise ValueError(f"multinomial: cannot draw {num_samples} samples without replacement from a row "
                         f"with fewer non-zero weights; pass replacement=True")
    rng = _rng(generator)
    out = np.stack([rng.choice(row.size, size=num_samples, replace=replacement, p=row / row.sum())
                    for row in rows]).astype(np.int64)
    out = out[0] if weights.ndim == 1 else out
    return Tensor(to_device(out, input.device if isinstance(input, Tensor) else "cpu"))


def arange(start, end=None, step=1, *, dtype=None, device=None, requires_grad=False):
    """start, start + step, ... below end (arange(n): 0 .. n-1); integer arguments give int64,
    any float one float32, unless dtype= says otherwise."""
    values = np.arange(start, end, step) if end is not None else np.arange(start)
    if dtype is None:
        dtype = DEFAULT_FLOAT if values.dtype.kind == "f" else np.int64
    values = values.astype(dtype)
    return Tensor(to_device(values, device or "cpu"), dtype=values.dtype, requires_grad=requires_grad)


def zeros_like(t, dtype=None, requires_grad=False, device=None):
    return Tensor(xp_of(t.data).zeros(t.shape, dtype=dtype or t.dtype), requires_grad=requires_grad,
                  dtype=dtype or t.dtype, device=device)


def ones_like(t, dtype=None, requires_grad=False, device=None):
    return Tensor(xp_of(t.data).ones(t.shape, dtype=dtype or t.dtype), requires_grad=requires_grad,
                  dtype=dtype or t.dtype, device=device)


empty_like = zeros_like


def from_numpy(array):
    """A tensor holding `array` with its dtype (float64 stays float64, unlike tensor())."""
    return Tensor(array, dtype=np.asarray(array).dtype)


def is_tensor(obj):
    return isinstance(obj, Tensor)


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


def where(condition, x=None, y=None):
    """Elementwise choice: x where condition holds, else y (both differentiable);
    where(condition) alone is condition.nonzero(as_tuple=True)."""
    if x is None and y is None:
        return Tensor(condition).nonzero(as_tuple=True)
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
