"""Movement and indexing: reshape, permute, expand, indexing and assignment, concatenation,
stacking, gather and scatter, padding, and moves between devices.  They copy or rearrange
entries; backward puts each gradient back where its entry came from."""
import numpy as np

from ..device import address_of, allocation_of, device_of, strided_view, to_device, xp_of
from ..tensor import Function
from .elementwise import unbroadcast

PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}  # -> np.pad's


def contiguous(a):
    """`a` laid out C-contiguously (a copy only when it is not): the compiled kernels walk raw memory."""
    return xp_of(a).ascontiguousarray(a)


class Reshape(Function):
    """y = x viewed with a new shape;  dx = dy reshaped back."""

    def forward(self, x, shape):
        self.shape = x.shape
        try:
            return x.reshape(shape)
        except ValueError:
            raise ValueError(f"reshape: cannot view shape {tuple(x.shape)} ({x.size} elements) as {shape}") from None

    def backward(self, dy):
        return dy.reshape(self.shape)


class Permute(Function):
    """y = x with dimensions reordered;  dx = dy with the inverse order."""

    def forward(self, x, dims):
        if sorted(dims) != list(range(x.ndim)):
            raise ValueError(f"permute: {dims} is not a permutation of the {x.ndim} dimensions of shape {tuple(x.shape)}")
        self.inverse = tuple(np.argsort(dims))
        return x.transpose(dims)

    def backward(self, dy):
        return dy.transpose(self.inverse)


class Expand(Function):
    """y = x broadcast to `shape`;  dx = dy summed back."""

    def forward(self, x, shape):
        self.shape = x.shape
        try:
            return xp_of(x).broadcast_to(x, shape)
        except ValueError:
            raise ValueError(f"expand: shape {tuple(x.shape)} cannot be expanded to {shape}") from None

    def backward(self, dy):
        return unbroadcast(dy, self.shape)


def _is_basic_index(index):
    parts = index if isinstance(index, tuple) else (index,)
    return all(p is None or p is Ellipsis or isinstance(p, (int, np.integer, slice)) for p in parts)


class GetItem(Function):
    """y = x[index] (ints, slices, None, integer arrays, boolean masks);
    dx = zeros with dy scattered back (added, so repeated indices accumulate)."""

    def forward(self, x, index):
        self.shape, self.dtype = x.shape, x.dtype
        self.save_for_backward(index)        # may hold integer or boolean arrays
        try:
            return x[index]
        except IndexError as exc:
            raise IndexError(f"index {index!r} is invalid for a tensor of shape {tuple(x.shape)}: {exc}") from None

    def backward(self, dy):
        xp = xp_of(dy)
        index, = self.saved
        dx = xp.zeros(self.shape, dtype=dy.dtype)
        if _is_basic_index(index):
            dx[index] = dy
        else:
            xp.add.at(dx, index, dy)
        return dx


class SetItem(Function):
    """y = a copy of x with y[index] = v;  dx = dy with zeros at index, dv = dy[index] summed back
    to v's shape (where an advanced index repeats a position, the last write wins in y)."""

    def forward(self, x, value, index):
        xp = xp_of(x)
        y = x.copy()
        try:
            y[index] = value
        except (IndexError, ValueError) as exc:
            raise type(exc)(f"setitem: cannot assign a value of shape {tuple(xp.shape(value))} to index "
                            f"{index!r} of a tensor of shape {tuple(x.shape)}: {exc}") from None
        self.value_shape = xp.shape(value)
        self.save_for_backward(index)
        return y

    def backward(self, dy):
        index, = self.saved
        dx = None
        if self.needs_input_grad[0]:
            dx = dy.copy()
            dx[index] = 0
        dv = unbroadcast(dy[index], self.value_shape) if self.needs_input_grad[1] else None
        return dx, dv


class Concat(Function):
    """y = the inputs joined along `axis`;  each dx = its slice of dy."""

    def forward(self, *arrays, axis=0):
        xp = xp_of(arrays[0])
        self.axis = axis
        self.bounds = np.cumsum([a.shape[axis] for a in arrays])[:-1].tolist()
        try:
            return xp.concatenate(arrays, axis=axis)
        except ValueError:
            raise ValueError(f"cat: shapes {[tuple(a.shape) for a in arrays]} differ outside dimension {axis}") from None

    def backward(self, dy):
        return tuple(xp_of(dy).split(dy, self.bounds, axis=self.axis))


class Split(Function):
    """ys = x's consecutive pieces of `sizes` along `axis` (views);  dx = the dys joined along it,
    a piece whose gradient never came taking zeros.  One op for all the pieces: as separate
    slices (GetItem) each backward wrote its dy into a zero array of x's full shape and the
    sweep added those up, three x-sized arrays for an attention's q, k, v.  When the dys already
    lie side by side in one array (ops.ScaledDotProductAttention makes dq, dk, dv so), dx is
    that array, a view: nothing is copied."""

    def forward(self, x, sizes, axis=0):
        self.axis = axis % x.ndim
        bounds = np.cumsum(sizes).tolist()
        index = (slice(None),) * self.axis
        return tuple(x[index + (slice(stop - size, stop),)] for size, stop in zip(sizes, bounds))

    def backward(self, *dys):
        joined = adjacent_join(dys, self.axis)
        return joined if joined is not None else xp_of(dys[0]).concatenate(dys, axis=self.axis)


def adjacent_join(pieces, axis):
    """The pieces joined along `axis` as one view when they are consecutive slices of one array
    along it (one allocation, dtype and strides, the same shape off the axis, each beginning
    where the one before ends); else None.  Each element of the view is then the matching
    piece's own."""
    first = pieces[0]
    owner, stride, address = allocation_of(first), first.strides[axis], address_of(first)
    off_axis = first.shape[:axis] + first.shape[axis + 1:]
    for piece in pieces:
        if (piece.size == 0 or piece.dtype != first.dtype or piece.strides != first.strides
                or piece.shape[:axis] + piece.shape[axis + 1:] != off_axis
                or allocation_of(piece) is not owner or address_of(piece) != address):
            return None
        address += piece.shape[axis] * stride
    shape = first.shape[:axis] + (sum(piece.shape[axis] for piece in pieces),) + first.shape[axis + 1:]
    return strided_view(first, shape, first.strides)


class Stack(Function):
    """y = the inputs stacked along a new `axis`;  each dx = dy indexed along it."""

    def forward(self, *arrays, axis=0):
        self.axis = axis
        if len({tuple(a.shape) for a in arrays}) > 1:
            raise ValueError(f"stack: every tensor needs the same shape, got {[tuple(a.shape) for a in arrays]}")
        return xp_of(arrays[0]).stack(arrays, axis=axis)

    def backward(self, dy):
        xp = xp_of(dy)
        return tuple(xp.take(dy, i, axis=self.axis) for i in range(dy.shape[self.axis]))


def along_axis_index(index, axis):
    """The full advanced index that picks `index` (an integer array) along `axis`, as
    take_along_axis does: a tuple usable with x[...] and xp.add.at."""
    xp = xp_of(index)
    parts = []
    for d in range(index.ndim):
        if d == axis:
            parts.append(index)
        else:
            shape = [1] * index.ndim
            shape[d] = index.shape[d]
            parts.append(xp.arange(index.shape[d]).reshape(shape))
    return tuple(parts)


class Gather(Function):
    """y = x picked at `index` along `axis` (torch.gather; take_along_axis);
    dx = zeros with dy added back at the picked positions (repeated picks accumulate)."""

    def forward(self, x, index, axis):
        xp = xp_of(x)
        if index.ndim != x.ndim:
            raise ValueError(f"gather: index has {index.ndim} dimensions but the input has {x.ndim}; they must match")
        if index.size and (int(index.min()) < -x.shape[axis] or int(index.max()) >= x.shape[axis]):
            raise IndexError(f"gather: index out of range for dimension {axis} of size {x.shape[axis]}")
        self.shape = x.shape
        where = along_axis_index(xp.asarray(index, dtype=np.int64), axis)
        self.save_for_backward(*where)
        return x[where]

    def backward(self, dy):
        xp = xp_of(dy)
        dx = xp.zeros(self.shape, dtype=dy.dtype)
        xp.add.at(dx, self.saved, dy)
        return dx, None


class ScatterAdd(Function):
    """y = x with src added at `index` along `axis` (torch.scatter_add; repeated positions add up);
    dx = dy, dsrc = dy picked at the positions src went to."""

    def forward(self, x, index, src, axis):
        xp = xp_of(x)
        where = along_axis_index(xp.asarray(index, dtype=np.int64), axis)
        self.src_shape = src.shape
        self.save_for_backward(*where)
        y = x.copy()
        xp.add.at(y, where, src[tuple(slice(0, n) for n in index.shape)])
        return y

    def backward(self, dy):
        return dy, None, _scattered_source_grad(dy, self.saved, self.src_shape) if self.needs_input_grad[2] else None


class Scatter(Function):
    """y = x with y[index] = src along `axis` (torch.scatter; where a position repeats, the last
    write wins);  dx = dy with zeros where written, dsrc = dy picked at the written positions."""

    def forward(self, x, index, src, axis):
        xp = xp_of(x)
        where = along_axis_index(xp.asarray(index, dtype=np.int64), axis)
        self.src_shape = xp.shape(src)
        self.save_for_backward(*where)
        y = x.copy()
        y[where] = src[tuple(slice(0, n) for n in index.shape)] if xp.ndim(src) else src
        return y

    def backward(self, dy):
        where = self.saved
        dx = dy.copy()
        dx[where] = 0
        return dx, None, _scattered_source_grad(dy, where, self.src_shape) if self.needs_input_grad[2] else None


def _scattered_source_grad(dy, where, src_shape):
    """The gradient of a scatter's source: dy at the positions written, placed in the leading
    block of src that the index covered (zeros elsewhere, and summed for a scalar source)."""
    picked = dy[where]
    if len(src_shape) == 0:
        return picked.sum()
    dsrc = xp_of(dy).zeros(src_shape, dtype=dy.dtype)
    dsrc[tuple(slice(0, n) for n in picked.shape)] = picked
    return dsrc


class Pad(Function):
    """y = x grown by widths[d] = (before, after) entries along each dimension d:
    'constant' fills them with `value` (a negative width crops instead); 'reflect',
    'replicate' and 'circular' copy entries of x, as torch.nn.functional.pad does.
    dx = dy at the positions x was copied to, summed where one entry was copied twice."""

    def forward(self, x, widths, mode="constant", value=0.0):
        xp = xp_of(x)
        self.shape, self.widths, self.mode = x.shape, widths, mode
        if mode == "constant":
            out_shape = tuple(n + b + a for n, (b, a) in zip(x.shape, widths))
            if min(out_shape) < 0:
                raise ValueError(f"pad: widths {widths} crop more than the input shape {tuple(x.shape)} holds")
            self.src, self.dst = self._inner_slices(x.shape, widths)
            y = xp.full(out_shape, value, dtype=x.dtype)
            y[self.dst] = x[self.src]
            return y
        # reflect / replicate / circular: gather x at the positions NumPy's pad maps each output to
        self.gathers, indices = [], []
        y = x
        for axis, (n, (before, after)) in enumerate(zip(x.shape, widths)):
            if before or after:
                index = np.pad(np.arange(n), (before, after), mode=PAD_MODES[mode])
                index = to_device(index, device_of(x))
                self.gathers.append((axis, n))
                indices.append(index)
                y = xp.take(y, index, axis=axis)
        self.save_for_backward(*indices)
        return y

    def backward(self, dy):
        xp = xp_of(dy)
        if self.mode == "constant":
            dx = xp.zeros(self.shape, dtype=dy.dtype)
            dx[self.src] = dy[self.dst]
            return dx
        for (axis, n), index in zip(reversed(self.gathers), reversed(self.saved)):
            shape = list(dy.shape)
            shape[axis] = n
            dx = xp.zeros(shape, dtype=dy.dtype)
            xp.add.at(dx, (slice(None),) * axis + (index,), dy)
            dy = dx
        return dy

    @staticmethod
    def _inner_slices(shape, widths):
        """Where x (src) lands in y (dst) when negative widths crop and positive ones pad."""
        src, dst = [], []
        for n, (before, after) in zip(shape, widths):
            start, stop = max(-before, 0), n - max(-after, 0)
            src.append(slice(start, max(stop, start)))
            dst.append(slice(max(before, 0), max(before, 0) + max(stop - start, 0)))
        return tuple(src), tuple(dst)


class ToDevice(Function):
    """y = x on another device;  dx = dy moved back."""

    def forward(self, x, device):
        self.source = "cuda" if type(x).__module__.startswith("cupy") else "cpu"
        return to_device(x, device)

    def backward(self, dy):
        return to_device(dy, self.source)
