"""The Tensor engine: a NumPy (or CuPy) array plus the Function that made it.

A `Function` is one node of the define-by-run graph.  Its `forward` computes arrays and
saves what the `backward` needs; its `backward` maps the gradient of its output(s) to
the gradients of its tensor inputs.  Both sit side by side in one small class (see
`ops.py`), written once against `xp`, the array module of the data.

`Tensor.backward()` walks the Functions in reverse topological order without recursion,
so a graph of any depth works.
"""
import contextlib

import numpy as np

from .device import check_same_device, device_of, normalize_device, to_device, xp_of

_grad_enabled = [True]
# Called with no arguments after every backward() has filled the .grad of the leaves
# (DistributedDataParallel averages the gradients over the ranks there).
_post_backward_hooks = []


def is_grad_enabled():
    return _grad_enabled[0]


class no_grad(contextlib.ContextDecorator):
    """`with no_grad():` (or `@no_grad()`) builds no graph: for evaluation and updates."""

    def __enter__(self):
        self._prev = _grad_enabled[0]
        _grad_enabled[0] = False

    def __exit__(self, *exc):
        _grad_enabled[0] = self._prev
        return False


class enable_grad(no_grad):
    def __enter__(self):
        self._prev = _grad_enabled[0]
        _grad_enabled[0] = True


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
        out = fn.forward(*arrays, **attrs)
        track = _grad_enabled[0] and any(fn.needs_input_grad)
        if track:
            fn.parents = tensors
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

    def __init__(self, data, requires_grad=False, dtype=None, device=None):
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
    shape = property(lambda self: tuple(self.data.shape))
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    device = property(lambda self: device_of(self.data))
    is_leaf = property(lambda self: self._ctx is None)
    T = property(lambda self: self.permute(*reversed(range(self.ndim))))

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def dim(self):
        return self.ndim

    def numel(self):
        return int(self.data.size)

    def __len__(self):
        return self.shape[0]

    def numpy(self):
        """The data as a NumPy array on the host (no graph)."""
        return to_device(self.data, "cpu")

    def item(self):
        if self.numel() != 1:
            raise ValueError(f"item() needs a tensor with one element, this one has shape {self.shape}")
        return self.numpy().reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        dev = ", device='cuda'" if self.device == "cuda" else ""
        return f"Tensor({np.array2string(self.numpy(), precision=4, separator=', ')}, dtype={self.dtype}{dev}{grad})"

    def __hash__(self):
        return id(self)

    def __bool__(self):
        if self.numel() != 1:
            raise ValueError(f"the truth value of a tensor of shape {self.shape} is ambiguous; use .any() or .all()")
        return bool(self.item())

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self.dtype.kind not in "iu":
            raise TypeError("only integer tensors of one element can be used as an index")
        return int(self.item())

    # ------------------------------------------------------------------ graph
    def requires_grad_(self, requires_grad=True):
        if requires_grad and self.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients, not {self.dtype}")
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self):
        """Keep .grad on a non-leaf tensor too (PyTorch's retain_grad)."""
        self._retains_grad = True
        return self

    def detach(self):
        """The same data, cut from the graph (for truncated BPTT and targets)."""
        return Tensor._wrap(self.data)

    def backward(self, gradient=None, retain_graph=False):
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
    def to(self, device=None, dtype=None):
        """Move to 'cpu' / 'cuda' and/or cast; differentiable (the gradient moves back)."""
        out = self
        if dtype is not None and np.dtype(dtype) != self.dtype:
            out = out.astype(dtype)
        if device is not None and normalize_device(device) != self.device:
            out = _ops().ToDevice.apply(out, device=normalize_device(device))
        return out

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    def astype(self, dtype):
        return _ops().Cast.apply(self, dtype=np.dtype(dtype))

    def float(self):
        return self.astype(np.float32)

    def double(self):
        return self.astype(np.float64)

    def long(self):
        return self.astype(np.int64)

    def bool(self):
        return self.astype(np.bool_)

    def contiguous(self):
        return self

    def clone(self):
        return _ops().Clone.apply(self)

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

    def __add__(self, other): return _ops().Add.apply(self, self._operand(other))
    def __radd__(self, other): return _ops().Add.apply(self._operand(other), self)
    def __sub__(self, other): return _ops().Sub.apply(self, self._operand(other))
    def __rsub__(self, other): return _ops().Sub.apply(self._operand(other), self)
    def __mul__(self, other): return _ops().Mul.apply(self, self._operand(other))
    def __rmul__(self, other): return _ops().Mul.apply(self._operand(other), self)
    def __truediv__(self, other): return _ops().Div.apply(self, self._operand(other))
    def __rtruediv__(self, other): return _ops().Div.apply(self._operand(other), self)
    def __neg__(self): return _ops().Neg.apply(self)
    def __matmul__(self, other): return _ops().MatMul.apply(self, self._operand(other))
    def __rmatmul__(self, other): return _ops().MatMul.apply(self._operand(other), self)

    def __pow__(self, exponent):
        if isinstance(exponent, Tensor):
            return _ops().PowTensor.apply(self, exponent)
        return _ops().Pow.apply(self, exponent=exponent)

    def __rpow__(self, base):
        return _ops().PowTensor.apply(self._operand(base), self)

    def __getitem__(self, index):
        return _ops().GetItem.apply(self, index=_unwrap_index(index))

    # comparisons make boolean tensors with no graph (masks, accuracy)
    def _compare(self, other, op):
        if isinstance(other, Tensor):
            check_same_device("comparison", [self.data, other.data])
            other = other.data
        return Tensor._wrap(op(self.data, other))

    def __eq__(self, other): return self._compare(other, lambda a, b: a == b)
    def __ne__(self, other): return self._compare(other, lambda a, b: a != b)
    def __lt__(self, other): return self._compare(other, lambda a, b: a < b)
    def __le__(self, other): return self._compare(other, lambda a, b: a <= b)
    def __gt__(self, other): return self._compare(other, lambda a, b: a > b)
    def __ge__(self, other): return self._compare(other, lambda a, b: a >= b)
    def __invert__(self): return Tensor._wrap(~self.data)
    def __and__(self, other): return self._compare(other, lambda a, b: a & b)
    def __or__(self, other): return self._compare(other, lambda a, b: a | b)

    def any(self): return Tensor._wrap(xp_of(self.data).asarray(self.data.any()))
    def all(self): return Tensor._wrap(xp_of(self.data).asarray(self.data.all()))

    # ------------------------------------------------------------------ elementwise
    def exp(self): return _ops().Exp.apply(self)
    def log(self): return _ops().Log.apply(self)
    def sqrt(self): return _ops().Sqrt.apply(self)
    def abs(self): return _ops().Abs.apply(self)
    def tanh(self): return _ops().Tanh.apply(self)
    def sigmoid(self): return _ops().Sigmoid.apply(self)
    def relu(self): return _ops().ReLU.apply(self)
    def leaky_relu(self, negative_slope=0.01): return _ops().LeakyReLU.apply(self, negative_slope=negative_slope)
    def gelu(self, approximate="none"): return _ops().GELU.apply(self, approximate=approximate)
    def square(self): return self * self

    def clip(self, min=None, max=None):
        return _ops().Clip.apply(self, low=min, high=max)

    clamp = clip

    def masked_fill(self, mask, value):
        """Positions where `mask` is True take `value`; the gradient there is zero."""
        return _ops().Where.apply(mask, self._operand(value), self)

    def softmax(self, dim=-1):
        from .nn import functional as F
        return F.softmax(self, dim)

    def log_softmax(self, dim=-1):
        from .nn import functional as F
        return F.log_softmax(self, dim)

    # ------------------------------------------------------------------ reductions
    def sum(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        dim, keepdim = _dims(dim, axis, keepdim, keepdims)
        return _ops().Sum.apply(self, axis=dim, keepdims=keepdim)

    def mean(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        dim, keepdim = _dims(dim, axis, keepdim, keepdims)
        count = self.numel() // max(1, _reduced_size(self.shape, dim, keep=True))
        return self.sum(dim, keepdim) * (1.0 / count)

    def var(self, dim=None, keepdim=False, *, unbiased=None, correction=None, axis=None, keepdims=None):
        """Variance; like PyTorch the default is unbiased (correction=1)."""
        dim, keepdim = _dims(dim, axis, keepdim, keepdims)
        if correction is None:
            correction = 1 if unbiased is None or unbiased else 0
        n = self.numel() // max(1, _reduced_size(self.shape, dim, keep=True))
        centred = self - self.mean(dim, keepdim=True)
        return (centred * centred).sum(dim, keepdim) * (1.0 / max(n - correction, 1))

    def std(self, dim=None, keepdim=False, **kw):
        return self.var(dim, keepdim, **kw).sqrt()

    def max(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        """Largest values (a Tensor, not PyTorch's (values, indices) tuple: use argmax)."""
        dim, keepdim = _dims(dim, axis, keepdim, keepdims)
        return _ops().Max.apply(self, axis=dim, keepdims=keepdim)

    def min(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        dim, keepdim = _dims(dim, axis, keepdim, keepdims)
        return -_ops().Max.apply(-self, axis=dim, keepdims=keepdim)

    def argmax(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        dim, keepdim = _dims(dim, axis, keepdim, keepdims)
        idx = self.data.argmax(axis=dim)
        if keepdim and dim is not None:
            idx = xp_of(idx).expand_dims(idx, dim)
        return Tensor._wrap(idx)

    def argmin(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return (-self).argmax(dim, keepdim, axis=axis, keepdims=keepdims)

    # ------------------------------------------------------------------ shapes
    def reshape(self, *shape):
        shape = _shape_args(shape)
        return _ops().Reshape.apply(self, shape=shape)

    view = reshape

    def flatten(self, start_dim=0, end_dim=-1):
        nd = self.ndim
        s, e = start_dim % nd if nd else 0, end_dim % nd if nd else 0
        new = self.shape[:s] + (int(np.prod(self.shape[s:e + 1])),) + self.shape[e + 1:]
        return self.reshape(new)

    def permute(self, *dims):
        dims = _shape_args(dims)
        return _ops().Permute.apply(self, dims=tuple(d % self.ndim for d in dims))

    def transpose(self, dim0=0, dim1=1):
        """Swap two dimensions (PyTorch's semantics, not NumPy's full reversal)."""
        dims = list(range(self.ndim))
        dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
        return self.permute(*dims)

    def t(self):
        if self.ndim > 2:
            raise ValueError(f"t() expects a tensor of at most 2 dimensions, got shape {self.shape}; use transpose(dim0, dim1)")
        return self.T

    def expand(self, *shape):
        shape = _shape_args(shape)
        shape = tuple(s if s != -1 else self.shape[i - len(shape) + self.ndim] for i, s in enumerate(shape))
        return _ops().Expand.apply(self, shape=shape)

    def expand_as(self, other):
        return self.expand(other.shape)

    def unsqueeze(self, dim):
        dim = dim if dim >= 0 else dim + self.ndim + 1
        return self.reshape(self.shape[:dim] + (1,) + self.shape[dim:])

    def squeeze(self, dim=None):
        if dim is None:
            return self.reshape(tuple(s for s in self.shape if s != 1))
        dim %= self.ndim
        if self.shape[dim] != 1:
            return self
        return self.reshape(self.shape[:dim] + self.shape[dim + 1:])

    def split(self, split_size_or_sections, dim=0):
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
        pieces, start = [], 0
        for size in sizes:
            index = (slice(None),) * (dim % self.ndim) + (slice(start, start + size),)
            pieces.append(self[index])
            start += size
        return pieces

    def chunk(self, chunks, dim=0):
        size = -(-self.shape[dim] // chunks)
        return self.split(size, dim)

    # ------------------------------------------------------------------ in-place helpers for optimisers
    def zero_(self):
        self.data[...] = 0
        return self


def _ops():
    from . import ops
    return ops


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


def _reduced_size(shape, dim, keep=False):
    """How many elements survive a reduction over `dim` (keep=True: per output element)."""
    if dim is None:
        return 1
    dims = (dim,) if isinstance(dim, int) else dim
    dims = {d % len(shape) for d in dims}
    return int(np.prod([s for i, s in enumerate(shape) if i not in dims]))


def _run_backward(root, grad, retain_graph):
    """Reverse-mode sweep over the Functions reachable from `root`, without recursion."""
    order, seen, stack = [], set(), [(root._ctx, False)]
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
        for parent in fn.parents:
            if parent is not None and parent._ctx is not None and id(parent._ctx) not in seen:
                stack.append((parent._ctx, False))

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

    for fn in reversed(order):
        out_grads = pending.pop(id(fn), None)
        if out_grads is None:
            continue
        if fn.n_outputs == 1:
            grads_in = (out_grads[0],)
        else:
            grads_in = tuple(g if g is not None else _zeros_like_meta(fn, i, grad)
                             for i, g in enumerate(out_grads))
        input_grads = fn.backward(*grads_in)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        for parent, g in zip(fn.parents, input_grads):
            if parent is None or g is None or not parent.requires_grad:
                continue
            if parent._ctx is None:
                parent._accumulate(own(g))
                continue
            if parent._retains_grad:
                retained.setdefault(id(parent), [parent, None])
                r = retained[id(parent)]
                r[1] = g if r[1] is None else r[1] + g
            slot = pending.setdefault(id(parent._ctx), [None] * parent._ctx.n_outputs)
            i = parent._out_index
            slot[i] = g if slot[i] is None else slot[i] + g
        if not retain_graph:
            fn.freed = True
            fn.saved = None
    for tensor, g in retained.values():
        tensor._accumulate(own(g))


def _zeros_like_meta(fn, index, like):
    shape, dtype = fn.output_meta[index]
    return xp_of(like).zeros(shape, dtype=dtype)

