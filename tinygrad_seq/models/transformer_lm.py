"""A decoder-only character Transformer language model (GPT-style, pre-LayerNorm).

    tokens -> token embedding + learned position embedding
           -> n_layer x [x + SelfAttention(LN(x)) (causal);  x + MLP(LN(x)), MLP = Linear-GELU-Linear, 4d wide]
           -> LayerNorm -> Linear(d, vocab) -> logits
"""
from dataclasses import asdict, dataclass

from .. import nn
from ..device import xp_of
from ..tensor import Tensor


@dataclass
class TransformerLMConfig:
    vocab_size: int = 65
    block_size: int = 128  # the longest context the position table covers
    n_embd: int = 128
    n_head: int = 4
    n_layer: int = 2
    dropout: float = 0.0

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_embd", "n_head", "n_layer"):
            if getattr(self, name) <= 0:
                raise ValueError(f"TransformerLMConfig: {name} must be positive, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"TransformerLMConfig: n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"TransformerLMConfig: dropout must be in [0, 1), got {self.dropout}")


class TransformerLM(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        d = config.n_embd
        self.tok_emb = nn.Embedding(config.vocab_size, d)
        self.pos_emb = nn.Embedding(config.block_size, d)
        self.drop = nn.Dropout(config.dropout)
        block = nn.TransformerEncoderLayer(d, config.n_head, 4 * d, dropout=config.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, config.n_layer)
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, config.vocab_size)

    def forward(self, idx):
        """idx (B, T) integer tokens -> logits (B, T, vocab)."""
        T = idx.shape[1]
        if T > self.config.block_size:
            raise ValueError(f"TransformerLM: context of {T} tokens exceeds block_size={self.config.block_size}")
        positions = Tensor._wrap(xp_of(idx.data).arange(T))
        x = self.drop(self.tok_emb(idx) + self.pos_emb(positions))
        x = self.blocks(x, is_causal=True)
        return self.head(self.ln_f(x))

    def config_dict(self):
        return asdict(self.config)
