"""A multilayer perceptron on handwritten digits (0-9), with early stopping.

    python examples/mlp_digits.py
    python examples/mlp_digits.py --hidden 128 64 --dropout 0.2 --epochs 60

64 pixels -> [Linear -> ReLU] per hidden layer -> Linear -> 10 logits, trained with Adam on
the cross-entropy of softmax(logits).  After every epoch the dev loss is measured; when it
has not improved for `patience` epochs training stops and the best weights are restored
(early stopping: the dev loss turning up is the start of overfitting).  The test set is
scored once, at the end.  Data: the 8x8 digits shipped with the package (nothing is downloaded).
"""
import tinygrad_seq as tgs
from tinygrad_seq import optim
from tinygrad_seq.data_utils import (EarlyStopping, early_stopped_scores, load_digits, minibatches, stop_on_dev_loss,
                                     train_dev_test_split)
from tinygrad_seq.models.mlp import MLP, MLPConfig
from tinygrad_seq.nn import functional as F

from script_options import run_main

PATIENCE_HELP = {"patience": "stop after this many epochs without a better dev loss"}
PATIENCE = 8


def main(epochs=60, hidden=(64,), lr=3e-3, dropout=0.1, weight_decay=1e-4, batch_size=64, patience=PATIENCE,
         seed=0, verbose=True):
    """Train, early-stop on the dev loss, and return the scores of the best model."""
    tgs.manual_seed(seed)
    splits = train_dev_test_split(*load_digits(), seed=seed)
    model = MLP(MLPConfig(in_features=64, hidden=tuple(hidden), num_classes=10, dropout=dropout))
    optimizer = optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    stopper = EarlyStopping(patience=patience)
    for _ in range(epochs):
        model.train()
        total, count = 0.0, 0
        for xb, yb in minibatches(*splits.train, batch_size=batch_size):
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(yb), count + len(yb)
        if stop_on_dev_loss(model, splits, stopper, f"train loss {total / count:.4f}  ", verbose):
            break
    return early_stopped_scores(model, splits, stopper, verbose)


if __name__ == "__main__":
    run_main(main, __doc__, "epochs", "hidden", "lr", "dropout", "patience", "seed", helps=PATIENCE_HELP)
