"""Matrix products and their relatives: matmul, the fused linear layer, einsum, and the
embedding lookup (a product with one-hot rows, done as a row pick)."""
import numpy as np

from ..backend import kernels
from ..device import device_of, xp_of
from ..tensor import Function
from .elementwise import unbroadcast


def matmul_rows(a, b):
    """a @ b of two arrays, the one place the engine multiplies matrices: through the `matmul`
    kernel family (on the cython backend the GEMMs share the other kernels' thread team), and
    a stack of matrices times one matrix as ONE GEMM over all rows (NumPy would run one small
    product per matrix of the stack: x (B, T, d) @ W, B of them)."""
    product = kernels("matmul", device_of(a)).matmul
    if a.ndim > 2 and b.ndim == 2:
        return product(a.reshape(-1, a.shape[-1]), b).reshape(*a.shape[:-1], b.shape[-1])
    return product(a, b)


class MatMul(Function):
    """y = a @ b (batched, with NumPy's 1-D rules);  da = dy @ b^T, db = a^T @ dy."""

    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError("matmul: both operands need at least one dimension; use * for scalars")
        if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
            raise ValueError(f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} are not aligned "
                             f"({a.shape[-1]} != {b.shape[-2 if b.ndim > 1 else 0]})")
        self.save_for_backward(a, b)
        return matmul_rows(a, b)

    def backward(self, dy):
        a, b = self.saved
        xp = xp_of(dy)
        # Promote 1-D operands to matrices so one rule covers every case, then undo it.
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        dy2 = dy
        if b.ndim == 1:  # first: for 1-D @ 1-D the output is a scalar, (1, 1) after both
            dy2 = xp.expand_dims(dy2, -1)
        if a.ndim == 1:
            dy2 = xp.expand_dims(dy2, -2)
        da = db = None
        if self.needs_input_grad[0]:
            da = matmul_rows(dy2, xp.swapaxes(b2, -1, -2))
            da = unbroadcast(da, a2.shape).reshape(a.shape)
        if self.needs_input_grad[1]:
            if b2.ndim == 2 and a2.ndim > 2:
                # a weight shared by a batch: one GEMM over all rows instead of a batched sum
                db = matmul_rows(a2.reshape(-1, a2.shape[-1]).T, dy2.reshape(-1, dy2.shape[-1]))
            else:
                db = unbroadcast(matmul_rows(xp.swapaxes(a2, -1, -2), dy2), b2.shape)
            db = db.reshape(b.shape)
        return da, db


def _rows2d(a, width):
    """View an array as (rows, width): every leading axis is a batch axis."""
    return a.reshape(-1, width)


def _memory_order(a):
    """The order of a's leading axes, outermost first in memory, in which they merge into one
    axis of rows: a's rows as a 2-D view (unit-stride rows, any distance apart) once its axes
    are put in that order.  A batch_first RNN's output is its time-major result permuted, and
    an LSTM's result lies in the rows of its weight-gradient GEMM (ops/recurrence.py).  None
    when `a` is contiguous already or its rows do not merge."""
    if a.ndim < 3 or a.flags.c_contiguous or a.strides[-1] != a.itemsize:
        return None
    order = sorted(range(a.ndim - 1), key=lambda axis: -a.strides[axis])
    merges = all(a.strides[outer] == a.strides[inner] * a.shape[inner] for outer, inner in zip(order, order[1:]))
    if not merges or a.strides[order[-1]] < a.shape[-1] * a.itemsize:
        return None
    return tuple(order) + (a.ndim - 1,)


def _undo(order):
    """The permutation that undoes `order`."""
    return tuple(sorted(range(len(order)), key=order.__getitem__))


class Linear(Function):
    """y = x W^T + b for x (..., in), W (out, in), b (out,);
    dx = dy W,  dW = dy^T x (summed over every batch row),  db = sum of dy over the rows.

    An x whose rows merge into one 2-D array once its leading axes are in memory order
    (_memory_order) is multiplied where it lies and y is given the same permutation (a view):
    a batch_first LSTM's output then feeds the head without a transposing copy (2 MB per
    lstm_lm step; the logits' own copy, when the model reshapes them, is a quarter of that)."""

    def forward(self, x, weight, bias=None):
        if x.shape[-1] != weight.shape[1]:
            raise ValueError(f"linear: input has {x.shape[-1]} features but the weight {tuple(weight.shape)} "
                             f"expects {weight.shape[1]}")
        self.order = _memory_order(x)
        if self.order is not None:
            x = x.transpose(self.order)
        rows = _rows2d(x, weight.shape[1])   # a copy when x is another view: made once, kept
        self.save_for_backward(rows, weight)
        y = matmul_rows(rows, weight.T).reshape(*x.shape[:-1], weight.shape[0])
        if bias is not None:
            y += bias
        return y if self.order is None else y.transpose(_undo(self.order))

    def backward(self, dy):
        rows, weight = self.saved
        if self.order is not None:
            dy = dy.transpose(self.order)
        dy_rows = _rows2d(dy, weight.shape[0])
        dx = dw = db = None
        if self.needs_input_grad[0]:
            dx = matmul_rows(dy_rows, weight).reshape(*dy.shape[:-1], weight.shape[1])
            dx = dx if self.order is None else dx.transpose(_undo(self.order))
        if self.needs_input_grad[1]:
            dw = matmul_rows(dy_rows.T, rows)
        if self.needs_input_grad[2]:
            db = dy_rows.sum(axis=0)
        return dx, dw, db


class Einsum(Function):
    """y = einsum(equation, A_1, ..., A_n) (explicit '->' form, no '...');
    dA_k = einsum of dy with the other operands into A_k's subscripts, broadcast over any
    index that only A_k has (it was summed out)."""

    def forward(self, *operands, equation):
        xp = xp_of(operands[0])
        equation = equation.replace(" ", "")
        if "->" not in equation or "." in equation:
            raise ValueError(f"einsum: give the output explicitly ('ij,jk->ik') and no '...'; got {equation!r}")
        inputs, self.output = equation.split("->")
        self.inputs = inputs.split(",")
        if len(self.inputs) != len(operands):
            raise ValueError(f"einsum: {equation!r} names {len(self.inputs)} operands, {len(operands)} given")
        if any(len(set(s)) != len(s) for s in self.inputs):
            raise ValueError(f"einsum: a repeated index within one operand (a diagonal) is not supported: {equation!r}")
        self.save_for_backward(*operands)
        return xp.einsum(equation, *operands)

    def backward(self, dy):
        xp = xp_of(dy)
        operands = self.saved
        grads = []
        for k, subs in enumerate(self.inputs):
            if not self.needs_input_grad[k]:
                grads.append(None)
                continue
            others = [(s, a) for j, (s, a) in enumerate(zip(self.inputs, operands)) if j != k]
            present = set(self.output).union(*[set(s) for s, _ in others])
            kept = "".join(c for c in subs if c in present)
            spec = ",".join([self.output] + [s for s, _ in others]) + "->" + kept
            g = xp.einsum(spec, dy, *[a for _, a in others])
            # indices only this operand had were summed out: its gradient is constant along them
            shape = [operands[k].shape[i] if c in present else 1 for i, c in enumerate(subs)]
            g = g.reshape(shape)   # `kept` lists the indices in the operand's own order
            grads.append(xp.broadcast_to(g, operands[k].shape).copy())
        return tuple(grads)


def _scatter_add(target, index, values):
    """target[index[i]] += values[i] for rows of values, with repeated indices adding up."""
    xp = xp_of(target)
    if xp is np and index.size:
        # np.add.at adds one row at a time (a Transformer's embedding gradient: 5 ms); sorting
        # the rows by index and adding each run of equal indices with one reduceat: 1 ms
        index = np.where(index < 0, index + len(target), index)   # -1 and V-1 are one row
        order = np.argsort(index, kind="stable")
        ids = index[order]
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        target[ids[starts]] += np.add.reduceat(values[order], starts, axis=0)
    elif hasattr(xp.add, "at"):
        xp.add.at(target, index, values)
    else:  # older CuPy
        import cupyx
        cupyx.scatter_add(target, index, values)


class Embedding(Function):
    """y = W[ids] (a row lookup);  dW[v] = sum of dy over the positions whose id is v
    (a scatter-add), except the padding row, which never learns."""

    def forward(self, weight, ids, padding_idx=None):
        xp = xp_of(weight)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"embedding: indices must be integers, not {ids.dtype}")
        if ids.size and (int(ids.min()) < -weight.shape[0] or int(ids.max()) >= weight.shape[0]):
            raise IndexError(f"embedding: indices must lie in [0, {weight.shape[0]}), "
                             f"got [{int(ids.min())}, {int(ids.max())}]")
        self.num, self.padding_idx = weight.shape[0], padding_idx
        self.save_for_backward(ids)
        return xp.take(weight, ids, axis=0)

    def backward(self, dy):
        xp = xp_of(dy)
        ids, = self.saved
        dim = dy.shape[-1]
        dw = xp.zeros((self.num, dim), dtype=dy.dtype)
        _scatter_add(dw, ids.reshape(-1), dy.reshape(-1, dim))
        if self.padding_idx is not None:
            dw[self.padding_idx] = 0
        return dw, None
