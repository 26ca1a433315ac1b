"""The one training loop behind every `tgs train` kind (charlm, wordlm, cnn, mlp, seq2seq, tagger).

A kind subclasses `Trainer` and supplies a model, an optimiser, a batch source and an
evaluation; the loop owns everything that makes a run safe to start, stop and continue:

- the run directory and its lock (`RunLock`: a `.lock` file holding the owner's pid and host;
  a lock left by a dead process on this host is stale and removed; a second live run is
  refused), and the removal of `.tmp-*.npz` files a killed save left behind;
- a fresh run never replaces a checkpoint unless told to (`overwrite=True`);
- atomic checkpoints (config, weights, optimiser and RNG state, step, history) at every
  evaluation and when stopped, so that resuming is bit-for-bit;
- SIGINT and SIGTERM: finish the current step, save, and return status "interrupted" /
  "terminated" (exit codes 130 / 143 through `exit_code`); a second signal stops at once,
  leaving the last checkpoint;
- the NaN/inf guard on the loss, on the gradient norm and on the weights after each update:
  a run that diverges stops with status "diverged" and the last checkpoint stays the last
  GOOD one (non-finite weights are never saved);
- metrics.jsonl (one JSON object a line: training loss and throughput, validation metrics,
  events such as a settings change or divergence), loss.png and the kind's own plots;
- the progress line, and changes of settings on resume (`change_settings`).

A kind implements (LMTrainer in training.py, ClassifierTrainer in classifier_training.py,
Seq2SeqTrainer in models/seq2seq.py, TaggerTrainer in models/tagger.py):

    kind                      the checkpoint's "kind"
    metric, higher_is_better  the validation number callbacks and "best" follow ("val_loss")
    unit, units_per_step      for the throughput shown
    batches                   a batch source: batches(step) -> batch, a function of the step only
                              (a distributed run gives each rank its own source)
    compute_loss(batch)       -> scalar loss Tensor (the model is in training mode)
    after_step(batch)         optional: e.g. carry a recurrent state to the next step
    validate()                -> dict of numbers holding `metric` (the model is in eval mode),
                              or None when there is no validation data
    report(metrics)           -> the line printed after an evaluation
    checkpoint_extra()        -> what else the checkpoint holds (model config, vocabulary, ...)
    restore_extra(state)      optional: read it back on resume
    extra_plots()             optional: draw the kind's own pictures into the run directory

Extension points:

- callbacks: `Trainer(..., callbacks=[cb])`; after every evaluation the loop calls
  `cb.on_evaluate(trainer, step, metrics)` (a plain function `cb(trainer, step, metrics)`
  works too).  Returning True, or raising `PruneRun`, stops the run with status "pruned"
  (the checkpoint of that evaluation is kept).  This is the one place a tuner (Optuna)
  reads the validation metric and prunes a trial.
- data parallelism: `reduce_gradients(params)` runs after backward and before the norm,
  clipping and optimiser step.  `is_main_process=False` silences every file and console output
  of the rank (no lock, checkpoint, metrics, plots, progress or report), so only rank 0 writes.
  Each rank still runs the NaN guard on its (identical, after averaging) gradients and weights.
  Under MPI (`tinygrad_seq.distributed` initialised with N > 1 ranks) both default to the data-
  parallel choice: reduce_gradients averages the gradients over the ranks in a few bucketed
  allreduces (nn.parallel.DistributedDataParallel, which also gives every rank rank 0's initial
  weights) and is_main_process is rank 0.  The ranks also agree, every step, on the loss (the
  mean over ranks of what compute_loss returned: a kind whose ranks hold unequal shares of the
  batch scales its loss so that this mean is the global batch's loss), on a signal received by
  any of them, and on the validation metrics (computed by rank 0), so that all stop together;
  dropout draws from a generator seeded by (seed, step, rank).  A kind gives each rank its own
  shard of the batch (`batches`; `rank_share` cuts each batch of a one-process source) and
  weighs unequal shards' losses with `share_weighted`.  With one process nothing of this runs.
- settings that do not change the model's shape can change when a run is resumed
  (`change_settings(lr=..., clip=..., dropout=..., eval_every=..., steps=...)`); the change is
  recorded in metrics.jsonl.  Shape-defining settings are fixed by the checkpoint.
"""
import contextlib
import json
import math
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from . import distributed as dist
from . import random as tgs_random
from .backend import backend as use_backend
from .checkpoint import (DEFAULT_NAME, check_module_state, check_optimizer_state, check_step,
                         malformed_as_checkpoint_error, remove_stale_temporaries, save_checkpoint)
from .config import check_dropout

EXIT_CODES = {"done": 0, "pruned": 0, "diverged": 1, "interrupted": 130, "terminated": 143}
CHANGEABLE = ("steps", "eval_every", "lr", "clip", "dropout", "backend", "device", "out")
LOCK_NAME = ".lock"


def check_rates(lr, clip, dropout):
    """ValueError (one line naming the option) unless lr > 0, clip >= 0 and 0 <= dropout < 1, all finite."""
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number, got {lr}")
    if not (clip >= 0 and math.isfinite(clip)):
        raise ValueError(f"clip must be >= 0 (0 turns clipping off), got {clip}")
    check_dropout(dropout)


def exit_code(status):
    """The process exit code of a run that ended with `status`."""
    return EXIT_CODES[status]


class RunDirectoryError(ValueError):
    """A run directory that cannot be used (held by another run, or holding a checkpoint)."""


class PruneRun(Exception):
    """Raised by a callback to stop the run early with status "pruned"."""


# ---------------------------------------------------------------------------- the run directory lock
def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class RunLock:
    """`out/.lock`, created exclusively, holding {"pid", "host", "started"} of the run using `out`.

    A lock whose process is gone (same host, pid not alive) or that is unreadable is stale and
    replaced; a live one, or one from another host, refuses with RunDirectoryError."""

    def __init__(self, folder):
        self.folder = os.fspath(folder)
        self.path = os.path.join(self.folder, LOCK_NAME)
        self.held = False
        self.replaced_stale = None

    def acquire(self):
        os.makedirs(self.folder, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        for _ in range(3):
            try:
                self._publish(me)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and owner.get("pid") == me["pid"] and owner.get("host") == me["host"]:
                    raise RunDirectoryError(f"{self.folder} is already in use by this process")
                if owner is not None and not self._stale(owner):
                    raise RunDirectoryError(
                        f"{self.folder} is in use by another run (pid {owner.get('pid')} on host {owner.get('host')}); "
                        f"wait for it, choose another --out, or delete {self.path} if that run is gone")
                self.replaced_stale = owner or {}
                self._remove_stale(owner)
                continue
            self.held = True
            return self
        raise RunDirectoryError(f"cannot take the lock {self.path}; delete it if no run uses {self.folder}")

    def _publish(self, owner):
        """Create the lock holding `owner`, or raise FileExistsError.  The lock appears whole: it
        is written to a file of this process's own and hard-linked into place, because a run
        starting at the same moment that read a lock created but not yet written would find it
        unreadable, take it for stale and replace it.  Where the file system has no hard links:
        exclusive creation, then the write (that moment of an empty lock remains)."""
        private = self._private_name()
        with open(private, "w") as f:
            json.dump(owner, f)
        try:
            os.link(private, self.path)
        except FileExistsError:
            raise
        except OSError:   # EPERM, ENOTSUP...: no hard links on this file system
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            with os.fdopen(fd, "w") as f:
                json.dump(owner, f)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(private)

    def _remove_stale(self, judged):
        """Remove the lock judged stale from `judged` (what it held then; None: unreadable) unless
        another run has replaced it since: two runs that both found the same stale lock would
        otherwise each delete it, the second deleting the first's new lock.  It is renamed aside
        first, which only one of them can do, and linked back if it is no longer the one judged."""
        aside = self._private_name() + ".stale"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return          # another run removed it first
        if self._read(aside) == judged:
            os.unlink(aside)
            return
        try:
            os.link(aside, self.path)
        except FileExistsError:
            pass            # a third run linked its own in meanwhile (three runs on one stale lock)
        except OSError:     # no hard links on this file system
            if not os.path.exists(self.path):
                os.rename(aside, self.path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(aside)

    def _private_name(self):
        return f"{self.path}.{os.getpid()}.{threading.get_ident()}"

    def check_free(self):
        """Raise RunDirectoryError now if a live run holds the lock (without taking it): lets a
        command refuse before it prints or loads anything."""
        if os.path.exists(self.path):
            owner = self._owner()
            if owner is not None and not self._stale(owner) and owner.get("pid") != os.getpid():
                raise RunDirectoryError(
                    f"{self.folder} is in use by another run (pid {owner.get('pid')} on host {owner.get('host')}); "
                    f"wait for it, choose another --out, or delete {self.path} if that run is gone")

    def _owner(self):
        return self._read(self.path)

    @staticmethod
    def _read(path):
        try:
            with open(path) as f:
                owner = json.load(f)
            return owner if isinstance(owner, dict) else None
        except (OSError, ValueError):
            return None

    @staticmethod
    def _stale(owner):
        pid = owner.get("pid")
        if owner.get("host") != socket.gethostname():
            return False  # cannot look at another machine's processes
        return not (isinstance(pid, int) and pid > 0 and _alive(pid))

    def release(self):
        if self.held:
            owner = self._owner()
            if owner is None or owner.get("pid") == os.getpid():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
            self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


@contextlib.contextmanager
def run_directory(folder, may_replace_checkpoint=True):
    """Hold `folder`'s lock for the block, after removing stale temporaries; with
    may_replace_checkpoint=False an existing checkpoint refuses (checked under the lock, so two
    runs started at once cannot both pass)."""
    with RunLock(folder) as lock:
        remove_stale_temporaries(folder)
        if not may_replace_checkpoint and os.path.exists(os.path.join(folder, DEFAULT_NAME)):
            raise RunDirectoryError(f"{folder} already holds a checkpoint; pass --resume to continue it, "
                                    "--overwrite to replace it, or choose another --out")
        yield lock


# ---------------------------------------------------------------------------- signals
@contextlib.contextmanager
def deferred_signals():
    """Within the block, a first SIGINT or SIGTERM only records itself (checked between steps);
    a second one interrupts at once (KeyboardInterrupt, or SystemExit(143) for SIGTERM).
    Yields a function returning the signal number received, or None."""
    received = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return

    def handler(signum, frame):
        if received:
            if signum == signal.SIGTERM:
                raise SystemExit(EXIT_CODES["terminated"])
            raise KeyboardInterrupt
        received.append(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: received[0] if received else None
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# ---------------------------------------------------------------------------- progress
class Progress:
    """One status line: step, loss, throughput and ETA.  On a terminal it redraws in place;
    otherwise (a log file, a test) it prints a line about every `total/20` steps."""

    def __init__(self, total, first_step, unit, stream=None, enabled=True):
        import sys

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


# ---------------------------------------------------------------------------- numbers
def finite_or_none(value):
    """A number for JSON: itself when finite, "inf"/"-inf" when infinite, None when NaN."""
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    return value


def json_safe(tree):
    """`tree` with every float made JSON-valid by finite_or_none (nested dicts and lists)."""
    if isinstance(tree, dict):
        return {k: json_safe(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [json_safe(v) for v in tree]
    if isinstance(tree, np.integer):
        return int(tree)
    return finite_or_none(tree)


def safe_exp(x):
    """exp(x), inf instead of OverflowError (a perplexity past e^709)."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


# ---------------------------------------------------------------------------- data-parallel shares
def rank_share(batches, batch_size):
    """A batch source giving this process its share of each of `batches`' batches (a list of
    examples, or a tuple of parallel lists): (examples [n r / N, n (r+1) / N) of the batch of
    n, the whole batch) for rank r of N under MPI; (the batch, the batch) in one process."""
    rank, world = dist.get_rank(), dist.get_world_size()
    if batch_size < world:
        raise ValueError(f"--batch-size {batch_size} is smaller than the {world} ranks; give every rank at "
                         "least one example")

    def share(step):
        batch = batches(step)
        n = len(batch[0]) if isinstance(batch, tuple) else len(batch)
        rows = slice(n * rank // world, n * (rank + 1) // world)
        return (tuple(part[rows] for part in batch) if isinstance(batch, tuple) else batch[rows]), batch
    return share


def share_weighted(loss, units, total_units, world_size):
    """The loss of this rank's share of a batch, a mean over its `units` (examples, rows or target
    tokens), scaled by units N / total_units so that the mean over the N ranks (what the Trainer
    averages, losses and gradients alike) is the whole batch's mean over its `total_units`,
    however unequally the units fell among the ranks."""
    return loss if units * world_size == total_units else loss * (units * world_size / total_units)


def zero_loss(params):
    """A zero loss on `params`, for a rank whose share of a batch is empty (it still joins the
    gradient average, adding nothing)."""
    return sum((p * 0).sum() for p in params)


# ---------------------------------------------------------------------------- the loop
def _averaging(ddp):
    """reduce_gradients through a DistributedDataParallel wrapper (bucketed allreduces)."""
    def reduce_gradients(params):
        ddp.reduce_gradients()
    return reduce_gradients


@dataclass
class TrainResult:
    status: str          # "done" | "interrupted" | "terminated" | "diverged" | "pruned"
    step: int            # steps completed
    val_loss: float      # the validation metric at the last evaluation (nan if none)
    checkpoint: str      # path of the last checkpoint written (None if none)
    message: str         # one line for the user
    metrics: dict = field(default_factory=dict)  # everything the last evaluation returned

    @property
    def exit_code(self):
        return exit_code(self.status)


class Trainer:
    """The loop (see the module docstring for what a kind supplies and the extension points)."""

    kind = None
    metric = "val_loss"
    higher_is_better = False
    unit = "examples"
    units_per_step = 1
    keep_best = False           # True: the checkpoint's "model" is the best evaluation's weights
    log_every_evaluations = 10  # training-loss lines in metrics.jsonl per evaluation interval

    def __init__(self, config, model, optimizer, batches, callbacks=(), reduce_gradients=None,
                 is_main_process=None, overwrite=False):
        self.config = config
        self.model = model
        self.params = list(model.parameters())
        self.optimizer = optimizer
        self.batches = batches
        self.callbacks = list(callbacks)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.ddp = None
        if reduce_gradients is None and self.world_size > 1:
            from .nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(model)  # broadcasts rank 0's weights
            reduce_gradients = _averaging(self.ddp)
        self.reduce_gradients = reduce_gradients or (lambda params: None)
        self.is_main_process = self.rank == 0 if is_main_process is None else is_main_process
        self.overwrite = overwrite
        self.step = 0
        self.last_metrics = {}
        self.last_val = float("nan")
        self.saved_step = None
        self.best = None                 # {"step", "value", "model"} when keep_best
        self.history = []                # (step, train loss) and (step, None, validation metric)
        self.pending_changes = {}        # settings changed on resume, logged when the run starts

    # ------------------------------------------------------------------ what a kind supplies
    def compute_loss(self, batch):
        raise NotImplementedError

    def after_step(self, batch):
        pass

    def validate(self):
        raise NotImplementedError

    def report(self, metrics):
        value = metrics.get(self.metric, float("nan"))
        return f"step {self.step}: {self.metric.replace('_', ' ')} {value:.4f}"

    def checkpoint_extra(self):
        return {}

    def restore_extra(self, state):
        pass

    def extra_plots(self):
        pass

    # ------------------------------------------------------------------ paths
    @property
    def out(self):
        return getattr(self.config, "out", None)

    @property
    def checkpoint_path(self):
        return os.path.join(self.out, DEFAULT_NAME) if self.out else None

    @property
    def metrics_path(self):
        return os.path.join(self.out, "metrics.jsonl")

    @property
    def writes_files(self):
        return bool(self.out) and self.is_main_process

    # ------------------------------------------------------------------ one step
    def weights_finite(self):
        for p in self.params:
            with np.errstate(over="ignore", invalid="ignore"):
                if not math.isfinite(float(p.data.sum(dtype=np.float64))):
                    return False
        return True

    def train_step(self):
        """One optimisation step on batches(step).  Returns the loss; raises FloatingPointError
        when the loss, the gradient norm or (after the update) a weight is not finite."""
        from .nn.utils import clip_grad_norm_

        batch = self.batches(self.step)
        self.model.train()
        if self.world_size > 1:
            # each rank its own dropout masks, a function of (seed, step, rank) alone, so that a run
            # resumed on as many ranks draws the same ones
            seed = getattr(self.config, "seed", 0)
            tgs_random.manual_seed(int(np.random.SeedSequence([seed, self.step, self.rank]).generate_state(1)[0]))
        # a diverging run's overflow is caught just below; NumPy's own warnings would only be noise
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            loss = self.compute_loss(batch)
            value = float(loss.item())
            if self.world_size > 1:  # the global batch's loss: every rank stops on the same step
                value = float(dist.all_reduce(np.array([value]), op=dist.ReduceOp.AVG)[0])
            if not math.isfinite(value):
                raise FloatingPointError(f"the loss became {value}")
            self.optimizer.zero_grad()
            if self.ddp is not None:
                self.ddp.prepare_for_backward()  # overlap: buckets reduced during the backward
            loss.backward()
            self.reduce_gradients(self.params)
            # the norm is wanted even without clipping (max_norm = inf): an infinite gradient
            # would otherwise turn the weights into NaN one step before the loss shows it
            clip = getattr(self.config, "clip", 0) or 0
            norm = float(clip_grad_norm_(self.params, clip if clip > 0 else math.inf))
            if not math.isfinite(norm):
                raise FloatingPointError(f"the gradient norm became {norm}")
            self.optimizer.step()
            if not self.weights_finite():
                raise FloatingPointError("the weights became nan or inf after the update (an overflow)")
        self.after_step(batch)
        self.step += 1
        return value

    # ------------------------------------------------------------------ settings
    def change_settings(self, **changes):
        """Change settings that leave the model's shape alone (CHANGEABLE) for the rest of the
        run; lr, dropout and clip take effect at once.  Recorded in metrics.jsonl."""
        for name, value in changes.items():
            if name not in CHANGEABLE:
                raise ValueError(f"{name.replace('_', '-')} cannot change in a resumed run: it is fixed by the "
                                 "checkpoint (start a new run with another --out)")
            old = getattr(self.config, name)
            if value == old:
                continue
            setattr(self.config, name, value)
            if name == "lr":
                for group in self.optimizer.param_groups:
                    group["lr"] = value
                    if "initial_lr" in group:
                        group["initial_lr"] = value
            if name == "dropout":
                from .nn.layers import Dropout
                for module in self.model.modules():
                    if isinstance(module, Dropout):
                        module.p = value
            if name not in ("out", "backend", "device"):
                self.pending_changes[name] = [old, value]
        if hasattr(self.config, "__post_init__"):
            self.config.__post_init__()  # the new values obey the same rules

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self):
        weights = {k: v.numpy() for k, v in self.model.state_dict().items()}
        train = {"config": self.config.to_dict(), "step": self.step, "optimizer": self.optimizer.state_dict(),
                 "rng": tgs_random.get_state(), "val_loss": self.last_val, "metrics": json_safe(self.last_metrics),
                 "history": [list(h) for h in self.history]}
        state = {"kind": self.kind, "model": weights}
        if self.keep_best and self.best is not None:
            state["model"] = self.best["model"]
            train["model"] = weights
            train["best"] = {"step": self.best["step"], "value": self.best["value"]}
        extra = self.checkpoint_extra()
        train.update(extra.pop("train", {}))
        state.update(extra)
        state["train"] = train
        return state

    def save(self):
        """Rank 0 writes the checkpoint (atomically).  Under MPI every rank calls this and, once
        it is written, tells its death watcher where the last intact checkpoint is."""
        path = None
        if self.writes_files:
            path = save_checkpoint(self.checkpoint_path, self.checkpoint_state())
            self.saved_step = self.step
        if self.world_size > 1 and self.out:
            dist.barrier()
            dist.set_failure_note(f"The last checkpoint (step {self.step}) in {self.checkpoint_path} is intact; "
                                  f"continue with --resume --out {self.out}.")
            self.saved_step = self.step
            path = self.checkpoint_path
        return path

    def restore(self, state, path="checkpoint"):
        """Continue from a checkpoint's state (after checking every array against this model)."""
        with malformed_as_checkpoint_error(path):
            train = state["train"]
            current = train["model"] if self.keep_best and "model" in train else state["model"]
            check_module_state(self.model, current, path)
            check_optimizer_state(train["optimizer"], self.params, path)
            step = check_step(train["step"], path)
            self.model.load_state_dict(current)
            self.optimizer.load_state_dict(train["optimizer"])
            tgs_random.set_state(train["rng"])
            self.step = step
            value = train.get("val_loss")
            self.last_val = float("nan") if value is None else float(value)
            self.last_metrics = dict(train.get("metrics") or {})
            self.history = [tuple(h) for h in train.get("history", [])]
            if self.keep_best and "best" in train:
                check_module_state(self.model, state["model"], path)
                self.best = {"step": int(train["best"]["step"]), "value": float(train["best"]["value"]),
                             "model": state["model"]}
            self.restore_extra(state)
        self.saved_step = self.step
        return self

    # ------------------------------------------------------------------ metrics and plots
    def log(self, record):
        if self.writes_files:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(json_safe(record), allow_nan=False) + "\n")

    def _start_metrics(self):
        """A fresh run starts metrics.jsonl; a resumed one keeps the lines up to its step."""
        kept = []
        if self.step and os.path.exists(self.metrics_path):
            with open(self.metrics_path) as f:
                for line in f:
                    try:
                        if json.loads(line).get("step", 0) <= self.step:
                            kept.append(line)
                    except (ValueError, AttributeError):
                        continue
        with open(self.metrics_path, "w") as f:
            f.writelines(kept)

    def plot(self):
        """loss.png beside metrics.jsonl (training loss, and the validation metric on its own
        axis when it is not a loss); skipped without matplotlib.  Then the kind's own plots."""
        if not self.writes_files:
            return None
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError:
            return None
        train = [(h[0], h[1]) for h in self.history if h[1] is not None]
        val = [(h[0], h[2]) for h in self.history if len(h) > 2 and h[2] is not None and math.isfinite(h[2])]
        path = None
        if train or val:
            fig = Figure(figsize=(6, 4))
            FigureCanvasAgg(fig)
            ax = fig.add_subplot(1, 1, 1)
            if train:
                ax.plot(*zip(*train), label="train loss", linewidth=1)
            if val:
                target = ax if "loss" in self.metric else ax.twinx()
                target.plot(*zip(*val), "o-", color="C1", label=self.metric.replace("_", " "))
                target.set_ylabel(self.metric.replace("_", " "))
                if target is not ax:
                    target.legend(loc="center right")
            ax.set_xlabel("step")
            ax.set_ylabel("loss")
            ax.set_title(f"{self.kind} training")
            ax.grid(alpha=0.3)
            ax.legend(loc="upper right")
            path = os.path.join(self.out, "loss.png")
            fig.savefig(path, dpi=100)
        self.extra_plots()
        return path

    # ------------------------------------------------------------------ evaluation
    def _improved(self, value):
        if self.best is None:
            return True
        return value >= self.best["value"] if self.higher_is_better else value <= self.best["value"]

    def _evaluate_and_report(self, say):
        """Validate, log, print, keep the best weights, then ask the callbacks; raises
        FloatingPointError (nothing saved) on a non-finite metric, PruneRun when told to stop."""
        self.model.eval()
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                if self.world_size > 1:  # rank 0 validates; the others take its figures
                    shared = [self.validate() if self.rank == 0 else None]
                    dist.broadcast_object_list(shared, src=0)
                    metrics = shared[0]
                else:
                    metrics = self.validate()
        finally:
            self.model.train()
        if not metrics:  # a trainer without validation data: nothing to report
            return None
        value = float(metrics[self.metric])
        if not math.isfinite(value):
            raise FloatingPointError(f"the validation {self.metric.replace('_', ' ')} became {value}")
        self.last_val, self.last_metrics = value, metrics
        self.history.append((self.step, None, value))
        if self.keep_best and self._improved(value):
            self.best = {"step": self.step, "value": value,
                         "model": {k: v.numpy().copy() for k, v in self.model.state_dict().items()}}
        self.log(dict({"step": self.step}, **metrics))
        if self.is_main_process:
            say(self.report(metrics))
        return metrics

    def _signal_on_any_rank(self, received):
        """The signal any rank received (Ctrl-C reaches the ranks at different steps; SIGTERM
        wins over SIGINT), so that all stop after the same step."""
        if self.world_size == 1:
            return received
        agreed = int(dist.all_reduce(np.array([received or 0]), op=dist.ReduceOp.MAX)[0])
        return agreed or None

    def _ask_callbacks(self, metrics):
        if metrics is None:
            return
        for callback in self.callbacks:
            hook = getattr(callback, "on_evaluate", callback)
            if hook(self, self.step, metrics):
                raise PruneRun(f"stopped by {type(callback).__name__} at step {self.step}")

    # ------------------------------------------------------------------ the run
    def train(self, echo=print, progress=True):
        """Run until config.steps.  Returns a TrainResult; never raises for a signal or divergence
        (RunDirectoryError when the run directory is taken)."""
        if not self.writes_files:
            return self._loop(echo, progress)
        # a restored run continues its own checkpoint; a fresh one replaces one only when told to
        with run_directory(self.out, may_replace_checkpoint=self.overwrite or self.saved_step is not None) as lock:
            if lock.replaced_stale is not None and self.is_main_process:
                echo(f"note: removed a stale lock of pid {lock.replaced_stale.get('pid')} "
                     f"(that run is gone) from {self.out}")
            self._start_metrics()
            return self._loop(echo, progress)

    def _loop(self, echo, progress):
        cfg = self.config
        self._announce_changes(echo)
        if self.step >= cfg.steps:
            return TrainResult("done", self.step, self.last_val, self.checkpoint_path if self.saved_step is not None
                               else None, f"the run is already at step {self.step} of {cfg.steps}; raise --steps to "
                               "train further", self.last_metrics)
        bar = Progress(cfg.steps, self.step, self.unit, enabled=progress and self.is_main_process)
        status, message = "done", ""
        with use_backend(getattr(cfg, "backend", "auto")), deferred_signals() as signalled:
            while self.step < cfg.steps:
                received = self._signal_on_any_rank(signalled())
                if received is not None:
                    status = "terminated" if received == signal.SIGTERM else "interrupted"
                    break
                failing_step = self.step + 1  # where a NaN is reported, in training or validation
                try:
                    self._step_with_bookkeeping(bar, echo)
                except FloatingPointError as exc:
                    status = "diverged"
                    self.log({"step": failing_step, "event": "diverged", "reason": str(exc)})
                    kept = (f"the last good checkpoint (step {self.saved_step}) is kept in {self.checkpoint_path}"
                            if self.saved_step is not None else "no checkpoint had been written yet")
                    message = (f"{exc} at step {failing_step}; training stopped and {kept}. "
                               "Try a lower --lr or a --clip value.")
                    break
                except PruneRun as exc:
                    status = "pruned"
                    self.log({"step": self.step, "event": "pruned", "reason": str(exc)})
                    message = f"pruned at step {self.step}: {exc}"
                    break
            bar.clear()
            if status in ("interrupted", "terminated"):
                message = self._save_after_signal(status)
        if status == "done":
            where = f"; checkpoint in {self.checkpoint_path}" if self.writes_files else ""
            message = f"done: {self.step} steps, {self.metric.replace('_', ' ')} {self.last_val:.4f}{where}"
        return TrainResult(status, self.step, self.last_val,
                           self.checkpoint_path if self.saved_step is not None else None, message, self.last_metrics)

    def _announce_changes(self, echo):
        """Log (and print, on rank 0) the settings a resumed run changed, once."""
        if self.pending_changes:
            self.log({"step": self.step, "event": "settings", "changed": self.pending_changes})
            if self.is_main_process:
                echo("changed for the rest of the run: " + ", ".join(
                    f"{k.replace('_', '-')} {old} -> {new}" for k, (old, new) in self.pending_changes.items()))
            self.pending_changes = {}

    def _step_with_bookkeeping(self, bar, echo):
        """One training step and what follows it: the progress bar, a loss record every few
        steps, and at each evaluation step validation, checkpoint, plots and the callbacks
        (which may raise PruneRun)."""
        cfg = self.config

        def say(text):
            bar.clear()
            echo(text)

        log_every = max(1, min(cfg.eval_every, cfg.steps) // self.log_every_evaluations)
        loss = self.train_step()
        bar.update(self.step, loss, self.units_per_step)
        if self.step % log_every == 0 or self.step == cfg.steps:
            self.history.append((self.step, loss))
            self.log({"step": self.step, "loss": loss, f"{self.unit}_per_s": round(bar.rate(), 1),
                      "time": round(bar.elapsed(), 3)})
        if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
            with bar.paused():
                metrics = self._evaluate_and_report(say)
                self.save()
                self.plot()
                self._ask_callbacks(metrics)

    def _save_after_signal(self, status):
        """Checkpoint and plots of a run stopped by SIGINT/SIGTERM, and the message saying where they are."""
        self.save()
        self.plot()
        self.log({"step": self.step, "event": status})
        where = (f"checkpoint saved in {self.checkpoint_path} (continue with --resume --out {self.out})"
                 if self.writes_files else "nothing was saved")
        return f"{status} at step {self.step}; {where}"
