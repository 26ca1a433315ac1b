"""Fused scaled dot-product attention, written once against `xp` (NumPy or CuPy).

For each of the N matrices of q (..., L, E), k (..., S, E), v (..., S, Ev) (N the product of
the leading axes, which the three share), queries q (L, E), keys k (S, E), values v (S, Ev):

    s = scale * q k^T                          (L, S); hidden pairs are -inf
    lse_i = log sum_j exp(s_ij)                (..., L): the softmax's normaliser, saved
    out = p v,   p = exp(s - lse)              (..., L, Ev)

Layouts: every array may have any strides as long as its last axis has unit stride (a head
view (N, h, L, d) of a packed (N, L, 3E) projection is read where it lies); the outputs can
be given (`out=`; `dq=`, `dk=`, `dv=`), in any such layout, and are then filled and returned.
The reference and the numba and cuda backends compute on stacked copies (`stacked`) and
write the results back (`unstacked`); the cython one reads and writes the views in place.

`causal` hides the future, top-left aligned as PyTorch's is_causal: query i sees the keys
j <= i.  A hidden pair takes no part at all: p is exactly 0 there and the products skip it,
so a NaN or inf in a key or value that a query cannot see never reaches that query (as in
flash attention, which never loads such a block).  With finite operands a plain product
with p's zeros is exactly that; only an operand holding NaN/inf takes the row-by-row
product of `visible_matmul`.

Backward, from out and lse alone (memory O(N L) beyond the inputs: nothing of size L x S is
kept between the passes; p is recomputed):

    p = exp(scale q k^T - lse)  (0 where hidden);   D_i = sum_e dout_ie out_ie
    dp = dout v^T;   ds = p * (dp - D)
    dq = scale ds k;   dk = scale ds^T q;   dv = p^T dout

NaN and inf in q/k/v spread to every output they take part in (a NaN score makes its
query's whole row NaN); the ValueError messages here are the ones every backend copies.
"""
from tinygrad_seq.device import rows_in_place, xp_of


def _check_rows(named):
    """Each (name, array): its rows are read (written) in place, so its last axis has unit stride."""
    for name, a in named:
        if a is not None and not rows_in_place(a):
            raise ValueError(f"attention: {name} must have a unit stride along its last axis (and strides "
                             f"in whole elements); got strides {tuple(a.strides)} for itemsize {a.itemsize}")


def check_attention_args(q, k, v, out=None):
    """The shapes, dtypes and layouts attention_forward accepts (every backend's messages)."""
    if q.ndim < 3 or k.ndim != q.ndim or v.ndim != q.ndim:
        raise ValueError(f"attention: q, k and v must be (..., L, E), (..., S, E), (..., S, Ev) with at least one "
                         f"leading axis; got shapes {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if not (q.shape[:-2] == k.shape[:-2] == v.shape[:-2]):
        raise ValueError(f"attention: q, k and v must have the same leading axes; got "
                         f"{tuple(q.shape[:-2])}, {tuple(k.shape[:-2])}, {tuple(v.shape[:-2])}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"attention: q has {q.shape[-1]} features per position but k has {k.shape[-1]}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"attention: k has {k.shape[-2]} positions but v has {v.shape[-2]}")
    if k.shape[-2] == 0:
        raise ValueError("attention: no keys (S = 0): every query's softmax would be empty")
    if q.dtype.name not in ("float32", "float64") or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"attention: q, k and v must be of one float dtype, float32 or float64; got "
                         f"{q.dtype}, {k.dtype}, {v.dtype}")
    _check_outputs(q, [("out", out, q.shape[:-1] + v.shape[-1:])])
    _check_rows([("q", q), ("k", k), ("v", v), ("out", out)])


def check_attention_grad_args(dout, q, k, v, out, lse, dq=None, dk=None, dv=None):
    """attention_backward's arrays: the forward's, dout/out of out's shape, lse q.shape[:-1],
    and the optional dq, dk, dv of q's, k's and v's shapes."""
    check_attention_args(q, k, v)
    expected = q.shape[:-1] + v.shape[-1:]
    if tuple(out.shape) != expected or tuple(dout.shape) != expected or tuple(lse.shape) != q.shape[:-1]:
        raise ValueError(f"attention: dout {tuple(dout.shape)}, out {tuple(out.shape)} and lse "
                         f"{tuple(lse.shape)} must be {expected}, {expected} and {q.shape[:-1]}")
    if dout.dtype != q.dtype or out.dtype != q.dtype or lse.dtype != q.dtype:
        raise ValueError(f"attention: dout, out and lse must be of q's dtype {q.dtype}; got "
                         f"{dout.dtype}, {out.dtype}, {lse.dtype}")
    _check_outputs(q, [("dq", dq, q.shape), ("dk", dk, k.shape), ("dv", dv, v.shape)])
    _check_rows([("dout", dout), ("out", out), ("dq", dq), ("dk", dk), ("dv", dv)])


def _check_outputs(q, named):
    """Each (name, array or None, shape) given to be filled: of that shape and q's dtype."""
    for name, a, shape in named:
        if a is not None and (tuple(a.shape) != tuple(shape) or a.dtype != q.dtype):
            raise ValueError(f"attention: {name} must be of shape {tuple(shape)} and dtype {q.dtype}; got "
                             f"{tuple(a.shape)} {a.dtype}")


def stacked(a):
    """a (..., R, C) as one stack of matrices (N, R, C): a view where its strides allow, else a copy."""
    return a.reshape((-1,) + a.shape[-2:])


def unstacked(result, shape, out=None):
    """A stack's result (N, R, C) with its leading axes back (`shape`), written into `out` when
    the caller gave one (for the backends that compute on stacked, contiguous arrays)."""
    if out is None:
        return result.reshape(shape)
    out[...] = result.reshape(shape)
    return out


def hidden_pairs(xp, L, S):
    """(L, S) bool, True where query i may not see key j (j > i: causal, top-left aligned)."""
    return xp.triu(xp.ones((L, S), dtype=bool), k=1)


def visible_matmul(w, b, causal, transposed=False):
    """w @ b (transposed: w^T @ b) over the visible pairs only, w (N, L, S) zero where hidden.

    w @ b:   out_i = sum_{j <= i} w_ij b_j      (b (N, S, F): the keys' side)
    w^T @ b: out_j = sum_{i >= j} w_ij b_i      (b (N, L, F): the queries' side)
    With b finite the hidden zeros add exact zeros, so one product does; a NaN/inf in b must
    not meet those zeros (0 * inf = NaN), so then each output row sums its visible range."""
    xp = xp_of(w)
    if not causal or bool(xp.isfinite(b).all()):
        return xp.matmul(w.swapaxes(-1, -2), b) if transposed else xp.matmul(w, b)
    N, L, S = w.shape
    if transposed:
        out = xp.zeros((N, S, b.shape[2]), dtype=w.dtype)
        for j in range(min(L, S)):
            out[:, j] = xp.matmul(w[:, j:, j][:, None, :], b[:, j:])[:, 0]
    else:
        out = xp.zeros((N, L, b.shape[2]), dtype=w.dtype)
        for i in range(L):
            seen = min(i + 1, S)
            out[:, i] = xp.matmul(w[:, i, None, :seen], b[:, :seen])[:, 0]
    return out


def _probabilities(q, k, scale, causal, lse=None):
    """(p, lse): p = exp(s - lse), 0 where hidden; lse computed here unless given."""
    xp = xp_of(q)
    s = xp.matmul(q, k.swapaxes(-1, -2)) * q.dtype.type(scale)
    if causal:
        s = xp.where(hidden_pairs(xp, q.shape[1], k.shape[1]), q.dtype.type(-xp.inf), s)
    if lse is None:
        m = s.max(axis=-1, keepdims=True)     # finite for every causal row: key 0 is always seen
        lse = (m + xp.log(xp.exp(s - m).sum(axis=-1, keepdims=True)))[..., 0]
    p = xp.exp(s - lse[..., None])
    if causal:    # exactly 0, even where lse is NaN or inf
        p = xp.where(hidden_pairs(xp, q.shape[1], k.shape[1]), q.dtype.type(0), p)
    return p, lse


def attention_forward(q, k, v, scale, causal, *, out=None):
    """(out, lse): out = softmax(scale q k^T, hidden pairs excluded) v, lse its log normaliser;
    out written into the given array when there is one."""
    check_attention_args(q, k, v, out)
    p, lse = _probabilities(stacked(q), stacked(k), scale, causal)
    return (unstacked(visible_matmul(p, stacked(v), causal), q.shape[:-1] + v.shape[-1:], out),
            lse.reshape(q.shape[:-1]))


def attention_backward(dout, q, k, v, out, lse, scale, causal, *, dq=None, dk=None, dv=None):
    """(dq, dk, dv) of out = attention_forward(q, k, v, scale, causal)[0]; see the module doc.
    Each written into the given array when there is one."""
    check_attention_grad_args(dout, q, k, v, out, lse, dq, dk, dv)
    xp = xp_of(q)
    shape = q.shape
    dout, q, k, v, out = (stacked(a) for a in (dout, q, k, v, out))
    p, _ = _probabilities(q, k, scale, causal, lse.reshape(q.shape[:2]))
    D = (dout * out).sum(axis=-1, keepdims=True)
    ds = p * (xp.matmul(dout, v.swapaxes(-1, -2)) - D)
    if causal:     # dp is computed at hidden pairs too; p's zero must win over its NaN/inf
        ds = xp.where(hidden_pairs(xp, q.shape[1], k.shape[1]), q.dtype.type(0), ds)
    factor = q.dtype.type(scale)
    lead = shape[:-2]
    return (unstacked(visible_matmul(ds, k, causal) * factor, lead + q.shape[1:], dq),
            unstacked(visible_matmul(ds, q, causal, transposed=True) * factor, lead + k.shape[1:], dk),
            unstacked(visible_matmul(p, dout, causal, transposed=True), lead + v.shape[1:], dv))
