"""A decoder-only character Transformer language model (GPT-style, pre-LayerNorm).

    tokens -> token embedding + learned position embedding
           -> n_layer x [x + SelfAttention(LN(x)) (causal);  x + MLP(LN(x)), MLP = Linear-GELU-Linear, 4d wide]
           -> LayerNorm -> Linear(d, vocab) -> logits

`TransformerLM` is the bare network; `TransformerCharLM` is the same network speaking the
language-model protocol of models/charlm.py, so `tgs train charlm --model transformer`
shares training, checkpoints, sampling and evaluation with the recurrent models.
"""
from dataclasses import asdict, dataclass

import numpy as np

from .. import nn
from ..config import check_dropout, check_positive_ints
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
        check_positive_ints(self, ("vocab_size", "block_size", "n_embd", "n_head", "n_layer"),
                            prefix="TransformerLMConfig: ")
        if self.n_embd % self.n_head:
            raise ValueError(f"TransformerLMConfig: n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        check_dropout(self.dropout, "TransformerLMConfig: ")


class TransformerLM(nn.Module):
    """`TransformerLM(TransformerLMConfig(...))(ids (B, T))` -> logits (B, T, vocab_size), T <= block_size."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.block_size = config.block_size
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
        if T > self.block_size:
            raise ValueError(f"TransformerLM: context of {T} tokens exceeds block_size={self.block_size}")
        positions = Tensor._wrap(xp_of(idx.data).arange(T))
        x = self.drop(self.tok_emb(idx) + self.pos_emb(positions))
        x = self.blocks(x, is_causal=True)
        return self.head(self.ln_f(x))

    def config_dict(self):
        return asdict(self.config)


class TransformerCharLM(TransformerLM):
    """The Transformer LM behind the language-model protocol (see models/charlm.py).

    Attention looks back at most `block_size` tokens, so the "state" handed from one call to
    the next is the window of recent tokens rather than a hidden vector: generation feeds one
    token at a time and the model re-reads the window.  Training does not carry it across
    chunks (carries_state = False): every chunk of seq_len = block_size tokens stands alone.
    """

    carries_state = False

    def __init__(self, lm_config):
        super().__init__(TransformerLMConfig(vocab_size=lm_config.vocab_size, block_size=lm_config.block_size,
                                             n_embd=lm_config.embed, n_head=lm_config.heads,
                                             n_layer=lm_config.layers, dropout=lm_config.dropout))
        self.config = lm_config
        self.max_context = lm_config.block_size

    def forward(self, idx, state=None):
        """idx (B, T) -> (logits (B, T, V) of idx read after the tokens in `state`, the new window)."""
        idx = idx if isinstance(idx, Tensor) else Tensor(np.asarray(idx, dtype=np.int64))
        new = idx.shape[1]
        tokens = idx.data if state is None else xp_of(idx.data).concatenate([state.data, idx.data], axis=1)
        if tokens.shape[1] > self.block_size:
            if new > self.block_size:
                raise ValueError(f"TransformerLM: {new} new tokens exceed its context of {self.block_size}")
            tokens = tokens[:, -self.block_size:]
        logits = super().forward(Tensor._wrap(tokens))
        if logits.shape[1] > new:
            logits = logits[:, -new:]
        window = Tensor._wrap(tokens[:, -(self.block_size - 1):]) if self.block_size > 1 else None
        return logits, window

    def select_state(self, state, index):
        from ..text.decoding import index_state
        return index_state(state, index, axis=0)
