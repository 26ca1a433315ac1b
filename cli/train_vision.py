"""`tgs train cnn | mlp`: digit classifiers on scikit-learn's bundled 8x8 digits (no download),
and the checkpoint kinds ("cnn", "mlp") that `tgs eval` reads.

    tgs train cnn                      # LeNet-style CNN, >= 97% test accuracy in seconds
    tgs train mlp --hidden 128,64 --dropout 0.2
    tgs eval runs/cnn                  # test accuracy and the confusion matrix

The data is split once, by a fixed seed (independent of --seed), into train / dev / test:
the weights are fitted on train, the dev accuracy picks the epoch whose weights are kept,
and the test split is scored once at the end (and again by `tgs eval`).

Every bad input ends in one "Error: ..." line and a non-zero exit.  Heavy imports stay
inside the functions so that `tgs --help` stays instant.
"""
import math
import os
import time

import click

from . import kinds
from .kinds import fail

SPLIT_SEED = 0            # the train/dev/test split never changes, so `tgs eval` scores the same test set
CLASSIFIER_KINDS = {"cnn": "LeNet-style CNN digit classifier", "mlp": "MLP digit classifier"}


def _int_list(name, text):
    """'16,32' -> (16, 32), every entry a positive int (a one-line error otherwise)."""
    try:
        values = tuple(int(part) for part in str(text).split(",") if part.strip())
    except ValueError:
        fail(f"{name} must be comma-separated positive integers such as 16,32, got {text!r}")
    if not values or min(values) < 1:
        fail(f"{name} must be comma-separated positive integers such as 16,32, got {text!r}")
    return values


def training_options(default_out, defaults):
    """The options `tgs train cnn` and `tgs train mlp` share (each with its own defaults)."""
    def decorate(f):
        opts = [
            click.option("--epochs", type=int, default=defaults["epochs"], show_default=True,
                         help="Passes over the training images."),
            click.option("--batch-size", type=int, default=32, show_default=True, help="Images per step."),
            click.option("--lr", type=float, default=defaults["lr"], show_default=True,
                         help="Learning rate (cosine-annealed to 0 over the epochs)."),
            click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default="adam", show_default=True,
                         help="Adam, or mini-batch SGD with --momentum."),
            click.option("--momentum", type=float, default=0.9, show_default=True, help="SGD momentum."),
            click.option("--weight-decay", type=float, default=0.0, show_default=True, help="L2 penalty."),
            click.option("--dropout", type=float, default=defaults["dropout"], show_default=True,
                         help="Dropout before the fully connected layers, in [0, 1)."),
            click.option("--batchnorm/--no-batchnorm", default=defaults["batchnorm"], show_default=True,
                         help="Batch normalisation after each conv (hidden) layer."),
            click.option("--augment", is_flag=True,
                         help="Shift each training image by up to --shift pixels (a random crop of the padded image)."),
            click.option("--shift", type=int, default=1, show_default=True, help="Largest shift of --augment."),
            click.option("--seed", type=int, default=0, show_default=True,
                         help="Random seed (weights, shuffles, dropout, shifts)."),
            click.option("--out", type=click.Path(), default=default_out, show_default=True, help="Run directory."),
            click.option("--overwrite", is_flag=True, help="Replace a checkpoint already in --out."),
        ]
        for decorator in reversed(opts):
            f = decorator(f)
        return f
    return decorate


def _check_options(options):
    for name in ("epochs", "batch_size", "shift"):
        if options[name] < 1:
            fail(f"--{name.replace('_', '-')} must be a positive integer, got {options[name]}")
    if not (options["lr"] > 0 and math.isfinite(options["lr"])):
        fail(f"--lr must be a positive number, got {options['lr']}")
    if not 0 <= options["dropout"] < 1:
        fail(f"--dropout must be in [0, 1), got {options['dropout']}")
    if not 0 <= options["momentum"] < 1:
        fail(f"--momentum must be in [0, 1), got {options['momentum']}")
    if not (options["weight_decay"] >= 0 and math.isfinite(options["weight_decay"])):
        fail(f"--weight-decay must be a number >= 0, got {options['weight_decay']}")


def _checkpoint_path(out, kind, overwrite):
    """Where the run writes; an existing checkpoint is replaced only with --overwrite."""
    from tinygrad_seq.checkpoint import CheckpointError, load_checkpoint

    if os.path.exists(out) and not os.path.isdir(out):
        fail(f"--out {out} is a file; give a directory for the run")
    path = os.path.join(out, "checkpoint.npz")
    if os.path.exists(path):
        try:
            held = load_checkpoint(path).get("kind")
        except CheckpointError:
            held = None
        if held not in (None, kind):
            fail(f"{out} holds a {held!r} checkpoint, not a {kind!r} one; choose another --out")
        if not overwrite:
            fail(f"{out} already holds a checkpoint; pass --overwrite to replace it, or choose another --out")
    return path


def _build_model(kind, config):
    if kind == "cnn":
        from tinygrad_seq.models.cnn import LeNet, LeNetConfig
        return LeNet(LeNetConfig.from_dict(config))
    from tinygrad_seq.models.mlp import MLP, MLPConfig
    return MLP(MLPConfig.from_dict(config))


def _digits(kind):
    """The fixed train/dev/test split, as images (N, 1, 8, 8) for the CNN, vectors (N, 64) for the MLP."""
    from tinygrad_seq.data_utils import load_digits, train_dev_test_split

    try:
        return train_dev_test_split(*load_digits(images=kind == "cnn"), seed=SPLIT_SEED)
    except ImportError as exc:
        fail(exc)


def _as_images(X, kind):
    return X.reshape(-1, 1, 8, 8) if kind == "mlp" else X


def train_classifier(kind, model_config, options):
    """The body of `tgs train cnn` / `tgs train mlp`: train, keep the best dev epoch, checkpoint, test."""
    import tinygrad_seq as tgs
    from tinygrad_seq import optim, vision
    from tinygrad_seq.checkpoint import load_checkpoint, save_checkpoint
    from tinygrad_seq.data_utils import evaluate_classifier, minibatches
    from tinygrad_seq.nn import functional as F

    _check_options(options)
    path = _checkpoint_path(options["out"], kind, options["overwrite"])
    tgs.manual_seed(options["seed"])
    try:
        model = _build_model(kind, model_config)
    except ValueError as exc:
        fail(exc)
    splits = _digits(kind)
    params = list(model.parameters())
    if options["optimizer"] == "sgd":
        optimizer = optim.SGD(params, lr=options["lr"], momentum=options["momentum"],
                              weight_decay=options["weight_decay"])
    else:
        optimizer = optim.Adam(params, lr=options["lr"], weight_decay=options["weight_decay"])
    # a decaying step size lets the last epochs settle into a minimum instead of bouncing around it
    schedule = optim.lr_scheduler.CosineAnnealingLR(optimizer, options["epochs"])
    n_params = sum(p.numel() for p in params)
    click.echo(f"{CLASSIFIER_KINDS[kind]} ({n_params:,} parameters) on scikit-learn's 8x8 digits: "
               f"{len(splits.train[1])} training, {len(splits.dev[1])} dev, {len(splits.test[1])} test images; "
               f"{options['optimizer']} lr {options['lr']:g}; run directory {options['out']}", err=True)

    # tune hook (issue 18): `tgs tune` passes its per-evaluation callback through the click context
    from tinygrad_seq.tune import ON_EVALUATE
    on_evaluate = click.get_current_context().meta.get(ON_EVALUATE)
    X_train, y_train = splits.train
    settings = {k: v for k, v in options.items() if k != "overwrite"}
    best_dev, best_epoch, start = -1.0, 0, time.perf_counter()
    for epoch in range(1, options["epochs"] + 1):
        model.train()
        images = X_train
        if options["augment"]:
            # shift the 8x8 pictures, then flatten them again for the MLP
            images = vision.random_shift(_as_images(X_train, kind), options["shift"]).reshape(X_train.shape)
        total, count = 0.0, 0
        for xb, yb in minibatches(images, y_train, batch_size=options["batch_size"]):
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(yb), count + len(yb)
        schedule.step()
        train_loss = total / count
        if not math.isfinite(train_loss):
            fail(f"the training loss became {train_loss} in epoch {epoch}; lower --lr "
                  f"(the last good checkpoint is kept in {options['out']})")
        dev_loss, dev_acc = evaluate_classifier(model, *splits.dev)
        # keep the weights of the best dev epoch (early stopping's choice, without stopping); a tie goes
        # to the later epoch, whose smaller step size has settled the weights further
        improved = dev_acc >= best_dev
        if improved:
            best_dev, best_epoch = dev_acc, epoch
            save_checkpoint(path, {"kind": kind, "config": model.config.to_dict(), "model": model.state_dict(),
                                   "train": {"options": settings, "epoch": epoch, "dev_accuracy": dev_acc,
                                             "split_seed": SPLIT_SEED}})
        click.echo(f"epoch {epoch:3d}/{options['epochs']}  train loss {train_loss:.4f}  dev loss {dev_loss:.4f}  "
                   f"dev acc {dev_acc:6.2%}{'  saved' if improved else ''}  {time.perf_counter() - start:6.1f}s",
                   err=True)
        if on_evaluate is not None and on_evaluate(None, epoch, {"dev_accuracy": dev_acc, "dev_loss": dev_loss}):
            click.echo(f"stopped early after epoch {epoch}", err=True)
            break

    result = _evaluate_state(load_checkpoint(path))
    click.echo(f"best dev accuracy {best_dev:.2%} at epoch {best_epoch}; checkpoint {path}", err=True)
    click.echo(f"test accuracy {result['accuracy']:.2%} ({result['correct']}/{result['examples']}) "
               f"after {time.perf_counter() - start:.1f}s")


# ---------------------------------------------------------------------------- commands
@click.command()
@training_options("runs/cnn", {"epochs": 20, "lr": 2e-3, "dropout": 0.0, "batchnorm": True})
@click.option("--channels", default="16,32", show_default=True,
              help="Filters of each conv -> ReLU -> pool stage, comma-separated.")
@click.option("--kernel-size", type=int, default=3, show_default=True, help="Side of the square filters.")
@click.option("--hidden", type=int, default=64, show_default=True,
              help="Units of the fully connected layer before the softmax layer (0 = none).")
def cnn(channels, kernel_size, hidden, **options):
    """Train a LeNet-style CNN (conv -> ReLU -> pool, twice, then a softmax layer) on the 8x8 digits.

    \b
    tgs train cnn                                  # ~6 s on 2 cores, >= 97% test accuracy
    tgs train cnn --optimizer sgd --lr 0.05 --augment --dropout 0.2 --out runs/cnn-sgd
    """
    if kernel_size < 1:
        fail(f"--kernel-size must be a positive integer, got {kernel_size}")
    if hidden < 0:
        fail(f"--hidden must be 0 or a positive integer, got {hidden}")
    config = {"in_channels": 1, "image_size": 8, "num_classes": 10, "channels": _int_list("--channels", channels),
              "kernel_size": kernel_size, "hidden": hidden, "dropout": options["dropout"],
              "batch_norm": options["batchnorm"]}
    train_classifier("cnn", config, options)


@click.command()
@training_options("runs/mlp", {"epochs": 30, "lr": 3e-3, "dropout": 0.1, "batchnorm": False})
@click.option("--hidden", default="128", show_default=True, help="Units of each hidden layer, comma-separated.")
@click.option("--activation", type=click.Choice(["relu", "tanh", "sigmoid", "leaky_relu", "gelu"]), default="relu",
              show_default=True)
def mlp(hidden, activation, **options):
    """Train a multilayer perceptron on the 8x8 digits (64 pixels -> hidden layers -> softmax)."""
    config = {"in_features": 64, "hidden": _int_list("--hidden", hidden), "num_classes": 10,
              "activation": activation, "dropout": options["dropout"], "batch_norm": options["batchnorm"]}
    train_classifier("mlp", config, options)


# ---------------------------------------------------------------------------- checkpoint kinds
def _evaluate_state(state):
    """Accuracy, loss and confusion matrix (rows: true digit, columns: predicted) on the test split."""
    import numpy as np

    from tinygrad_seq.nn import functional as F
    from tinygrad_seq.tensor import Tensor, no_grad

    kind = state["kind"]
    model = _build_model(kind, state["config"])
    model.load_state_dict(state["model"])
    model.eval()
    X, y = _digits(kind).test
    with no_grad():
        logits = model(Tensor(X, dtype=X.dtype))
        loss = float(F.cross_entropy(logits, Tensor(y, dtype=y.dtype)).item())
    predicted = logits.numpy().argmax(axis=1)
    confusion = np.zeros((10, 10), dtype=np.int64)
    np.add.at(confusion, (y, predicted), 1)
    correct = int((predicted == y).sum())
    return {"accuracy": correct / len(y), "loss": loss, "correct": correct, "examples": int(len(y)),
            "split": "test", "confusion_matrix": confusion.tolist()}


def _evaluate_classifier(state, file, path):
    if file is not None:
        raise ValueError("a digit classifier is evaluated on the digits test split; give no FILE: tgs eval CKPT")
    return _evaluate_state(state)


def _format_classifier(result):
    matrix = result["confusion_matrix"]
    lines = [f"test accuracy {result['accuracy']:.2%} ({result['correct']}/{result['examples']}), "
             f"loss {result['loss']:.4f}",
             "confusion matrix (rows: true digit, columns: predicted):",
             "      " + " ".join(f"{c:4d}" for c in range(len(matrix)))]
    lines += [f"  {r:2d}  " + " ".join(f"{n:4d}" for n in row) for r, row in enumerate(matrix)]
    return "\n".join(lines)


for _kind, _description in CLASSIFIER_KINDS.items():
    kinds.register(_kind, evaluate=_evaluate_classifier, format_eval=_format_classifier, description=_description)
