"""Logistic regression: is this handwritten digit a 3 or an 8?

    python examples/logistic_regression.py
    python examples/logistic_regression.py --epochs 50 --lr 0.5 --l2 1e-3

The model is one linear unit and a sigmoid, P(y = 8 | x) = sigmoid(w . x + b), trained by
mini-batch gradient descent on the binary cross-entropy

    J(w, b) = -1/m sum_i [ y_i log p_i + (1 - y_i) log(1 - p_i) ]  +  lam/2 ||w||^2

with the learning rate decayed as alpha = alpha_0 / (1 + decay_rate * epoch).  The dev set
decides when to stop (early stopping); the test set is scored once, at the end.
Data: the 8x8 digits shipped with the package, so nothing is downloaded.
"""
import tinygrad_seq as tgs
import numpy as np

from tinygrad_seq import nn, optim
from tinygrad_seq.data_utils import (EarlyStopping, early_stopped_scores, load_digits, minibatches, stop_on_dev_loss,
                                     train_dev_test_split)
from tinygrad_seq.models.mlp import LogisticRegression
from tinygrad_seq.nn import functional as F

from script_options import run_main

PATIENCE_HELP = {"patience": "stop after this many epochs without a better dev loss"}
PATIENCE = 10


def binary_digits(negative=3, positive=8):
    """The digits of two classes, labelled 0 (negative) and 1 (positive)."""
    X, y = load_digits()
    keep = (y == negative) | (y == positive)
    return X[keep], (y[keep] == positive).astype(np.int64)


def main(epochs=100, lr=0.5, decay_rate=0.05, l2=1e-3, batch_size=32, patience=PATIENCE, seed=0, verbose=True):
    """Train, early-stop on the dev loss, and return the scores of the best model."""
    tgs.manual_seed(seed)
    splits = train_dev_test_split(*binary_digits(), seed=seed)
    model = LogisticRegression(in_features=64)
    optimizer = optim.SGD(model.parameters(), lr=lr)
    schedule = optim.lr_scheduler.InverseTimeDecay(optimizer, decay_rate=decay_rate)
    stopper = EarlyStopping(patience=patience)
    for _ in range(epochs):
        model.train()
        for xb, yb in minibatches(*splits.train, batch_size=batch_size):
            logits = model(xb)
            loss = F.binary_cross_entropy_with_logits(logits, yb.float())
            loss = loss + l2 / 2 * nn.utils.l2_penalty([model.linear.weight])  # no penalty on the bias
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
        if stop_on_dev_loss(model, splits, stopper, f"lr {schedule.get_last_lr()[0]:.3f}  ", verbose):
            break
    return early_stopped_scores(model, splits, stopper, verbose)


if __name__ == "__main__":
    run_main(main, __doc__, "epochs", "lr", "decay_rate", "l2", "patience", "seed", helps=PATIENCE_HELP)
