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

What makes a run safe to stop:
- a checkpoint (config, vocabulary, weights, optimiser state, RNG state, the carried hidden
  state, the step) is written atomically at every evaluation and at the end;
- Ctrl-C finishes the current step, writes a checkpoint and returns status "interrupted"
  (a second Ctrl-C stops at once, leaving the last checkpoint);
- a NaN or infinite loss (or gradient) stops before the weights are touched and returns
  status "diverged", leaving the last good checkpoint as it was.
"""
import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
import zlib
from dataclasses import dataclass

import numpy as np

from . import random as tgs_random
from .backend import backend as use_backend
from .config import Config
from .checkpoint import DEFAULT_NAME, CheckpointError, save_checkpoint
from .models.charlm import (LMConfig, build_lm, detach_state, evaluate_stream, generate, state_from_arrays,
                            state_to_arrays)
from .tensor import Tensor
from .text.vocab import CharVocab, WordVocab, vocab_from_dict

LN2 = math.log(2)
KINDS = {"char": "charlm", "word": "wordlm"}


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
    val_max_tokens: int = 100_000  # periodic validation reads at most this much (the final one too)
    sample_length: int = 200     # characters (or words) of sample printed at each evaluation
    min_count: int = 1           # word level: rarer words become <UNK>
    max_vocab: int = 20_000      # word level: at most this many entries

    def __post_init__(self):
        positive = ("layers", "heads", "hidden", "seq_len", "batch_size", "steps", "eval_every", "sample_length",
                    "min_count", "max_vocab", "val_max_tokens")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.embed < 0:
            raise ValueError(f"embed must be a positive integer (or 0 for one-hot inputs), got {self.embed}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if not (self.clip >= 0 and math.isfinite(self.clip)):
            raise ValueError(f"clip must be >= 0 (0 turns clipping off), got {self.clip}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val-fraction must be in (0, 1), got {self.val_fraction}")
        if self.level not in KINDS:
            raise ValueError(f"level must be 'char' or 'word', not {self.level!r}")
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


class StreamBatches:
    """The token stream as `batch_size` contiguous rows read `seq_len` columns at a time."""

    def __init__(self, ids, batch_size, seq_len):
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
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

    def __call__(self, step):
        """(x, y, first) for training step `step`; first: this chunk starts an epoch."""
        i = step % self.chunks
        cols = slice(i * self.seq_len, (i + 1) * self.seq_len)
        return self.inputs[:, cols], self.targets[:, cols], i == 0


# ---------------------------------------------------------------------------- progress
class Progress:
    """One status line: step, loss, throughput and ETA.  On a terminal it redraws in place;
    otherwise (a log file, a test) it prints a line about every `total/20` steps."""

    def __init__(self, total, first_step, unit, stream=None, enabled=True):
        self.total, self.first, self.unit = total, first_step, unit
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every = max(1, total // 20)
        self.start = time.perf_counter()
        self.paused_for = 0.0  # time spent evaluating, left out of the rate and the ETA
        self.tokens = 0
        self.drawn = False

    def elapsed(self):
        return time.perf_counter() - self.start - self.paused_for

    def rate(self):
        return self.tokens / max(self.elapsed(), 1e-9)

    @contextlib.contextmanager
    def paused(self):
        """Leave the time of the block (validation, saving) out of the throughput."""
        self.clear()
        began = time.perf_counter()
        try:
            yield
        finally:
            self.paused_for += time.perf_counter() - began

    def update(self, step, loss, tokens):
        """After finishing step number `step` (1-based) with loss `loss`."""
        self.tokens += tokens
        if not self.enabled:
            return
        if not self.tty and step % self.every and step != self.total:
            return
        per_step = self.elapsed() / max(step - self.first, 1)
        eta = per_step * (self.total - step)
        width = 24
        filled = int(width * step / self.total)
        bar = "#" * filled + "-" * (width - filled)
        line = (f"step {step}/{self.total} [{bar}] loss {loss:.4f} | "
                f"{self.rate() / 1000:.1f}k {self.unit}/s | ETA {_duration(eta)}")
        if self.tty:
            self.stream.write("\r" + line + "\033[K")
            self.drawn = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def clear(self):
        """End the redrawn line before other output."""
        if self.tty and self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def _duration(seconds):
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


@contextlib.contextmanager
def deferred_interrupt():
    """Within the block, a first Ctrl-C only raises a flag (checked between steps); a second
    one interrupts at once.  Yields a function telling whether Ctrl-C was pressed."""
    pressed = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def handler(signum, frame):
        if pressed:
            raise KeyboardInterrupt
        pressed.append(True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(pressed)
    finally:
        signal.signal(signal.SIGINT, previous)


# ---------------------------------------------------------------------------- the trainer
@dataclass
class TrainResult:
    status: str          # "done" | "interrupted" | "diverged" | "stopped" (on_evaluate asked to stop)
    step: int            # steps completed
    val_loss: float      # nats per token at the last evaluation (nan if none)
    checkpoint: str      # path of the last checkpoint written (None if none)
    message: str         # one line for the user


class LMTrainer:
    """Owns the model, optimiser, data and run directory of one language-model run."""

    def __init__(self, config, vocab, train_ids, val_ids, data_info=None):
        from . import optim

        self.config = config
        self.vocab = vocab
        self.train_ids = np.asarray(train_ids, dtype=np.int64)
        self.val_ids = np.asarray(val_ids, dtype=np.int64)
        self.data_info = data_info or {}
        self.batches = StreamBatches(self.train_ids, config.batch_size, config.seq_len)
        tgs_random.manual_seed(config.seed)
        self.model_config = LMConfig(model=config.model, vocab_size=len(vocab), embed=config.embed,
                                     hidden=config.hidden, layers=config.layers, dropout=config.dropout,
                                     heads=config.heads, block_size=config.seq_len)
        self.model = build_lm(self.model_config).to(config.device)
        self.params = list(self.model.parameters())
        self.optimizer = optim.Adam(self.params, lr=config.lr)
        self.step = 0
        self.carry = None
        self.last_val = float("nan")
        self.saved_step = None
        self.history = []  # (step, train loss) and (step, None, val loss) for the plot

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_texts(cls, config, train_text, val_text, data_info=None):
        """Build the vocabulary from the texts and start a fresh run."""
        if config.level == "char":
            vocab = CharVocab.from_text(train_text + val_text)
        else:
            vocab = WordVocab.from_text(train_text, min_count=config.min_count, max_size=config.max_vocab)
        info = dict(data_info or {})
        info.update(train=fingerprint(train_text), val=fingerprint(val_text))
        return cls(config, vocab, vocab.encode(train_text), vocab.encode(val_text), info)

    @classmethod
    def from_checkpoint(cls, state, train_text, val_text, steps=None, eval_every=None, out=None,
                        backend=None, device=None):
        """Continue a run from its checkpoint; the texts must be the ones it was trained on.
        `steps` (the new total) and the other keywords may change; nothing else can."""
        if state.get("kind") not in KINDS.values() or "train" not in state:
            raise CheckpointError(f"this checkpoint holds a {state.get('kind')!r} model, not a language-model run")
        saved = dict(state["train"]["config"])
        for key, value in (("steps", steps), ("eval_every", eval_every), ("out", out), ("backend", backend),
                           ("device", device)):
            if value is not None:
                saved[key] = value
        config = TrainConfig.from_dict(saved)
        info = state["train"].get("data", {})
        for name, text in (("train", train_text), ("val", val_text)):
            if name in info and info[name] != fingerprint(text):
                raise CheckpointError(f"the {'training' if name == 'train' else 'validation'} text differs from "
                                      "the one this run was trained on; give the same corpus (and --val) to resume")
        vocab = vocab_from_dict(state["vocab"])
        trainer = cls(config, vocab, vocab.encode(train_text), vocab.encode(val_text), info)
        trainer.model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["train"]["optimizer"])
        tgs_random.set_state(state["train"]["rng"])
        trainer.step = int(state["train"]["step"])
        trainer.carry = state_from_arrays(state["train"]["carry"])
        if trainer.carry is not None and config.device != "cpu":
            trainer.carry = _to_device(trainer.carry, config.device)
        trainer.last_val = float(state["train"].get("val_loss", float("nan")))
        trainer.saved_step = trainer.step
        trainer.history = [tuple(h) for h in state["train"].get("history", [])]
        return trainer

    # ------------------------------------------------------------------ paths
    @property
    def checkpoint_path(self):
        return os.path.join(self.config.out, DEFAULT_NAME)

    @property
    def metrics_path(self):
        return os.path.join(self.config.out, "metrics.jsonl")

    # ------------------------------------------------------------------ one step
    def train_step(self):
        """One optimisation step on the next chunk.  Returns the loss, or raises FloatingPointError
        (before any weight changes) when the loss or the gradient is not finite."""
        from .nn import functional as F
        from .nn.utils import clip_grad_norm_

        x, y, first = self.batches(self.step)
        if first:
            self.carry = None
        device = self.config.device
        # overflow shows up as a non-finite loss or gradient, which is reported below in one
        # line, so NumPy's own warnings about it would only be noise
        with np.errstate(over="ignore", invalid="ignore"):
            logits, state = self.model(Tensor(x, device=device), self.carry if self.model.carries_state else None)
            V = logits.shape[-1]
            loss = F.cross_entropy(logits.reshape(-1, V), Tensor(y.reshape(-1), device=device))
            value = float(loss.item())
            if not math.isfinite(value):
                raise FloatingPointError(f"loss became {value}")
            self.optimizer.zero_grad()
            loss.backward()
            # the norm is wanted even without clipping (max_norm = inf): an infinite gradient
            # would otherwise turn the weights into NaN one step before the loss shows it
            norm = float(clip_grad_norm_(self.params, self.config.clip if self.config.clip > 0 else math.inf))
            if not math.isfinite(norm):
                raise FloatingPointError(f"the gradient norm became {norm}")
            self.optimizer.step()
        self.carry = detach_state(state) if self.model.carries_state else None
        self.step += 1
        return value

    # ------------------------------------------------------------------ evaluation and samples
    def evaluate(self, max_tokens=None):
        """Validation loss in nats per token (no dropout, no graph)."""
        limit = self.config.val_max_tokens if max_tokens is None else max_tokens
        if self.val_ids.size < 2:
            return float("nan")
        with use_backend(self.config.backend):
            # no graph is kept, so many more streams than in training cost little
            nats, count = evaluate_stream(self.model, self.val_ids, batch_size=max(self.config.batch_size, 64),
                                          seq_len=self.config.seq_len, max_tokens=limit)
        return nats / count

    def sample(self, length=None, prime="", temperature=0.8, seed=None):
        """A sample from the model; its own random generator leaves training's untouched."""
        rng = np.random.default_rng(self.config.seed + self.step if seed is None else seed)
        with use_backend(self.config.backend):
            return generate(self.model, self.vocab, prime, length or self.config.sample_length,
                            temperature=temperature, rng=rng)

    # ------------------------------------------------------------------ saving
    def checkpoint_state(self):
        return {
            "kind": KINDS[self.config.level],
            "model_config": self.model_config.to_dict(),
            "vocab": self.vocab.to_dict(),
            "model": {k: v.numpy() for k, v in self.model.state_dict().items()},
            "train": {
                "config": self.config.to_dict(),
                "step": self.step,
                "optimizer": self.optimizer.state_dict(),
                "rng": tgs_random.get_state(),
                "carry": state_to_arrays(self.carry),
                "val_loss": self.last_val,
                "data": self.data_info,
                "history": [list(h) for h in self.history],
            },
        }

    def save(self):
        path = save_checkpoint(self.checkpoint_path, self.checkpoint_state())
        self.saved_step = self.step
        return path

    def _log(self, record):
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def _start_metrics(self):
        """A fresh run starts metrics.jsonl; a resumed one keeps the lines up to its step."""
        os.makedirs(self.config.out, exist_ok=True)
        kept = []
        if self.step and os.path.exists(self.metrics_path):
            with open(self.metrics_path) as f:
                for line in f:
                    try:
                        if json.loads(line).get("step", 0) <= self.step:
                            kept.append(line)
                    except ValueError:
                        continue
        with open(self.metrics_path, "w") as f:
            f.writelines(kept)

    def plot(self):
        """loss.png beside metrics.jsonl (training loss and validation loss against step);
        silently skipped without matplotlib."""
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError:
            return None
        train = [(h[0], h[1]) for h in self.history if h[1] is not None]
        val = [(h[0], h[2]) for h in self.history if len(h) > 2 and h[2] is not None]
        if not train and not val:
            return None
        fig = Figure(figsize=(6, 4))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        if train:
            ax.plot(*zip(*train), label="train", linewidth=1)
        if val:
            ax.plot(*zip(*val), "o-", label="validation")
        ax.set_xlabel("step")
        ax.set_ylabel(f"loss (nats per {self.config.unit[:-1]})")
        ax.set_title(f"{self.config.model.upper()} language model")
        ax.grid(alpha=0.3)
        ax.legend()
        path = os.path.join(self.config.out, "loss.png")
        fig.savefig(path, dpi=100)
        return path

    # ------------------------------------------------------------------ the loop
    def _evaluate_and_report(self, echo, show_sample):
        """Validate, log and print; raises FloatingPointError (nothing saved) on a non-finite loss."""
        with np.errstate(over="ignore", invalid="ignore"):
            val = self.evaluate()
        if self.val_ids.size >= 2 and not math.isfinite(val):
            raise FloatingPointError(f"the validation loss became {val}")
        self.last_val = val
        self.history.append((self.step, None, val))
        self._log({"step": self.step, "val_loss": val, f"val_bits_per_{self.config.unit[:-1]}": val / LN2})
        echo(f"step {self.step}: validation loss {val:.4f} nats/{self.config.unit[:-1]} "
             f"({val / LN2:.3f} bits/{self.config.unit[:-1]})")
        if show_sample:
            echo("--- sample ---\n" + self.sample() + "\n--------------")

    def train(self, echo=print, progress=True, show_samples=True, on_evaluate=None):
        """Run until config.steps.  Returns a TrainResult; never raises for Ctrl-C or divergence.
        `on_evaluate(trainer, step, metrics)` runs after each validation (and checkpoint); a true
        return stops the run there with status "stopped" (the tuner's pruning)."""
        cfg = self.config
        self._start_metrics()
        if self.step >= cfg.steps:
            return TrainResult("done", self.step, self.last_val, self.checkpoint_path if self.saved_step is not None else None,
                               f"the run is already at step {self.step} of {cfg.steps}; raise --steps to train further")
        bar = Progress(cfg.steps, self.step, cfg.unit, enabled=progress)

        def say(text):
            bar.clear()
            echo(text)

        tokens_per_step = self.batches.batch_size * cfg.seq_len
        status, message = "done", ""
        log_every = max(1, min(cfg.eval_every, cfg.steps) // 10)
        with use_backend(cfg.backend), deferred_interrupt() as interrupted:
            while self.step < cfg.steps:
                if interrupted():
                    status = "interrupted"
                    break
                failing_step = self.step + 1  # the step a NaN would be reported at, in training or validation
                try:
                    loss = self.train_step()
                    bar.update(self.step, loss, tokens_per_step)
                    if self.step % log_every == 0 or self.step == cfg.steps:
                        self.history.append((self.step, loss))
                        self._log({"step": self.step, "loss": loss, f"{cfg.unit}_per_s": round(bar.rate(), 1),
                                   "time": round(bar.elapsed(), 3)})
                    if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                        with bar.paused():
                            self._evaluate_and_report(say, show_samples)
                            self.save()
                            self.plot()
                        # tune hook (issue 18): report the validation metric; True stops the run early
                        if on_evaluate is not None and on_evaluate(self, self.step, {"val_loss": self.last_val}):
                            status = "stopped"
                            break
                except FloatingPointError as exc:
                    status = "diverged"
                    self._log({"step": failing_step, "event": "diverged", "reason": str(exc)})
                    kept = (f"the last good checkpoint (step {self.saved_step}) is kept in {self.checkpoint_path}"
                            if self.saved_step is not None else "no checkpoint had been written yet")
                    message = (f"{exc} at step {failing_step}; training stopped and {kept}. "
                               "Try a lower --lr or a --clip value.")
                    break
        bar.clear()
        if status == "interrupted":
            self.save()
            self.plot()
            message = (f"interrupted at step {self.step}; checkpoint saved in {self.checkpoint_path} "
                       f"(continue with --resume --out {cfg.out})")
        elif status == "stopped":
            message = f"stopped early at step {self.step}; checkpoint in {self.checkpoint_path}"
        elif status == "done":
            message = f"done: {self.step} steps, validation loss {self.last_val:.4f}; checkpoint in {self.checkpoint_path}"
        return TrainResult(status, self.step, self.last_val,
                           self.checkpoint_path if self.saved_step is not None else None, message)


# ---------------------------------------------------------------------------- loading for sample / eval
def load_lm(state):
    """(model in eval mode, vocabulary) from a language-model checkpoint's state."""
    model = build_lm(LMConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    return model.eval(), vocab_from_dict(state["vocab"])


def evaluate_text(state, text, batch_size=16, seq_len=128):
    """Loss of a language-model checkpoint on `text`: a dict with nats_per_char, bits_per_char,
    chars (and for word models nats_per_word, perplexity, words)."""
    model, vocab = load_lm(state)
    ids = vocab.encode(text)
    nats, count = evaluate_stream(model, ids, batch_size=batch_size, seq_len=seq_len)
    if vocab.type == "word":
        chars = len(text)
        return {"nats_per_char": nats / chars, "bits_per_char": nats / chars / LN2, "chars": chars,
                "nats_per_word": nats / count, "bits_per_word": nats / count / LN2,
                "perplexity": math.exp(nats / count), "words": count}
    return {"nats_per_char": nats / count, "bits_per_char": nats / count / LN2, "chars": count,
            "perplexity": math.exp(nats / count)}


# ---------------------------------------------------------------------------- helpers
def _to_device(state, device):
    if isinstance(state, tuple):
        return tuple(_to_device(s, device) for s in state)
    return state.to(device)
