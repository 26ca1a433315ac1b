"""Fused scaled dot-product attention, written once against `xp` (NumPy or CuPy).

For each of N matrices, queries q (L, E), keys k (S, E), values v (S, Ev):

    s = scale * q k^T                          (L, S); hidden pairs are -inf
    lse_i = log sum_j exp(s_ij)                (N, L): the softmax's normaliser, saved
    out = p v,   p = exp(s - lse)              (L, Ev)

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
from tinygrad_seq.device import xp_of


def check_attention_args(q, k, v):
    """The shapes and dtypes attention_forward accepts (every backend's messages)."""
    if q.ndim != 3 or k.ndim != 3 or v.ndim != 3:
        raise ValueError(f"attention: q, k and v must be 3-D (N, L, E), (N, S, E), (N, S, Ev); got shapes "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if not (q.shape[0] == k.shape[0] == v.shape[0]):
        raise ValueError(f"attention: q, k and v must hold the same number of matrices N; got "
                         f"{q.shape[0]}, {k.shape[0]}, {v.shape[0]}")
    if q.shape[2] != k.shape[2]:
        raise ValueError(f"attention: q has {q.shape[2]} features per position but k has {k.shape[2]}")
    if k.shape[1] != v.shape[1]:
        raise ValueError(f"attention: k has {k.shape[1]} positions but v has {v.shape[1]}")
    if k.shape[1] == 0:
        raise ValueError("attention: no keys (S = 0): every query's softmax would be empty")
    if q.dtype.name not in ("float32", "float64") or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"attention: q, k and v must be of one float dtype, float32 or float64; got "
                         f"{q.dtype}, {k.dtype}, {v.dtype}")


def check_attention_grad_args(dout, q, k, v, out, lse):
    """attention_backward's arrays: the forward's, and dout/out of out's shape, lse (N, L)."""
    check_attention_args(q, k, v)
    N, L = q.shape[:2]
    expected = (N, L, v.shape[2])
    if tuple(out.shape) != expected or tuple(dout.shape) != expected or tuple(lse.shape) != (N, L):
        raise ValueError(f"attention: dout {tuple(dout.shape)}, out {tuple(out.shape)} and lse "
                         f"{tuple(lse.shape)} must be {expected}, {expected} and {(N, L)}")
    if dout.dtype != q.dtype or out.dtype != q.dtype or lse.dtype != q.dtype:
        raise ValueError(f"attention: dout, out and lse must be of q's dtype {q.dtype}; got "
                         f"{dout.dtype}, {out.dtype}, {lse.dtype}")


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


def attention_forward(q, k, v, scale, causal):
    """(out, lse): out = softmax(scale q k^T, hidden pairs excluded) v, lse its log normaliser."""
    check_attention_args(q, k, v)
    p, lse = _probabilities(q, k, scale, causal)
    return visible_matmul(p, v, causal), lse


def attention_backward(dout, q, k, v, out, lse, scale, causal):
    """(dq, dk, dv) of out = attention_forward(q, k, v, scale, causal)[0]; see the module doc."""
    check_attention_grad_args(dout, q, k, v, out, lse)
    xp = xp_of(q)
    p, _ = _probabilities(q, k, scale, causal, lse)
    D = (dout * out).sum(axis=-1, keepdims=True)
    ds = p * (xp.matmul(dout, v.swapaxes(-1, -2)) - D)
    if causal:     # dp is computed at hidden pairs too; p's zero must win over its NaN/inf
        ds = xp.where(hidden_pairs(xp, q.shape[1], k.shape[1]), q.dtype.type(0), ds)
    factor = q.dtype.type(scale)
    dq = visible_matmul(ds, k, causal) * factor
    dk = visible_matmul(ds, q, causal, transposed=True) * factor
    dv = visible_matmul(p, dout, causal, transposed=True)
    return dq, dk, dv
