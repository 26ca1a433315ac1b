"""The language-model training loop behind `tgs train charlm` / `tgs train wordlm` and the benches.

    config = TrainConfig(model="lstm", hidden=256, steps=1000, out="runs/charlm")
    trainer = LMTrainer.from_texts(config, train_text, val_text)
    result = trainer.train()                 # progress bar, validation, samples, checkpoints
    trainer = LMTrainer.from_checkpoint(load_checkpoint("runs/charlm"), train_text, val_text)
    trainer.train()                          # continues bit-for-bit where it stopped

Truncated backpropagation through time: the token stream is cut into `batch_size` parallel
rows (row b holds a contiguous slice of the text), and each step reads the next `seq_len`
columns of every row.  The hidden state at the end of one chunk is the initial state of the
next, detached: information flows forward across the whole stream, gradients only within a
chunk.  Step s reads chunk s mod (chunks per epoch), so the data a step sees depends only on
s; at the start of each epoch the state restarts from zeros.

What makes a run safe to stop (checkpoints at every evaluation, Ctrl-C and SIGTERM, the NaN
guard on loss, gradients and weights, the run lock, metrics.jsonl and loss.png) is the shared
loop of `tinygrad_seq.trainer.Trainer`, which LMTrainer subclasses.
"""
import math
import os
import zlib
from dataclasses import dataclass

import numpy as np

from . import distributed as dist
from . import random as tgs_random
from .backend import backend as use_backend
from .checkpoint import CheckpointError, malformed_as_checkpoint_error
from .config import Config, check_positive_ints
from .models.charlm import (LMConfig, build_lm, detach_state, evaluate_stream, evaluate_windows, generate,
                            state_from_arrays, state_to_arrays)
from .tensor import Tensor
from .text.vocab import CharVocab, WordVocab, vocab_from_dict
from .trainer import (Progress, Trainer, TrainResult, check_rates, deferred_signals, safe_exp,  # noqa: F401  (re-exported)
                      share_weighted)

LN2 = math.log(2)
KINDS = {"char": "charlm", "word": "wordlm"}
# validation keeps no graph, so reading many more streams at once than training does costs
# little memory and saves Python steps: at least this many, however small --batch-size is
MIN_VALIDATION_STREAMS = 64


@dataclass
class TrainConfig(Config):
    """Everything that defines a language-model run (the CLI options of `tgs train charlm`)."""

    level: str = "char"          # char | word
    model: str = "lstm"          # rnn | gru | lstm | transformer
    layers: int = 1
    heads: int = 4               # transformer only
    hidden: int = 256
    embed: int = 64              # 0 = one-hot inputs
    seq_len: int = 64
    batch_size: int = 32
    steps: int = 1000
    lr: float = 2e-3
    clip: float = 5.0            # max global gradient norm; 0 = no clipping
    dropout: float = 0.0
    seed: int = 0
    eval_every: int = 200
    out: str = "runs/charlm"
    backend: str = "auto"
    device: str = "cpu"
    val_fraction: float = 0.1    # held-out tail when no validation file is given
    val_max_tokens: int = 100_000  # each validation predicts at most this many tokens (validation_sample)
    sample_length: int = 200     # characters (or words) of sample printed at each evaluation
    min_count: int = 1           # word level: rarer words become <UNK>
    max_vocab: int = 20_000      # word level: at most this many entries

    def __post_init__(self):
        positive = ("layers", "heads", "hidden", "seq_len", "batch_size", "steps", "eval_every", "sample_length",
                    "min_count", "max_vocab", "val_max_tokens")
        check_positive_ints(self, positive, option_names=True)
        if self.embed < 0:
            raise ValueError(f"embed must be a positive integer (or 0 for one-hot inputs), got {self.embed}")
        check_rates(self.lr, self.clip, self.dropout)
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val-fraction must be in (0, 1), got {self.val_fraction}")
        if self.level not in KINDS:
            raise ValueError(f"level must be 'char' or 'word', not {self.level!r}")
        if self.level == "word" and self.max_vocab < 3:
            raise ValueError(f"max-vocab must be at least 3 (<UNK>, <EOS> and a word), got {self.max_vocab}")
        if self.model not in LMConfig.MODELS:
            raise ValueError(f"unknown model {self.model!r}: choose one of {', '.join(LMConfig.MODELS)}")

    @property
    def unit(self):
        return "chars" if self.level == "char" else "words"


# ---------------------------------------------------------------------------- data
def split_corpus(text, val_text=None, val_fraction=0.1):
    """(train, validation): `val_text` when given, else the last `val_fraction` of `text`."""
    if val_text is not None:
        return text, val_text
    cut = int(round(len(text) * (1 - val_fraction)))
    return text[:cut], text[cut:]


def fingerprint(text):
    """A short check that a resumed run reads the same text it started with."""
    return {"length": len(text), "crc32": zlib.crc32(text.encode("utf-8"))}


def validation_sample(n_tokens, max_tokens, windows=64, seed=0):
    """Where a bounded validation reads a held-out stream of `n_tokens` tokens: None when the
    whole stream predicts at most `max_tokens`; else (starts, length), `windows` windows of
    `length` tokens predicting at most `max_tokens` in all, one at a seeded random offset in
    each of `windows` equal strata of the stream, so the sample covers all of a huge held-out
    part and not just its head.  A function of its arguments only: the same windows at every
    validation, on every rank and after a resume."""
    if n_tokens - 1 <= max_tokens:
        return None
    windows = max(1, min(windows, max_tokens))
    length = max_tokens // windows + 1
    stratum = n_tokens // windows
    rng = np.random.default_rng([seed, 0x5A11])  # its own stream: training's draws stay untouched
    starts = np.arange(windows) * stratum + rng.integers(0, max(stratum - length, 0) + 1, size=windows)
    return np.minimum(starts, n_tokens - length), length


class StreamBatches:
    """The token stream as `batch_size` contiguous rows read `seq_len` columns at a time.

    `ids` may be an np.memmap of a corpus cache (any integer dtype): rows are views,
    and each step copies out only its (rows, seq_len) window as int64.  With `world_size`
    ranks, rank r reads rows [B r / N, B (r+1) / N) of the global batch of B rows."""

    def __init__(self, ids, batch_size, seq_len, rank=0, world_size=1):
        ids = _as_ids(ids)
        if ids.size < seq_len + 1:
            raise ValueError(f"the training text has {ids.size} tokens, fewer than seq-len + 1 = {seq_len + 1}; "
                             "use a longer corpus or a smaller --seq-len")
        # a short text cannot fill batch_size rows of seq_len + 1: use fewer rows
        self.batch_size = min(batch_size, (ids.size - 1) // seq_len)
        self.seq_len = seq_len
        row = (ids.size - 1) // self.batch_size
        self.inputs = ids[:row * self.batch_size].reshape(self.batch_size, row)
        self.targets = ids[1:row * self.batch_size + 1].reshape(self.batch_size, row)
        self.chunks = row // seq_len  # chunks per epoch
        if self.batch_size < world_size:
            raise ValueError(f"--batch-size {self.batch_size} is smaller than the {world_size} ranks; "
                             "give every rank at least one stream")
        self.rows = slice(self.batch_size * rank // world_size, self.batch_size * (rank + 1) // world_size)
        self.inputs, self.targets = self.inputs[self.rows], self.targets[self.rows]

    @property
    def shard_size(self):
        """Rows this rank reads."""
        return self.rows.stop - self.rows.start

    def __call__(self, step):
        """(x, y, first) for training step `step`; first: this chunk starts an epoch."""
        i = step % self.chunks
        cols = slice(i * self.seq_len, (i + 1) * self.seq_len)
        return (self.inputs[:, cols].astype(np.int64), self.targets[:, cols].astype(np.int64), i == 0)


# ---------------------------------------------------------------------------- the trainer
class LMTrainer(Trainer):
    """Owns the model, optimiser, data and run directory of one language-model run; the loop
    itself (signals, NaN guard, lock, checkpoints, metrics) is `Trainer`'s."""

    metric = "val_loss"

    def __init__(self, config, vocab, train_ids, val_ids, data_info=None, **trainer_options):
        from . import optim

        self.vocab = vocab
        self.train_ids = _as_ids(train_ids)
        self.val_ids = _as_ids(val_ids)
        self.data_info = data_info or {}
        # with N ranks (MPI) this rank reads its own rows of the global batch
        batches = StreamBatches(self.train_ids, config.batch_size, config.seq_len, dist.get_rank(),
                                dist.get_world_size())
        if self.val_ids.size < 2:
            raise ValueError(f"the validation text has {self.val_ids.size} token{'s' if self.val_ids.size != 1 else ''}"
                             f" ({config.unit}), too short for one validation window: at least 2 are needed to "
                             "measure a loss; use a longer corpus or give a --val FILE")
        tgs_random.manual_seed(config.seed)
        self.model_config = LMConfig(model=config.model, vocab_size=len(vocab), embed=config.embed,
                                     hidden=config.hidden, layers=config.layers, dropout=config.dropout,
                                     heads=config.heads, block_size=config.seq_len)
        model = build_lm(self.model_config).to(config.device)
        super().__init__(config, model, optim.Adam(list(model.parameters()), lr=config.lr), batches,
                         **trainer_options)
        self.kind = KINDS[config.level]
        self.unit = config.unit
        self.units_per_step = batches.batch_size * config.seq_len
        self.carry = None
        self._next_carry = None
        self._whole_carry = None
        self.show_samples = True

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_texts(cls, config, train_text, val_text, data_info=None, **trainer_options):
        """Build the vocabulary from the texts and start a fresh run."""
        if config.level == "char":
            vocab = CharVocab.from_text(train_text + val_text)
        else:
            vocab = WordVocab.from_text(train_text, min_count=config.min_count, max_size=config.max_vocab)
        info = dict(data_info or {})
        info.update(train=fingerprint(train_text), val=fingerprint(val_text))
        return cls(config, vocab, vocab.encode(train_text), vocab.encode(val_text), info, **trainer_options)

    @classmethod
    def from_checkpoint(cls, state, train_text, val_text, steps=None, eval_every=None, out=None,
                        backend=None, device=None, path="checkpoint", changes=None, ids=None, ids_vocab=None,
                        **trainer_options):
        """Continue a run from its checkpoint; the texts must be the ones it was trained on.
        `steps` (the new total), `eval_every`, `out`, `backend`, `device` and `changes` (a dict of
        other CHANGEABLE settings: lr, clip, dropout; and val_max_tokens) may change; nothing else
        can.  From a corpus cache (text.corpus_cache): train_text/val_text are the cache's
        fingerprints, `ids` its (training ids, validation ids) and `ids_vocab` the vocabulary they
        were encoded with, which must be the run's.  The checkpoint may come from
        a run on any number of ranks."""
        if not isinstance(state, dict) or state.get("kind") not in KINDS.values() or "train" not in state:
            raise CheckpointError(f"this checkpoint holds a {state.get('kind') if isinstance(state, dict) else None!r}"
                                  " model, not a language-model run")
        changes = dict(changes or {})
        with malformed_as_checkpoint_error(path):
            saved = dict(state["train"]["config"])
            # how much validation reads changes neither the model nor its data: not a logged change
            for key, value in (("out", out), ("backend", backend), ("device", device),
                               ("val_max_tokens", changes.pop("val_max_tokens", None))):
                if value is not None:
                    saved[key] = value
            config = TrainConfig.from_dict(saved)
            info = state["train"].get("data", {})
            vocab = vocab_from_dict(state["vocab"])
            model_config = LMConfig.from_dict(state["model_config"])
            if len(vocab) != model_config.vocab_size:
                raise CheckpointError(f"{path} is a malformed checkpoint: its vocabulary has {len(vocab)} entries, "
                                      f"its model {model_config.vocab_size}")
        if ids_vocab is not None and ids_vocab.to_dict() != vocab.to_dict():
            raise CheckpointError(f"the corpus' {'characters' if vocab.type == 'char' else 'words'} differ from the "
                                  "run's vocabulary; "
                                  "give the same corpus (and --val) to resume")
        for name, text in (("train", train_text), ("val", val_text)):
            if name in info and info[name] != (text if isinstance(text, dict) else fingerprint(text)):
                raise CheckpointError(f"the {'training' if name == 'train' else 'validation'} text differs from "
                                      "the one this run was trained on; give the same corpus (and --val) to resume")
        if ids is None:
            ids = vocab.encode(train_text), vocab.encode(val_text)
        trainer = cls(config, vocab, ids[0], ids[1], info, **trainer_options)
        trainer.restore(state, path)
        requested = dict(changes)
        requested.update({k: v for k, v in (("steps", steps), ("eval_every", eval_every)) if v is not None})
        trainer.change_settings(**requested)
        return trainer

    @classmethod
    def from_cache(cls, config, cache, data_info=None, **trainer_options):
        """A fresh run on a text.corpus_cache.CorpusCache (memory-mapped token ids)."""
        info = dict(data_info or {})
        info.update(cache.fingerprints)
        return cls(config, cache.vocab, cache.train_ids, cache.val_ids, info, **trainer_options)

    def restore_extra(self, state):
        # the checkpoint holds the whole global batch's carried state: this rank takes its rows
        self.carry = state_from_arrays(_rows_of(state["train"]["carry"], self.batches.rows))
        if self.carry is not None and self.config.device != "cpu":
            self.carry = _to_device(self.carry, self.config.device)

    # ------------------------------------------------------------------ one step
    def compute_loss(self, batch):
        from .nn import functional as F

        x, y, first = batch
        if first:
            self.carry = None
        device = self.config.device
        logits, state = self.model(Tensor(x, device=device), self.carry if self.model.carries_state else None)
        self._next_carry = state
        V = logits.shape[-1]
        loss = F.cross_entropy(logits.reshape(-1, V), Tensor(y.reshape(-1), device=device))
        # every row has seq_len tokens: the rows weigh the shards
        return share_weighted(loss, self.batches.shard_size, self.batches.batch_size, self.world_size)

    def after_step(self, batch):
        self.carry = detach_state(self._next_carry) if self.model.carries_state else None

    # ------------------------------------------------------------------ evaluation and samples
    def evaluate(self, max_tokens=None):
        """Validation loss in nats per token (no dropout, no graph): over the whole held-out
        stream when it has at most `max_tokens` (config.val_max_tokens) tokens to predict, else
        over validation_sample's seeded windows spread across all of it."""
        limit = self.config.val_max_tokens if max_tokens is None else max_tokens
        streams = max(self.config.batch_size, MIN_VALIDATION_STREAMS)
        sample = validation_sample(self.val_ids.size, limit, streams, self.config.seed)
        was_training = self.model.training
        self.model.eval()
        try:
            with use_backend(self.config.backend):
                if sample is None:
                    nats, count = evaluate_stream(self.model, self.val_ids, batch_size=streams,
                                                  seq_len=self.config.seq_len)
                else:
                    nats, count = evaluate_windows(self.model, self.val_ids, *sample, seq_len=self.config.seq_len)
        finally:
            self.model.train(was_training)
        return nats / count

    def validate(self):
        """{"val_loss": nats per token, "val_bits_per_<unit>": bits}."""
        loss = self.evaluate()
        return {"val_loss": loss, f"val_bits_per_{self.config.unit[:-1]}": loss / LN2}

    def report(self, metrics):
        unit = self.config.unit[:-1]
        val = metrics["val_loss"]
        line = f"step {self.step}: validation loss {val:.4f} nats/{unit} ({val / LN2:.3f} bits/{unit})"
        if self.show_samples:
            line += "\n--- sample ---\n" + self.sample() + "\n--------------"
        return line

    def sample(self, length=None, prime="", temperature=0.8, seed=None):
        """A sample from the model; its own random generator leaves training's untouched."""
        rng = np.random.default_rng(self.config.seed + self.step if seed is None else seed)
        with use_backend(self.config.backend):
            return generate(self.model, self.vocab, prime, length or self.config.sample_length,
                            temperature=temperature, rng=rng)

    # ------------------------------------------------------------------ saving
    def checkpoint_extra(self):
        carry = self._whole_carry[0] if self._whole_carry is not None else self._gathered_carry()
        return {"model_config": self.model_config.to_dict(), "vocab": self.vocab.to_dict(),
                "train": {"carry": carry, "data": self.data_info}}

    def save(self):
        # every rank hands in its rows of the carried state (a collective), rank 0 writes them
        self._whole_carry = [self._gathered_carry()]
        try:
            return super().save()
        finally:
            self._whole_carry = None

    def _gathered_carry(self):
        """The carried state of the whole global batch (every rank's rows, in order)."""
        local = state_to_arrays(self.carry)
        if self.world_size == 1:
            return local
        shards = []
        dist.all_gather_object(shards, local)
        return _concat_rows(shards)

    def train(self, echo=print, progress=True, show_samples=True):
        """Run until config.steps.  Returns a TrainResult; never raises for a signal or divergence."""
        self.show_samples = show_samples
        return super().train(echo=echo, progress=progress)



# ---------------------------------------------------------------------------- loading for sample / eval
def load_lm(state, path="checkpoint"):
    """(model in eval mode, vocabulary) from a language-model checkpoint's state; a state that
    does not fit its own config is a CheckpointError naming `path`."""
    from .checkpoint import check_module_state, require

    with malformed_as_checkpoint_error(path):
        config = LMConfig.from_dict(state["model_config"])
        vocab = vocab_from_dict(state["vocab"])
        require(len(vocab) == config.vocab_size, path,
                f"its vocabulary has {len(vocab)} entries, its model {config.vocab_size}")
        model = build_lm(config)
        check_module_state(model, state["model"], path)
        model.load_state_dict(state["model"])
    return model.eval(), vocab


def evaluate_text(state, text, batch_size=16, seq_len=128, path="checkpoint"):
    """Loss of a language-model checkpoint on `text`: a dict with nats_per_char, bits_per_char,
    chars, perplexity (inf past e^709, never an OverflowError) (and for word models nats_per_word,
    words)."""
    model, vocab = load_lm(state, path)
    ids = vocab.encode(text)
    nats, count = evaluate_stream(model, ids, batch_size=batch_size, seq_len=seq_len)
    return _figures(vocab, nats, count, len(text))


def evaluate_file(state, path, batch_size=16, seq_len=128, progress=True, stream=None, checkpoint_path="checkpoint"):
    """evaluate_text for a file of any size: the text is streamed into a temporary file of
    token ids, memory-mapped and scored with a progress bar; the same figures."""
    from .text.corpus_cache import ByteProgress, encoded_file

    model, vocab = load_lm(state, checkpoint_path)
    with encoded_file(path, vocab, progress=progress, stream=stream) as (ids, chars):
        if ids.size < 2:
            raise ValueError("evaluate: needs at least two tokens")
        unit = "M chars" if vocab.type == "char" else "M words"
        bar = ByteProgress("evaluating", ids.size - 1, stream, progress, unit=unit)
        nats, count = evaluate_stream(model, ids, batch_size=batch_size, seq_len=seq_len,
                                      progress=lambda done, total: bar(done))
        bar.close()
    return _figures(vocab, nats, count, chars)


def _figures(vocab, nats, count, chars):
    """The figures of `tgs eval`: `nats` summed over `count` predicted tokens of a `chars`-character text."""
    if vocab.type == "word":
        return {"nats_per_char": nats / chars, "bits_per_char": nats / chars / LN2, "chars": chars,
                "nats_per_word": nats / count, "bits_per_word": nats / count / LN2,
                "perplexity": safe_exp(nats / count), "words": count}
    return {"nats_per_char": nats / count, "bits_per_char": nats / count / LN2, "chars": count,
            "perplexity": safe_exp(nats / count)}


# ---------------------------------------------------------------------------- helpers
def _as_ids(ids):
    """Token ids as a flat integer array, without copying an integer array (a corpus cache's memmap)."""
    if isinstance(ids, np.ndarray) and ids.dtype.kind in "iu":
        return ids.reshape(-1)
    return np.asarray(ids, dtype=np.int64).reshape(-1)


def _concat_rows(shards):
    """Nested carried states of consecutive row shards joined along the batch axis: (layers, batch, hidden)."""
    if shards[0] is None:
        return None
    if isinstance(shards[0], list):
        return [_concat_rows([s[i] for s in shards]) for i in range(len(shards[0]))]
    return np.concatenate(shards, axis=1)


def _rows_of(saved, rows):
    """This rank's rows of a saved carried state of the whole batch."""
    if saved is None or rows == slice(0, None):
        return saved
    if isinstance(saved, list):
        return [_rows_of(s, rows) for s in saved]
    return saved[:, rows]


def _to_device(state, device):
    if isinstance(state, tuple):
        return tuple(_to_device(s, device) for s in state)
    return state.to(device)
