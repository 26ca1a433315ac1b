"""Neural language models over characters or words, and what every LM here shares.

    tokens (B, T) -> Embedding (or one-hot) -> RNN / GRU / LSTM stack -> Dropout -> Linear -> logits (B, T, V)

P(token_t | tokens before t) = softmax(logits_{t-1}); training minimises the cross-entropy of
the next token, in nats per token (divide by ln 2 for bits).

The language-model protocol (what training, sampling and evaluation rely on, so they work for
any model `build_lm` makes, recurrent or not):

    logits, state = model(idx, state=None)
        idx (B, T) int64 tokens; logits (B, T, V); `state` is whatever the model carries from one
        chunk of a stream to the next (an RNN's hidden state; None to start afresh).  Feeding a
        stream in consecutive chunks with the returned state must equal feeding it whole.
    model.carries_state        True if training should pass the (detached) state to the next
                               chunk: truncated backpropagation through time
    model.select_state(state, index)   keep batch rows `index` of a state (for beam search)
    model.config               an LMConfig; `build_lm(LMConfig(**d))` rebuilds the model
    model.max_context          (optional) the longest context the model reads at once
                               (a Transformer's block size); absent for recurrent models

New architectures join by adding a builder to `LM_BUILDERS` (name -> function(config) -> model)
and the name to `LMConfig.MODELS`.
"""
import math
from dataclasses import dataclass

import numpy as np

from .. import nn
from ..config import Config
from ..creation import one_hot
from ..tensor import Tensor, no_grad
from ..text import decoding

__all__ = ["LMConfig", "RNNLM", "CharLM", "WordLM", "LM_BUILDERS", "build_lm", "detach_state",
           "state_to_arrays", "state_from_arrays", "log_prob", "perplexity", "evaluate_stream", "generate"]


@dataclass
class LMConfig(Config):
    """The shape of a language model.  embed = 0 feeds one-hot vectors instead of an embedding
    (recurrent models); the Transformer uses embed as its width d, `heads` attention heads and
    a context of `block_size` tokens, and ignores `hidden`."""

    model: str = "lstm"
    vocab_size: int = 0
    embed: int = 64
    hidden: int = 256
    layers: int = 1
    dropout: float = 0.0
    heads: int = 4
    block_size: int = 128

    MODELS = ("rnn", "gru", "lstm", "transformer")

    def __post_init__(self):
        if self.model not in self.MODELS:
            raise ValueError(f"unknown model {self.model!r}: choose one of {', '.join(self.MODELS)}")
        for name in ("vocab_size", "hidden", "layers", "heads", "block_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if int(self.embed) < 0:
            raise ValueError(f"embed must be positive (or 0 for one-hot inputs), got {self.embed}")
        if self.model == "transformer" and (self.embed < 1 or self.embed % self.heads):
            raise ValueError(f"a transformer needs embed to be a positive multiple of heads, "
                             f"got embed {self.embed} and heads {self.heads}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class RNNLM(nn.Module):
    """A recurrent language model: the same class serves characters (CharLM) and words (WordLM)."""

    carries_state = True
    CELLS = {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM"}

    def __init__(self, config):
        super().__init__()
        self.config = config
        V, E, H = config.vocab_size, config.embed, config.hidden
        if E:
            self.embedding = nn.Embedding(V, E)
        rnn_class = getattr(nn, self.CELLS[config.model])
        self.rnn = rnn_class(E or V, H, num_layers=config.layers, batch_first=True,
                             dropout=config.dropout if config.layers > 1 else 0.0)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(H, V)

    def forward(self, idx, state=None):
        """idx (B, T) int64 -> (logits (B, T, V), final recurrent state)."""
        idx = idx if isinstance(idx, Tensor) else Tensor(np.asarray(idx, dtype=np.int64))
        if self.config.embed:
            x = self.embedding(idx)
        else:
            x = one_hot(idx, self.config.vocab_size).astype(self.head.weight.dtype)
        out, state = self.rnn(x, state)
        return self.head(self.drop(out)), state

    def select_state(self, state, index):
        # nn.RNN/GRU/LSTM states are (layers, batch, hidden): the batch is axis 1
        return decoding.index_state(state, index, axis=1)


CharLM = RNNLM   # a character-level LM is an RNNLM whose vocabulary is characters
WordLM = RNNLM   # ... and a word-level one, words (with <UNK> and <EOS>)

def _transformer(config):
    from .transformer_lm import TransformerCharLM
    return TransformerCharLM(config)


LM_BUILDERS = {"rnn": RNNLM, "gru": RNNLM, "lstm": RNNLM, "transformer": _transformer}


def build_lm(config):
    """The one place models are made from a config (the CLI, checkpoints and the bench use it)."""
    if isinstance(config, dict):
        config = LMConfig.from_dict(config)
    if config.model not in LM_BUILDERS:
        raise ValueError(f"unknown model {config.model!r}: choose one of {', '.join(LM_BUILDERS)}")
    return LM_BUILDERS[config.model](config)


# ---------------------------------------------------------------------------- states
def detach_state(state):
    """The same nested state cut from the graph: truncated BPTT carries values, not gradients."""
    if isinstance(state, Tensor):
        return state.detach()
    if isinstance(state, (tuple, list)):
        return type(state)(detach_state(s) for s in state)
    return state


def state_to_arrays(state):
    """A nested state as NumPy arrays in lists (for a checkpoint); None stays None."""
    if isinstance(state, Tensor):
        return state.numpy()
    if isinstance(state, (tuple, list)):
        return [state_to_arrays(s) for s in state]
    return state


def state_from_arrays(saved):
    """Inverse of state_to_arrays: lists become tuples of Tensors (an LSTM's (h, c))."""
    if saved is None:
        return None
    if isinstance(saved, list):
        return tuple(state_from_arrays(s) for s in saved)
    return Tensor._wrap(np.array(saved))


# ---------------------------------------------------------------------------- scoring
def _nll_sum(logits, targets, block_elements=1 << 21):
    """Sum over positions of -log softmax(logits)[target], in float64 (no graph).
    A block of positions at a time: a word model's validation batch (64 x 32 positions x 10k
    words) would otherwise hold three float64 copies of its logits, ~0.5 GB."""
    data = logits.data
    V = data.shape[-1]
    data, targets = data.reshape(-1, V), np.asarray(targets).reshape(-1)
    rows = max(1, block_elements // V)
    total = 0.0
    for start in range(0, data.shape[0], rows):
        z = data[start:start + rows].astype(np.float64)
        z -= z.max(axis=-1, keepdims=True)
        picked = np.take_along_axis(z, targets[start:start + rows, None], axis=-1)[:, 0]
        np.exp(z, out=z)
        total += float((np.log(z.sum(axis=-1)) - picked).sum())
    return total


def log_prob(model, ids, context=None, chunk=256):
    """ln P(ids[1:] | ids[0]) (or of all of ids given `context` tokens before them): the
    sentence log-probability, in nats.  Runs in chunks of `chunk` tokens carrying the state."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    chunk = min(chunk, getattr(model, "max_context", chunk))
    if context is not None and len(context):
        ids = np.concatenate([np.asarray(context, dtype=np.int64).reshape(-1), ids])
        first = len(context)
    else:
        first = 1
    if ids.size < 2:
        raise ValueError("log_prob: needs at least one token to predict")
    total, state = 0.0, None
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            for start in range(0, ids.size - 1, chunk):
                x = ids[start:start + chunk]
                y = ids[start + 1:start + chunk + 1]
                x = x[:y.size]
                logits, state = model(Tensor(x[None]), state if model.carries_state else None)
                keep = np.arange(start + 1, start + 1 + y.size) >= first
                if keep.any():
                    total += _nll_sum(Tensor._wrap(logits.data[0][keep]), y[keep])
    finally:
        model.train(was_training)
    return -total


def perplexity(model, ids, context=None):
    """exp(-ln P / number of predicted tokens)."""
    ids = np.asarray(ids).reshape(-1)
    count = ids.size if context is not None and len(context) else ids.size - 1
    return math.exp(-log_prob(model, ids, context) / count)


def evaluate_stream(model, ids, batch_size=16, seq_len=128, max_tokens=None, progress=None):
    """(total nats, tokens predicted) over a long stream, cut into `batch_size` parallel rows
    read in chunks of `seq_len` with the state carried, as in training (no dropout, no graph).
    `ids` may be a memory-mapped file of any integer dtype: only each chunk is copied (as int64).
    `progress(tokens done, tokens in all)` after each chunk, if given."""
    ids = np.asarray(ids).reshape(-1)
    if ids.dtype.kind not in "iu":
        ids = ids.astype(np.int64)
    seq_len = min(seq_len, getattr(model, "max_context", seq_len))
    if max_tokens is not None:
        ids = ids[:max_tokens + 1]
    if ids.size < 2:
        raise ValueError("evaluate: needs at least two tokens")
    batch_size = max(1, min(batch_size, (ids.size - 1) // max(1, min(seq_len, ids.size - 1))))
    row = (ids.size - 1) // batch_size
    inputs = ids[:row * batch_size].reshape(batch_size, row)
    targets = ids[1:row * batch_size + 1].reshape(batch_size, row)
    total = _score_rows(model, inputs, targets, seq_len,
                        progress=None if progress is None else lambda done: progress(done, ids.size - 1))
    leftover = ids[row * batch_size:].astype(np.int64)  # the few tokens that did not fill a row
    if leftover.size >= 2:
        total -= log_prob(model, leftover)
        return total, row * batch_size + leftover.size - 1
    return total, row * batch_size


def evaluate_windows(model, ids, starts, length, seq_len=128):
    """(total nats, tokens predicted) over the windows ids[s : s + length] for s in `starts`,
    each read as one row from a fresh state (a bounded sample of a long stream)."""
    seq_len = min(seq_len, getattr(model, "max_context", seq_len))
    rows = np.stack([np.asarray(ids[s:s + length], dtype=np.int64) for s in starts])
    return _score_rows(model, rows[:, :-1], rows[:, 1:], seq_len), rows.shape[0] * (length - 1)


def _score_rows(model, inputs, targets, seq_len, progress=None):
    """Total nats of predicting targets[b, t] from inputs[b, :t+1], row by row in parallel, in
    chunks of `seq_len` columns with the state carried (no dropout, no graph).
    `progress(tokens done)` after each chunk."""
    rows, columns = inputs.shape
    total, state = 0.0, None
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            for start in range(0, columns, seq_len):
                window = inputs[:, start:start + seq_len].astype(np.int64)
                logits, state = model(Tensor(window), state if model.carries_state else None)
                total += _nll_sum(logits, targets[:, start:start + seq_len].astype(np.int64))
                if progress is not None:
                    progress(min(start + seq_len, columns) * rows)
    finally:
        model.train(was_training)
    return total


# ---------------------------------------------------------------------------- generation
def generate(model, vocab, prime="", length=200, temperature=1.0, top_k=None, beam=None, rng=None, start_token=None):
    """Text continuing `prime`: sampled (temperature, top_k; temperature 0 = greedy) or, with
    beam=W, the most likely continuation found by beam search.  Returns the new text only."""
    if not beam:
        return "".join(stream_generate(model, vocab, prime, length, temperature, top_k, rng, start_token,
                                       chunk=max(int(length), 1)))
    ids, step, device = _prime_ids_and_step(model, vocab, prime, start_token)
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            best = decoding.beam_search(step, _read_prime(model, ids, device), ids[-1:], beam, length,
                                        length_penalty=0.0, reorder_state=model.select_state)[0]
    finally:
        model.train(was_training)
    return vocab.decode(np.asarray(best.tokens, dtype=np.int64))


def stream_generate(model, vocab, prime="", length=200, temperature=1.0, top_k=None, rng=None, start_token=None,
                    chunk=1):
    """generate()'s sampled continuation as an iterator of decoded pieces of `chunk` tokens, for
    printing as it is written; joined, the pieces equal generate()'s text for the same rng.
    The prime is encoded (and any unknown symbol reported) before this returns."""
    rng = rng if rng is not None else np.random.default_rng()
    ids, step, device = _prime_ids_and_step(model, vocab, prime, start_token)

    def pieces():
        was_training = model.training
        model.eval()
        try:
            with no_grad():
                state = _read_prime(model, ids, device)
                last, written = ids[-1:], 0
                while written < length:
                    # the state returned has read every token but the last one drawn: continue from it
                    out, state = decoding.sample(step, state, last, min(chunk, length - written), temperature, top_k,
                                                 rng=rng)
                    new = out.reshape(-1)
                    yield _decode_after(vocab, int(last[0]) if written else None, new)
                    last, written = new[-1:], written + new.size
        finally:
            model.train(was_training)

    return pieces()


def _prime_ids_and_step(model, vocab, prime, start_token):
    """(the prime's ids, or the start token; the decoders' step function; the model's device)."""
    ids = vocab.encode(prime) if prime else np.zeros(0, dtype=np.int64)
    if ids.size == 0:
        ids = np.array([_default_start(vocab) if start_token is None else start_token], dtype=np.int64)
    device = next(iter(model.parameters())).device  # the decoders work on host arrays

    def step(tokens, state):
        logits, state = model(Tensor(np.asarray(tokens, dtype=np.int64)[:, None], device=device), state)
        return logits[:, -1].numpy(), state
    return ids, step, device


def _read_prime(model, ids, device):
    """The state after reading all of the prime but its last token (None for a one-token prime)."""
    if ids.size <= 1:
        return None
    context = ids[:-1][-getattr(model, "max_context", ids.size):]
    return model(Tensor(context[None], device=device), None)[1]


def _decode_after(vocab, previous, ids):
    """The text `ids` add after token `previous` (word vocabularies space words by their neighbour)."""
    if previous is None or vocab.type != "word":
        return vocab.decode(ids)
    before = vocab.decode(np.array([previous]))
    both = vocab.decode(np.concatenate([[previous], ids]))
    return both[len(before):] if both.startswith(before) else both


def _default_start(vocab):
    """With no prime, start as after a line break (the <EOS> token for words)."""
    index = getattr(vocab, "index", None)
    if index is None:  # bytes
        return ord("\n")
    for symbol in ("<EOS>", "\n", " "):
        if symbol in index:
            return index[symbol]
    return 0
