"""Small-dataset plumbing shared by the classifiers: the 8x8 handwritten digits shipped with the
package (no download), a deterministic train/dev/test split, mini-batches, early stopping, evaluation.

    X, y = load_digits()                               # (1797, 64) in [0, 1], labels 0..9
    splits = train_dev_test_split(X, y, seed=0)        # splits.train, .dev, .test: (X, y) pairs
    for xb, yb in minibatches(*splits.train, batch_size=64):   # Tensors, shuffled each call
        ...
    stopper = EarlyStopping(patience=5)
    if stopper.step(dev_loss, model): break            # keeps the best weights; stopper.restore(model)

The train set fits the weights, the dev (validation) set chooses hyperparameters and when to
stop, and the test set is looked at once, at the end, for an unbiased estimate.
"""
from __future__ import annotations

import os
from collections import namedtuple
from typing import Iterator, Optional, Tuple

import numpy as np

from ._typing import DTypeLike
from .device import to_device
from .random import generator
from .nn.module import Module
from .tensor import Tensor, no_grad

__all__ = ["load_digits", "train_dev_test_split", "Splits", "minibatches", "EarlyStopping", "evaluate_classifier",
           "stop_on_dev_loss", "early_stopped_scores"]

Splits = namedtuple("Splits", ["train", "dev", "test"])
DIGITS_FILE = os.path.join(os.path.dirname(__file__), "data", "digits.npz")


def load_digits(images: bool = False, dtype: DTypeLike = np.float32) -> Tuple[np.ndarray, np.ndarray]:
    """The 1,797 handwritten 8x8 digits scikit-learn bundles, shipped in the package as
    tinygrad_seq/data/digits.npz (nothing is downloaded, scikit-learn is not needed).

    They are the test set of the UCI "Optical Recognition of Handwritten Digits" data (E. Alpaydin,
    C. Kaynak, 1998; CC BY 4.0), the same arrays as `sklearn.datasets.load_digits()`.
    Returns (X, y): X of shape (N, 64), or (N, 1, 8, 8) with images=True (for a CNN), pixel
    intensities scaled from 0..16 to [0, 1]; y int64 labels 0..9."""
    with np.load(DIGITS_FILE) as stored:
        pixels, labels = stored["images"], stored["labels"]
    X = (pixels.reshape(len(pixels), 64) / 16.0).astype(dtype)
    if images:
        X = X.reshape(-1, 1, 8, 8)
    return X, labels.astype(np.int64)


def train_dev_test_split(X: np.ndarray, y: np.ndarray, dev_fraction: float = 0.15, test_fraction: float = 0.15,
                         seed: int = 0, stratify: bool = True) -> Splits:
    """Split (X, y) into train, dev and test parts (a `Splits` of (X, y) pairs), the same every
    time for the same `seed`.

    The split has its own generator, seeded here, rather than the engine's: the split must not
    change when something else (the weights, dropout) draws random numbers first.  With
    `stratify` every class is split in the same proportions."""
    X, y = np.asarray(X), np.asarray(y)
    if len(X) != len(y):
        raise ValueError(f"train_dev_test_split: {len(X)} examples but {len(y)} labels")
    if dev_fraction < 0 or test_fraction < 0 or dev_fraction + test_fraction >= 1:
        raise ValueError(f"train_dev_test_split: fractions dev={dev_fraction}, test={test_fraction} "
                         "must be >= 0 and leave something to train on")
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)] if stratify else [np.arange(len(y))]
    parts = ([], [], [])
    for members in groups:
        members = rng.permutation(members)
        n_test = int(round(len(members) * test_fraction))
        n_dev = int(round(len(members) * dev_fraction))
        parts[2].append(members[:n_test])
        parts[1].append(members[n_test:n_test + n_dev])
        parts[0].append(members[n_test + n_dev:])
    chosen = [rng.permutation(np.concatenate(p)) for p in parts]
    return Splits(*[(X[idx], y[idx]) for idx in chosen])


def minibatches(X: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool = True, drop_last: bool = False,
                device: Optional[str] = None) -> Iterator[Tuple[Tensor, Tensor]]:
    """Yield (inputs, targets) Tensors of `batch_size` examples; shuffled (from the engine's
    seeded generator) on every pass when `shuffle`."""
    X, y = np.asarray(X), np.asarray(y)
    n = len(X)
    order = generator().permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        xb, yb = X[idx], y[idx]
        if device is not None:
            xb, yb = to_device(xb, device), to_device(yb, device)
        yield Tensor(xb, dtype=xb.dtype), Tensor(yb, dtype=yb.dtype)


class EarlyStopping:
    """Stop when the monitored value (the dev loss) has not improved by more than `min_delta`
    for `patience` evaluations in a row, and remember the best model's weights.

    `step(value, model)` returns True when it is time to stop; `restore(model)` loads the best
    weights back."""

    def __init__(self, patience: int = 5, min_delta: float = 0.0, mode: str = "min") -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"EarlyStopping: mode must be 'min' or 'max', not {mode!r}")
        self.patience, self.min_delta, self.mode = int(patience), float(min_delta), mode
        self.best = None
        self.best_epoch = -1
        self.epoch = -1
        self.bad_epochs = 0
        self.best_state = None

    def improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def step(self, value: float, model: Optional[Module] = None) -> bool:
        self.epoch += 1
        value = float(value)
        if self.improved(value):
            self.best, self.best_epoch, self.bad_epochs = value, self.epoch, 0
            if model is not None:
                self.best_state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience

    def restore(self, model: Module) -> Module:
        """Load the best weights seen into `model` (if any were recorded)."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
        return model


@no_grad()
def evaluate_classifier(model: Module, X: np.ndarray, y: np.ndarray, batch_size: int = 512,
                        device: Optional[str] = None) -> Tuple[float, float]:
    """(mean loss, accuracy) of a classifier in eval mode, restoring its mode afterwards.

    Logits of shape (N, C) are scored with cross-entropy and argmax; logits of shape (N,) or
    (N, 1) are a binary classifier's, scored with binary cross-entropy and logit > 0."""
    from .nn import functional as F
    was_training = model.training
    model.eval()
    total_loss, correct, n = 0.0, 0, 0
    try:
        for xb, yb in minibatches(X, y, batch_size, shuffle=False, device=device):
            logits = model(xb)
            if logits.ndim == 2 and logits.shape[1] > 1:
                loss = F.cross_entropy(logits, yb, reduction="sum")
                predicted = logits.argmax(dim=1)
            else:
                logits = logits.reshape(-1)
                loss = F.binary_cross_entropy_with_logits(logits, yb.astype(logits.dtype), reduction="sum")
                predicted = (logits > 0).astype(np.int64)
            total_loss += float(loss.item())
            correct += int((predicted == yb).numpy().sum())
            n += len(yb)
    finally:
        model.train(was_training)
    return total_loss / max(n, 1), correct / max(n, 1)


def stop_on_dev_loss(model: Module, splits: Splits, stopper: EarlyStopping, note: str = "",
                      verbose: bool = False) -> bool:
    """The end of one epoch of an early-stopped run: score `model` on the dev split, tell
    `stopper`, and return True when training should stop.  When `verbose`, one line for the
    epoch (`note` holds the caller's own figures, e.g. "lr 0.5  ") and one when it stops."""
    dev_loss, dev_acc = evaluate_classifier(model, *splits.dev)
    stop = stopper.step(dev_loss, model)
    if verbose:
        print(f"epoch {stopper.epoch + 1:3d}  {note}dev loss {dev_loss:.4f}  dev acc {dev_acc:.3f}")
        if stop:
            print(f"dev loss has not improved for {stopper.patience} epochs: stopping, "
                  f"best epoch {stopper.best_epoch + 1}")
    return stop


def early_stopped_scores(model: Module, splits: Splits, stopper: EarlyStopping,
                         verbose: bool = False) -> dict:
    """The end of an early-stopped run: load the best weights `stopper` kept into `model`,
    score every part of `splits` (one line a split when `verbose`) and return
    {"test_loss", "test_accuracy", "dev_accuracy", "epochs"}."""
    stopper.restore(model)
    results = {name: evaluate_classifier(model, *part) for name, part in splits._asdict().items()}
    if verbose:
        for name, (loss, acc) in results.items():
            print(f"{name:5s}  loss {loss:.4f}  accuracy {acc:.3f}  ({len(getattr(splits, name)[1])} examples)")
    return {"test_loss": results["test"][0], "test_accuracy": results["test"][1],
            "dev_accuracy": results["dev"][1], "epochs": stopper.epoch + 1}
