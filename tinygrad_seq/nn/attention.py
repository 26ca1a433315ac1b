"""Attention: the scores of the notes (additive, dot, general), scaled dot-product
attention and multi-head attention with PyTorch's names.

Every variant is the same three steps: score each encoder state against the query,
softmax the scores over the states that are not masked, and take the weighted sum of the
values (the context vector).  The masked softmax is one op that runs in the `softmax`
kernel family.

Scaled dot-product and multi-head attention take one fused op instead,
ops.ScaledDotProductAttention (the `attention` kernel family: the L x S scores never leave the
kernel), whenever it computes what was asked: no mask other than is_causal, no dropout, the
weights not asked for, and q, k, v of one float dtype with the same leading axes
(`_fused_attention_takes`).  Everything else keeps the composed path of `_attend`.
"""
import math

import numpy as np

from .. import ops
from ..device import xp_of
from ..tensor import Tensor
from . import functional as F
from . import init
from .layers import Linear
from .module import Module, Parameter

__all__ = ["scaled_dot_product_attention", "AdditiveAttention", "DotAttention", "GeneralAttention",
           "MultiheadAttention"]


def _array(mask):
    return mask.data if isinstance(mask, Tensor) else mask


def _attend(scores, values, excluded=None, dropout_p=0.0, training=True):
    """weights = softmax(scores) with `excluded` entries at 0; context = weights @ values."""
    weights = ops.Softmax.apply(scores, mask=excluded)
    if dropout_p:
        weights = F.dropout(weights, dropout_p, training)
    return weights @ values, weights


def _fused_attention_takes(query, key, value):
    """Whether ops.ScaledDotProductAttention takes these tensors as they are: one float dtype,
    the same leading (batch, head) axes, no broadcasting, and at least one key."""
    return (query.ndim >= 2 and query.dtype == key.dtype == value.dtype
            and query.dtype in (np.float32, np.float64)
            and query.shape[:-2] == key.shape[:-2] == value.shape[:-2] and key.shape[-2] > 0)


def _causal_exclusion(xp, L, S):
    """True above the diagonal: position i may not look at j > i."""
    return xp.triu(xp.ones((L, S), dtype=bool), k=1)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 scale=None, return_weights=False):
    """Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V  (torch.nn.functional's semantics).

    query (..., L, E), key (..., S, E), value (..., S, Ev).  A boolean `attn_mask` marks with True
    the positions that TAKE PART (PyTorch's convention); a float mask is added to the scores.
    `is_causal` hides the future.  With return_weights=True also returns the attention weights.
    """
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(f"scaled_dot_product_attention: query has {query.shape[-1]} features per position "
                         f"but key has {key.shape[-1]}")
    if key.shape[-2] != value.shape[-2]:
        raise ValueError(f"scaled_dot_product_attention: key has {key.shape[-2]} positions but value has {value.shape[-2]}")
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    if attn_mask is None and not dropout_p and not return_weights and _fused_attention_takes(query, key, value):
        return ops.ScaledDotProductAttention.apply(query, key, value, scale=scale, causal=is_causal)
    xp = xp_of(query.data)
    L, S = query.shape[-2], key.shape[-2]
    scores = (query @ key.transpose(-2, -1)) * scale
    excluded = _causal_exclusion(xp, L, S) if is_causal else None
    if attn_mask is not None:
        mask = _array(attn_mask)
        if mask.dtype == bool:
            excluded = ~mask if excluded is None else (excluded | ~mask)
        else:
            scores = scores + Tensor._wrap(mask.astype(scores.dtype))
    out, weights = _attend(scores, value, excluded, dropout_p, dropout_p > 0)
    return (out, weights) if return_weights else out


class _ScoreAttention(Module):
    """Shared forward for the notes' attention: context, weights = attend(score(q, keys))."""

    def score(self, query, keys):  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, query, keys, values=None, mask=None):
        """query (B, Dq), keys (B, S, Dk), values (B, S, Dv) (default: keys), mask (B, S) bool with
        True at positions to IGNORE (padding).  Returns context (B, Dv) and weights (B, S)."""
        values = keys if values is None else values
        scores = self.score(query, keys)  # (B, S)
        excluded = None if mask is None else _array(mask).astype(bool)
        weights = ops.Softmax.apply(scores, mask=excluded)
        context = (weights.unsqueeze(1) @ values).squeeze(1)
        return context, weights


class AdditiveAttention(_ScoreAttention):
    """Bahdanau: e_{t,s} = v^T tanh(W_q q_t + W_k k_s)."""

    def __init__(self, query_dim, key_dim, hidden_dim):
        super().__init__()
        self.query_proj = Linear(query_dim, hidden_dim, bias=False)
        self.key_proj = Linear(key_dim, hidden_dim, bias=True)
        self.v = Linear(hidden_dim, 1, bias=False)

    def score(self, query, keys):
        return self.v((self.query_proj(query).unsqueeze(1) + self.key_proj(keys)).tanh()).squeeze(-1)


class DotAttention(_ScoreAttention):
    """Luong dot: e_{t,s} = q_t . k_s (optionally scaled by 1/sqrt(d))."""

    def __init__(self, scaled=False):
        super().__init__()
        self.scaled = scaled

    def score(self, query, keys):
        scores = (keys @ query.unsqueeze(-1)).squeeze(-1)
        return scores * (1.0 / math.sqrt(query.shape[-1])) if self.scaled else scores


class GeneralAttention(_ScoreAttention):
    """Luong general: e_{t,s} = q_t^T W k_s."""

    def __init__(self, query_dim, key_dim):
        super().__init__()
        self.weight = Linear(key_dim, query_dim, bias=False)

    def score(self, query, keys):
        return (self.weight(keys) @ query.unsqueeze(-1)).squeeze(-1)


class MultiheadAttention(Module):
    """MultiHead(Q, K, V) = Concat(head_1..head_h) W_O, head_i = Attention(Q W_Q_i, K W_K_i, V W_V_i).

    PyTorch's parameters (`in_proj_weight` (3E, E), `in_proj_bias` (3E,), `out_proj`) and
    arguments.  Masks follow nn.MultiheadAttention: a boolean `key_padding_mask` (N, S) or
    `attn_mask` (L, S) / (N*heads, L, S) marks with True the positions NOT allowed to attend;
    float masks are added to the scores.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, batch_first=False):
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim ({embed_dim}) must be a positive multiple of num_heads ({num_heads})")
        self.embed_dim, self.num_heads, self.dropout, self.batch_first = embed_dim, num_heads, dropout, batch_first
        self.head_dim = embed_dim // num_heads
        self.in_proj_weight = Parameter(np.zeros((3 * embed_dim, embed_dim), dtype=np.float32))
        if bias:
            self.in_proj_bias = Parameter(np.zeros(3 * embed_dim, dtype=np.float32))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias)
        init.xavier_uniform_(self.in_proj_weight)
        if bias:
            init.zeros_(self.out_proj.bias)

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, batch_first={self.batch_first}"

    def _project(self, context, N, L, E):
        """The heads' context (N, h, L, d) joined and projected: (N, L, E), or (L, N, E)."""
        out = self.out_proj(context.transpose(1, 2).reshape(N, L, E))
        return out if self.batch_first else out.transpose(0, 1)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if not self.batch_first:  # (L, N, E) -> (N, L, E)
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        N, L, E = query.shape
        S = key.shape[1]
        if E != self.embed_dim:
            raise ValueError(f"MultiheadAttention: query has {E} features, expected embed_dim={self.embed_dim}")
        h, d = self.num_heads, self.head_dim
        w = self.in_proj_weight
        b = self.in_proj_bias
        if query is key and key is value:  # self-attention: one GEMM for Q, K and V
            qkv = query @ w.t() + (b if b is not None else 0)
            q, k, v = qkv.chunk(3, dim=-1)
        else:
            wq, wk, wv = w.chunk(3, dim=0)
            bq, bk, bv = b.chunk(3) if b is not None else (0, 0, 0)
            q, k, v = query @ wq.t() + bq, key @ wk.t() + bk, value @ wv.t() + bv
        q = q.reshape(N, L, h, d).transpose(1, 2)
        k = k.reshape(N, S, h, d).transpose(1, 2)
        v = v.reshape(N, S, h, d).transpose(1, 2)
        if (key_padding_mask is None and attn_mask is None and not need_weights
                and not (self.dropout and self.training) and _fused_attention_takes(q, k, v)):
            context = ops.ScaledDotProductAttention.apply(q, k, v, scale=1.0 / math.sqrt(d), causal=is_causal)
            return self._project(context, N, L, E), None
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(d))  # (N, h, L, S)
        xp = xp_of(scores.data)
        excluded = _causal_exclusion(xp, L, S) if is_causal and attn_mask is None else None
        for mask, shape in ((attn_mask, None), (key_padding_mask, (N, 1, 1, S))):
            if mask is None:
                continue
            m = _array(mask)
            if shape is None:
                m = m.reshape(N, h, L, S) if m.ndim == 3 else m
            else:
                m = m.reshape(shape)
            if m.dtype == bool:
                excluded = m if excluded is None else (excluded | m)
            else:
                scores = scores + Tensor._wrap(m.astype(scores.dtype))
        context, weights = _attend(scores, v, excluded, self.dropout, self.training)
        out = self._project(context, N, L, E)
        if not need_weights:
            return out, None
        return out, (weights.mean(dim=1) if average_attn_weights else weights)
