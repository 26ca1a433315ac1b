"""Sequence-to-sequence with attention: an encoder reads the source, a decoder writes the
target one token at a time, looking back at every source position through attention
(Luong, Pham & Manning 2015, "global attention").

    encoder   e_s = [h->_s ; h<-_s]        Embedding -> GRU/LSTM, both directions (optional), stacked
    bridge    s_0 = tanh(W_b [h->_last ; h<-_first])              the decoder's initial state
    decoder   s_t = RNN(Embedding(y_{t-1}), s_{t-1})
              c_t, a_t = Attention(query = s_t, keys = values = e, padding masked)   (a_t: weights over s)
              h~_t = tanh(W_c [c_t ; s_t])
              P(y_t | y_<t, x) = softmax(W_o h~_t)

Training maximises the conditional log-likelihood sum_t log P(y_t | y_<t, x) with teacher
forcing: the decoder reads the TRUE previous tokens, so all T steps of the decoder RNN run as
one sequence op and attention scores every (step, source position) pair at once.  At inference
the same `decode` runs one step at a time under the decoders of `tinygrad_seq.text.decoding`
(greedy, beam search, top-k sampling); a test checks both paths give the same numbers.

Padding: sources of different lengths are padded at the end.  Attention masks the padding,
and the backward direction of the encoder reads each row reversed WITHIN its length
(`reverse_padded`), so no direction ever sees a pad before a real token; the two directions
are therefore separate nn.GRU / nn.LSTM modules rather than one bidirectional one.

Token ids: 0 = <pad>, 1 = <s> (start of the target), 2 = </s> (end), then the characters; the
three specials are the control characters NUL, STX and ETX, which no date ever contains.
"""
from dataclasses import dataclass

import numpy as np

from ..config import Config, check_dropout, check_positive_ints
from ..creation import cat
from ..nn import functional as F
from ..nn import rnn as recurrent
from ..nn.attention import AdditiveAttention, DotAttention, GeneralAttention
from ..nn.layers import Dropout, Embedding, Linear
from ..nn.module import Module, ModuleList
from ..tensor import Tensor, no_grad
from ..text import decoding
from ..text.vocab import CharVocab
from ..trainer import Trainer, check_rates, rank_share, share_weighted, zero_loss

__all__ = ["PAD", "BOS", "EOS", "PAD_ID", "BOS_ID", "EOS_ID", "special_vocab", "pad_batch", "reverse_padded",
           "RecurrentEncoder", "Seq2SeqConfig", "Seq2Seq", "Seq2SeqTrainConfig", "RandomPairs", "Seq2SeqTrainer", "make_batch",
           "train", "exact_match"]

# one control character each, so the vocabularies stay CharVocabs of single characters
PAD, BOS, EOS = "\x00", "\x02", "\x03"
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
CELLS = {"gru": "GRU", "lstm": "LSTM"}
ATTENTIONS = ("additive", "dot", "general")


def special_vocab(chars):
    """A CharVocab whose ids 0, 1, 2 are <pad>, <s>, </s>, followed by `chars` (sorted)."""
    return CharVocab([PAD, BOS, EOS] + sorted(set(chars) - {PAD, BOS, EOS}))


def pad_batch(sequences, bos=False, eos=False):
    """Integer sequences -> (ids (B, L) padded with PAD_ID, lengths (B,)), optionally with
    <s> before and </s> after each."""
    seqs = [np.concatenate([[BOS_ID] if bos else [], np.asarray(s, dtype=np.int64), [EOS_ID] if eos else []])
            for s in sequences]
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    ids = np.full((len(seqs), max(1, int(lengths.max(initial=0)))), PAD_ID, dtype=np.int64)
    for row, s in zip(ids, seqs):
        row[:len(s)] = s
    return ids, lengths


def _reversal_index(lengths, T):
    """idx[b, t] = lengths[b]-1-t inside the row's length, t on the padding (an involution)."""
    t = np.arange(T)[None, :]
    n = np.asarray(lengths)[:, None]
    return np.where(t < n, n - 1 - t, t)


def reverse_padded(x, lengths):
    """x (B, T, ...) with the first lengths[b] steps of row b reversed and the padding left
    where it is; applying it twice gives x back.  Differentiable (a gather)."""
    B, T = x.shape[:2]
    return x[np.arange(B)[:, None], _reversal_index(lengths, T)]


class RecurrentEncoder(Module):
    """Embedding -> `layers` stacked GRU/LSTM layers, forward and (optionally) backward, that
    respect padding.  Layer k reads layer k-1's outputs, both directions concatenated.

    forward(ids (B, T), lengths (B,)) -> outputs (B, T, dirs*hidden) (zero on the padding) and
    summary (B, dirs*hidden) = [forward state at the last real token ; backward state at the first].
    """

    def __init__(self, vocab_size, embed, hidden, cell="gru", layers=1, bidirectional=True, dropout=0.0,
                 padding_idx=PAD_ID):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}: choose one of {', '.join(CELLS)}")
        self.hidden, self.layers, self.bidirectional = hidden, layers, bidirectional
        self.directions = 2 if bidirectional else 1
        self.embedding = Embedding(vocab_size, embed, padding_idx=padding_idx)
        rnn = getattr(recurrent, CELLS[cell])
        sizes = [embed] + [hidden * self.directions] * (layers - 1)
        self.forward_rnns = ModuleList(rnn(size, hidden, batch_first=True) for size in sizes)
        if bidirectional:
            self.backward_rnns = ModuleList(rnn(size, hidden, batch_first=True) for size in sizes)
        self.drop = Dropout(dropout)

    @property
    def output_size(self):
        return self.hidden * self.directions

    def run(self, x, lengths):
        """The recurrent stack on already-embedded x (B, T, E): (outputs, summary)."""
        lengths = np.asarray(lengths, dtype=np.int64)
        B, T = x.shape[:2]
        rows = np.arange(B)
        for layer in range(self.layers):
            if layer:
                x = self.drop(x)
            forward, _ = self.forward_rnns[layer](x)
            if self.bidirectional:
                backward, _ = self.backward_rnns[layer](reverse_padded(x, lengths))
                x = cat([forward, reverse_padded(backward, lengths)], dim=2)
            else:
                x = forward
        summary = x[rows, lengths - 1]
        if self.bidirectional:  # the backward direction ends at position 0
            summary = cat([summary[:, :self.hidden], x[:, 0, self.hidden:]], dim=1)
        keep = Tensor._wrap((np.arange(T)[None, :] < lengths[:, None])[..., None].astype(x.dtype))
        return x * keep, summary

    def forward(self, ids, lengths):
        return self.run(self.drop(self.embedding(ids)), lengths)


@dataclass
class Seq2SeqConfig(Config):
    """The shape of a seq2seq model.  `hidden` is per encoder direction; the decoder's state has
    the size of the encoder's output (hidden * directions) so that dot attention applies."""

    src_vocab_size: int = 0
    tgt_vocab_size: int = 0
    cell: str = "gru"
    embed: int = 32
    hidden: int = 64
    layers: int = 1
    bidirectional: bool = True
    attention: str = "additive"
    attention_dim: int = 64      # width of the additive score's hidden layer
    dropout: float = 0.0
    max_target_len: int = 16     # longest output inference writes (</s> included)

    def __post_init__(self):
        if self.cell not in CELLS:
            raise ValueError(f"unknown cell {self.cell!r}: choose one of {', '.join(CELLS)}")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {self.attention!r}: choose one of {', '.join(ATTENTIONS)}")
        check_positive_ints(self, ("src_vocab_size", "tgt_vocab_size", "embed", "hidden", "layers", "attention_dim",
                                   "max_target_len"))
        check_dropout(self.dropout)


class Seq2Seq(Module):
    """Encoder-decoder with attention over characters (see the module docstring).

    `src_vocab` / `tgt_vocab` are vocabularies from `special_vocab` (ids 0-2 are <pad> <s> </s>);
    they are kept on the model so that `translate(["3rd of March 2021"])` works directly.
    """

    def __init__(self, config, src_vocab, tgt_vocab):
        super().__init__()
        if len(src_vocab) != config.src_vocab_size or len(tgt_vocab) != config.tgt_vocab_size:
            raise ValueError(f"Seq2Seq: the vocabularies have {len(src_vocab)} and {len(tgt_vocab)} symbols but the "
                             f"config says {config.src_vocab_size} and {config.tgt_vocab_size}")
        self.config, self.src_vocab, self.tgt_vocab = config, src_vocab, tgt_vocab
        c = config
        self.encoder = RecurrentEncoder(c.src_vocab_size, c.embed, c.hidden, c.cell, c.layers, c.bidirectional,
                                        c.dropout)
        D = self.encoder.output_size
        self.is_lstm = c.cell == "lstm"
        self.bridge = Linear(D, 2 * D if self.is_lstm else D)
        self.tgt_embedding = Embedding(c.tgt_vocab_size, c.embed, padding_idx=PAD_ID)
        self.decoder_rnn = getattr(recurrent, CELLS[c.cell])(c.embed, D, batch_first=True)
        if c.attention == "additive":
            self.attention = AdditiveAttention(D, D, c.attention_dim)
        elif c.attention == "dot":
            self.attention = DotAttention(scaled=True)
        else:
            self.attention = GeneralAttention(D, D)
        self.combine = Linear(2 * D, D)
        self.drop = Dropout(c.dropout)
        self.out = Linear(D, c.tgt_vocab_size)

    # ------------------------------------------------------------------ the two halves
    def encode(self, src, lengths=None):
        """src (B, S) ids padded with PAD_ID -> (memory (B, S, D), pad mask (B, S) True on padding,
        the decoder's initial state)."""
        src = src if isinstance(src, Tensor) else Tensor(np.asarray(src, dtype=np.int64))
        ids = src.numpy()
        lengths = (ids != PAD_ID).sum(axis=1) if lengths is None else np.asarray(lengths, dtype=np.int64)
        if (lengths < 1).any():
            raise ValueError("Seq2Seq: every source needs at least one token")
        memory, summary = self.encoder(src, lengths)
        mask = np.arange(ids.shape[1])[None, :] >= lengths[:, None]
        start = self.bridge(summary)
        if self.is_lstm:
            D = self.encoder.output_size
            state = (start[:, :D].tanh().unsqueeze(0), start[:, D:].unsqueeze(0))
        else:
            state = start.tanh().unsqueeze(0)
        return memory, mask, state

    def decode(self, tgt_in, state, memory, mask):
        """tgt_in (B, T) ids (<s> then the target, shifted right) -> (logits (B, T, V), the decoder
        state after step T, attention weights (B, T, S)).  T = 1 is one step of inference."""
        tgt_in = tgt_in if isinstance(tgt_in, Tensor) else Tensor(np.asarray(tgt_in, dtype=np.int64))
        queries, state = self.decoder_rnn(self.drop(self.tgt_embedding(tgt_in)), state)  # (B, T, D)
        B, T, D = queries.shape
        S = memory.shape[1]
        # every (step, source position) pair at once: the T steps become T*B rows of one batch
        queries = queries.reshape(B * T, D)
        keys = memory if T == 1 else memory.unsqueeze(1).expand(B, T, S, D).reshape(B * T, S, D)
        rows_mask = np.broadcast_to(mask[:, None, :], (B, T, S)).reshape(B * T, S)
        context, weights = self.attention(queries, keys, mask=rows_mask)
        attentional = self.combine(cat([context, queries], dim=1)).tanh()
        logits = self.out(self.drop(attentional)).reshape(B, T, -1)
        return logits, state, weights.reshape(B, T, S)

    def forward(self, src, tgt_in, src_lengths=None):
        """Teacher-forced pass: (logits (B, T, V), attention weights (B, T, S))."""
        memory, mask, state = self.encode(src, src_lengths)
        logits, _, weights = self.decode(tgt_in, state, memory, mask)
        return logits, weights

    def loss(self, src, tgt_in, tgt_out):
        """Mean negative log-likelihood per target token, -1/N sum log P(y_t | y_<t, x), over the
        tokens of tgt_out that are not padding (teacher forcing)."""
        logits, _ = self(src, tgt_in)
        target = tgt_out if isinstance(tgt_out, Tensor) else Tensor(np.asarray(tgt_out, dtype=np.int64))
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=PAD_ID)

    # ------------------------------------------------------------------ inference
    def select_state(self, state, index):
        """Keep rows `index` of a decoding state (the decoders' reorder_state): the RNN state is
        (layers, B, D), memory and mask are batch-first."""
        rnn_state, memory, mask = state
        return (decoding.index_state(rnn_state, index, axis=1), decoding.index_state(memory, index, axis=0),
                mask[np.asarray(index)])

    def _step(self, tokens, state):
        rnn_state, memory, mask = state
        logits, rnn_state, _ = self.decode(Tensor(np.asarray(tokens, dtype=np.int64)[:, None]), rnn_state, memory, mask)
        return logits.data[:, 0], (rnn_state, memory, mask)

    def encode_texts(self, texts):
        """Source strings -> padded ids (B, S) (VocabError naming unknown characters)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        for t in texts:
            if not t:
                raise ValueError("cannot translate an empty string")
        ids, _ = pad_batch([self.src_vocab.encode(t) for t in texts])
        return ids

    def decode_ids(self, ids):
        """Target ids -> string, stopping at </s> and skipping <pad> / <s>."""
        out = []
        for i in np.asarray(ids).reshape(-1).tolist():
            if i == EOS_ID:
                break
            if i not in (PAD_ID, BOS_ID):
                out.append(self.tgt_vocab.symbols[i])
        return "".join(out)

    def generate_ids(self, src, method="greedy", beam_width=5, temperature=1.0, top_k=None, max_len=None,
                     rng=None, length_penalty=0.0):
        """Target ids for each source row: a list of int lists (</s> included when it was written).

        method 'greedy' (all rows at once), 'beam' (one row at a time, the best of `beam_width`)
        or 'sample' (softmax(logits / temperature) among the top_k)."""
        max_len = max_len or self.config.max_target_len
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                memory, mask, state = self.encode(src)
                B = memory.shape[0]
                start = np.full(B, BOS_ID, dtype=np.int64)
                if method == "greedy":
                    ids, _ = decoding.greedy(self._step, (state, memory, mask), start, max_len, eos=EOS_ID)
                    return [_until_eos(row) for row in ids.tolist()]
                if method == "sample":
                    ids, _ = decoding.sample(self._step, (state, memory, mask), start, max_len, temperature, top_k,
                                             eos=EOS_ID, rng=rng)
                    return [_until_eos(row) for row in ids.tolist()]
                if method == "beam":
                    results = []
                    for b in range(B):
                        one = self.select_state((state, memory, mask), np.array([b]))
                        best = decoding.beam_search(self._step, one, start[:1], beam_width, max_len, eos=EOS_ID,
                                                    length_penalty=length_penalty, reorder_state=self.select_state)
                        results.append(list(best[0].tokens))
                    return results
                raise ValueError(f"unknown decoding method {method!r}: choose greedy, beam or sample")
        finally:
            self.train(was_training)

    def translate(self, texts, method="greedy", **options):
        """Strings in, strings out (see generate_ids for the options)."""
        ids = self.generate_ids(self.encode_texts(texts), method, **options)
        return [self.decode_ids(row) for row in ids]

    def attention_map(self, text, output=None):
        """(weights (T, S) as a NumPy array, source characters, output characters) for one
        source: the attention paid while writing `output` (default: the greedy translation)."""
        src = self.encode_texts([text])
        output = self.translate([text])[0] if output is None else output
        tgt_in = np.array([[BOS_ID] + self.tgt_vocab.encode(output).tolist()], dtype=np.int64)
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                _, weights = self(Tensor(src), Tensor(tgt_in))
        finally:
            self.train(was_training)
        return weights.numpy()[0], list(text), list(output) + ["</s>"]

    def config_dict(self):
        return self.config.to_dict()


def _until_eos(row):
    row = list(row)
    return row[:row.index(EOS_ID) + 1] if EOS_ID in row else row


# ---------------------------------------------------------------------------- training and scoring
def make_batch(pairs, src_vocab, tgt_vocab):
    """(source text, target text) pairs -> (src (B, S), tgt_in (B, T), tgt_out (B, T)) int64:
    tgt_in = <s> y, tgt_out = y </s>, both padded with PAD_ID."""
    src, _ = pad_batch([src_vocab.encode(s) for s, _ in pairs])
    targets = [tgt_vocab.encode(t) for _, t in pairs]
    tgt_in, _ = pad_batch(targets, bos=True)
    tgt_out, _ = pad_batch(targets, eos=True)
    return src, tgt_in, tgt_out


@dataclass
class Seq2SeqTrainConfig(Config):
    """How a seq2seq (or tagger) model is trained (its shape is the model's config): the run's
    length and where it goes, then the optimisation, then where the kernels run."""

    steps: int = 400
    eval_every: int = 100
    val_examples: int = 256      # validation loss on at most this many held-out examples
    out: str = None              # run directory (None: nothing is written)
    batch_size: int = 64
    lr: float = 3e-3
    clip: float = 5.0            # max global gradient norm; 0 = no clipping
    dropout: float = 0.0
    seed: int = 0
    backend: str = "auto"
    device: str = "cpu"

    def __post_init__(self):
        check_positive_ints(self, ("steps", "batch_size", "eval_every", "val_examples"), option_names=True)
        check_rates(self.lr, self.clip, self.dropout)


class RandomPairs:
    """Batch source: `batch_size` pairs drawn with replacement by a generator seeded with (seed, step),
    so the batch of a step does not depend on the steps before it (resume is bit-for-bit)."""

    def __init__(self, pairs, batch_size, seed):
        if not pairs:
            raise ValueError("no training pairs")
        self.pairs, self.batch_size, self.seed = pairs, batch_size, seed

    def __call__(self, step):
        rng = np.random.default_rng([self.seed, step])
        return [self.pairs[i] for i in rng.integers(len(self.pairs), size=self.batch_size)]


class HeldOutTrainer(Trainer):
    """The shared loop for a model trained on random batches of examples (Adam, the global
    batch shared out among MPI ranks) and judged on held-out dev and test examples: the loss of
    every step is kept in `losses`, and validation is the loss on the first `val_examples` dev
    examples, at the last step also the dev scores; the test examples are scored once, at the
    last step, for the final report, and never steer the run.

    A subclass gives dev_size(), dev_loss(n) (a Tensor, mean nats per `loss_token`),
    dev_scores() (a dict), dev_summary(metrics) (those scores in words) and score_test()
    (keeps what the final report shows)."""

    loss_token = "token"

    def __init__(self, config, model, batches, **trainer_options):
        from .. import optim

        super().__init__(config, model, optim.Adam(list(model.parameters()), lr=config.lr),
                         rank_share(batches, config.batch_size), **trainer_options)
        self.units_per_step = config.batch_size
        self.losses = []

    def train_step(self):
        value = super().train_step()
        self.losses.append(value)
        return value

    def validate(self):
        if not self.dev_size():
            return None
        with no_grad():
            metrics = {"val_loss": float(self.dev_loss(self.config.val_examples).item())}
        if self.step >= self.config.steps:
            metrics.update(self.dev_scores())
            self.score_test()
        return metrics

    def report(self, metrics):
        line = f"step {self.step}: validation loss {metrics['val_loss']:.4f} nats/{self.loss_token}"
        scored = len(metrics) > 1          # the dev scores join the loss at the last step
        return line + (f", {self.dev_summary(metrics)}" if scored else "")


class Seq2SeqTrainer(HeldOutTrainer):
    """Teacher-forced training of a Seq2Seq on (source, target) string pairs with the shared loop:
    Adam on the mean per-token NLL of random batches, the gradient norm clipped at `clip`.
    Validation (what callbacks and a tuner see): the loss on the dev pairs `val_pairs`, at the
    last step also their exact match.  `test_pairs` are touched once, at the last step, for the
    final score (`exact_match`, `predictions`); they never steer the run.

    Under MPI each rank takes its share of every batch (`--batch-size` stays the global batch)."""

    kind = "seq2seq"
    metric = "val_loss"
    unit = "pairs"
    loss_token = "character"

    def __init__(self, config, model, train_pairs, val_pairs=None, info=None, test_pairs=None, **trainer_options):
        super().__init__(config, model, RandomPairs(train_pairs, config.batch_size, config.seed), **trainer_options)
        self.val_pairs = list(val_pairs or [])
        self.test_pairs = list(test_pairs or [])
        self.info = dict(info or {})
        self.exact_match = None          # on the test pairs, after the last step
        self.predictions = None

    def compute_loss(self, batch):
        pairs, whole = batch
        if not pairs:
            return zero_loss(self.params)
        src, tgt_in, tgt_out = make_batch(pairs, self.model.src_vocab, self.model.tgt_vocab)
        loss = self.model.loss(Tensor(src), Tensor(tgt_in), Tensor(tgt_out))
        if self.world_size == 1:
            return loss
        tokens = lambda ps: sum(len(self.model.tgt_vocab.encode(t)) + 1 for _, t in ps)  # noqa: E731 (+ </s>)
        return share_weighted(loss, tokens(pairs), tokens(whole), self.world_size)

    def dev_size(self):
        return len(self.val_pairs)

    def dev_loss(self, n):
        src, tgt_in, tgt_out = make_batch(self.val_pairs[:n], self.model.src_vocab, self.model.tgt_vocab)
        return self.model.loss(Tensor(src), Tensor(tgt_in), Tensor(tgt_out))

    def dev_scores(self):
        return {"exact_match": exact_match(self.model, self.val_pairs)[0]}

    def score_test(self):
        if self.test_pairs:
            self.exact_match, self.predictions = exact_match(self.model, self.test_pairs)

    def dev_summary(self, metrics):
        return f"dev exact match {metrics['exact_match']:.2%} on {len(self.val_pairs):,} dev pairs"

    def checkpoint_extra(self):
        return {"model_config": self.model.config.to_dict(), "src_vocab": self.model.src_vocab.to_dict(),
                "tgt_vocab": self.model.tgt_vocab.to_dict(),
                "train": {"data": self.info, "test_exact_match": self.exact_match, "seed": self.config.seed}}


def train(model, pairs, steps, batch_size=64, lr=3e-3, clip=5.0, seed=0, callback=None, log_every=None):
    """Adam on the mean per-token NLL of random batches of `pairs` (teacher forcing), with the
    global gradient norm clipped at `clip`, through the shared loop (Seq2SeqTrainer, nothing
    written).  `callback(step, loss)` runs every `log_every` steps and may return True to stop.
    Returns the losses; raises FloatingPointError if the loss, gradient or weights stop being finite."""
    if steps < 0 or batch_size < 1:
        raise ValueError(f"steps must be >= 0 and batch_size >= 1, got {steps} and {batch_size}")
    if not pairs:
        raise ValueError("no training pairs")
    if steps == 0:
        return []
    config = Seq2SeqTrainConfig(steps=steps, batch_size=batch_size, lr=lr, clip=clip, seed=seed, eval_every=steps)
    trainer = Seq2SeqTrainer(config, model, pairs)
    return _run_quietly(trainer, callback, log_every)


def _run_quietly(trainer, callback, log_every):
    """Train without output, calling `callback(step, loss)` every `log_every` steps (True stops)."""
    step_once = trainer.train_step

    def step_and_report():
        value = step_once()
        if callback is not None and log_every and (trainer.step % log_every == 0 or trainer.step == trainer.config.steps):
            if callback(trainer.step, value):
                trainer.config.steps = trainer.step  # stop after this step
        return value

    trainer.train_step = step_and_report
    result = trainer.train(echo=lambda line: None, progress=False)
    if result.status == "diverged":
        raise FloatingPointError(result.message)
    return trainer.losses


def exact_match(model, pairs, method="greedy", batch_size=256, **options):
    """Fraction of pairs whose translation equals the target exactly, and the translations."""
    predictions = []
    for start in range(0, len(pairs), batch_size):
        predictions += model.translate([s for s, _ in pairs[start:start + batch_size]], method, **options)
    correct = sum(p == t for p, (_, t) in zip(predictions, pairs))
    return correct / max(1, len(pairs)), predictions
