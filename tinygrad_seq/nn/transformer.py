"""Transformer building blocks: positional encodings and the encoder layer (PyTorch's names)."""
import copy
import math

import numpy as np

from ..device import xp_of
from ..tensor import Tensor
from .attention import MultiheadAttention
from .layers import Dropout, Embedding, LayerNorm, Linear
from .module import Module, ModuleList

__all__ = ["SinusoidalPositionalEncoding", "LearnedPositionalEmbedding", "TransformerEncoderLayer",
           "TransformerEncoder"]


def sinusoidal_table(max_len, d_model):
    """PE[pos, 2i] = sin(pos / 10000^(2i/d)),  PE[pos, 2i+1] = cos(pos / 10000^(2i/d))."""
    position = np.arange(max_len)[:, None]
    rates = np.exp(np.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
    table = np.zeros((max_len, d_model))
    table[:, 0::2] = np.sin(position * rates)
    table[:, 1::2] = np.cos(position * rates)[:, : d_model // 2]
    return table.astype(np.float32)


class SinusoidalPositionalEncoding(Module):
    """x + PE[:T] for x of shape (B, T, d) (batch_first): fixed, not trained."""

    def __init__(self, d_model, max_len=5000, dropout=0.0):
        super().__init__()
        self.dropout = Dropout(dropout)
        self.register_buffer("pe", Tensor(sinusoidal_table(max_len, d_model)), persistent=False)

    def forward(self, x):
        T = x.shape[1]
        if T > self.pe.shape[0]:
            raise ValueError(f"sequence of length {T} is longer than max_len={self.pe.shape[0]}")
        return self.dropout(x + Tensor._wrap(self.pe.data[:T].astype(x.dtype, copy=False)))


class LearnedPositionalEmbedding(Module):
    """x + P[:T], with P a trained (max_len, d) table."""

    def __init__(self, max_len, d_model):
        super().__init__()
        self.max_len = max_len
        self.embedding = Embedding(max_len, d_model)

    def forward(self, x):
        T = x.shape[1]
        if T > self.max_len:
            raise ValueError(f"sequence of length {T} is longer than max_len={self.max_len}")
        positions = Tensor._wrap(xp_of(x.data).arange(T))
        return x + self.embedding(positions)


class TransformerEncoderLayer(Module):
    """One Transformer block: self-attention then a position-wise MLP, each with a residual.

    norm_first=True (pre-LN, as GPT):  x = x + SA(LN1(x));  x = x + FF(LN2(x))
    norm_first=False (post-LN, 2017):   x = LN1(x + SA(x)); x = LN2(x + FF(x))
    Parameter names match torch.nn.TransformerEncoderLayer.
    """

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True):
        super().__init__()
        if activation not in ("relu", "gelu"):
            raise ValueError(f"activation must be 'relu' or 'gelu', not {activation!r}")
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.activation = activation

    def _self_attention(self, x, attn_mask, key_padding_mask, is_causal):
        out, _ = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                                need_weights=False, is_causal=is_causal)
        return self.dropout1(out)

    def _feed_forward(self, x):
        hidden = self.linear1(x)
        hidden = hidden.gelu() if self.activation == "gelu" else hidden.relu()
        return self.dropout2(self.linear2(self.dropout(hidden)))

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        x = src
        if self.norm_first:
            x = x + self._self_attention(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            return x + self._feed_forward(self.norm2(x))
        x = self.norm1(x + self._self_attention(x, src_mask, src_key_padding_mask, is_causal))
        return self.norm2(x + self._feed_forward(x))


class TransformerEncoder(Module):
    """A stack of `num_layers` copies of an encoder layer (parameter names `layers.{i}....`)."""

    def __init__(self, encoder_layer, num_layers, norm=None):
        super().__init__()
        self.layers = ModuleList(copy.deepcopy(encoder_layer) for _ in range(num_layers))
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=False):
        x = src
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=is_causal)
        return self.norm(x) if self.norm is not None else x
