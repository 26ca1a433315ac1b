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
            click.option("--batch-size", type=int, default=32, show_default=True, help="Images per step: the global batch, shared out among the ranks under mpiexec/srun."),
            click.option("--lr", type=float, default=defaults["lr"], show_default=True,
                         help="Learning rate (cosine-annealed to 0 over the epochs)."),
            click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default="adam", show_default=True,
                         help="Adam, or mini-batch SGD with --momentum."),
            click.option("--momentum", type=float, default=0.9, show_default=True, help="SGD momentum."),
            click.option("--weight-decay", type=float, default=0.0, show_default=True, help="L2 penalty."),
            click.option("--dropout", type=float, default=defaults["dropout"], show_default=True,
                         help="Dropout before the fully connected layers, in [0, 1)."),
            click.option("--batchnorm/--no-batchnorm", default=defaults["batchnorm"], show_default=True,
                         help=f"Batch normalisation after each {defaults['batchnorm_after']}, before its activation."),
            click.option("--augment", is_flag=True, default=False,
                         help="Shift each training image by up to --shift pixels (a random crop of the padded image)."),
            click.option("--shift", type=int, default=1, show_default=True, help="Largest shift of --augment."),
            click.option("--seed", type=int, default=0, show_default=True,
                         help="Random seed (weights, shuffles, dropout, shifts)."),
            click.option("--out", type=click.Path(), default=default_out, show_default=True, help="Run directory."),
            click.option("--overwrite", is_flag=True, help="Replace a checkpoint already in --out."),
            click.option("--resume", is_flag=True,
                         help="Continue the run in --out (--epochs, the new total, --lr and --dropout may change)."),
        ]
        for decorator in reversed(opts):
            f = decorator(f)
        return f
    return decorate


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


def train_classifier(kind, model_config, options):
    """The body of `tgs train cnn` / `tgs train mlp`: train, keep the best dev epoch, checkpoint,
    test.  Under an MPI launcher every rank runs it (one model, data-parallel; rank 0 talks)."""
    from . import runs

    return runs.on_every_rank(options["out"], _train_classifier, kind, model_config, options)


def _train_classifier(kind, model_config, options):
    from tinygrad_seq.checkpoint import CheckpointError, load_checkpoint
    from tinygrad_seq.classifier_training import ClassifierConfig, ClassifierTrainer

    from . import runs

    resume, overwrite = options.pop("resume"), options.pop("overwrite")
    state = runs.open_run(options["out"], (kind,), resume, overwrite)
    splits = _digits(kind)
    build = lambda config: _build_model(kind, config)  # noqa: E731
    image_shape = (1, 8, 8) if kind == "mlp" else ()
    if state is None:
        try:
            config = ClassifierConfig(kind=kind, model=model_config, image_shape=image_shape, **options)
        except ValueError as exc:
            fail(f"--{exc}")
        try:
            trainer = ClassifierTrainer.build(config, build, splits, overwrite=overwrite)
        except ValueError as exc:  # a model config that does not fit (e.g. too many conv stages)
            fail(exc)
    else:
        saved = state["train"]["config"]
        if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
            fail(f"cannot resume: {runs.checkpoint_of(options['out'])} is a malformed checkpoint (no run config)")
        # the model's own options (--channels, --hidden, ...) are compared with the saved model config
        changes = runs.resume_changes(dict(saved["model"], **saved), dict(model_config, **options),
                                      changeable=("epochs", "lr", "dropout"))
        try:
            config = ClassifierConfig.from_dict(dict(saved, out=options["out"]))
            trainer = ClassifierTrainer.build(config, build, splits).restore(state, runs.checkpoint_of(options["out"]))
        except CheckpointError as exc:
            fail(f"cannot resume: {exc}")
        except (ValueError, TypeError) as exc:
            fail(f"cannot resume: {runs.checkpoint_of(options['out'])} is a malformed checkpoint ({exc})")
        try:
            trainer.change_settings(**changes)
        except ValueError as exc:
            fail(f"--{exc}")
    cfg = trainer.config
    n_params = sum(p.numel() for p in trainer.params)
    runs.echo(f"{'Resuming at epoch ' + str(trainer.step // trainer.batches.per_epoch) + ': ' if state else ''}"
              f"{CLASSIFIER_KINDS[kind]} ({n_params:,} parameters) on scikit-learn's 8x8 digits: "
              f"{len(splits.train[1])} training, {len(splits.dev[1])} dev, {len(splits.test[1])} test images; "
              f"{cfg.optimizer} lr {cfg.lr:g}; run directory {cfg.out}"
              + (f"; {trainer.world_size} ranks" if trainer.world_size > 1 else ""))
    started = time.perf_counter()
    result = runs.run(trainer)
    if not trainer.is_main_process:
        return result
    path = trainer.checkpoint_path
    best = trainer.best
    test = _evaluate_state(load_checkpoint(path), path)
    click.echo(f"best dev accuracy {best['value']:.2%} at epoch {best['step'] // trainer.batches.per_epoch}; "
               f"checkpoint {path}", err=True)
    click.echo(f"test accuracy {test['accuracy']:.2%} ({test['correct']}/{test['examples']}) "
               f"after {time.perf_counter() - started:.1f}s")
    return result


# ---------------------------------------------------------------------------- commands
@click.command()
@training_options("runs/cnn", {"epochs": 20, "lr": 2e-3, "dropout": 0.0, "batchnorm": True,
                                 "batchnorm_after": "conv layer"})
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
@training_options("runs/mlp", {"epochs": 30, "lr": 3e-3, "dropout": 0.1, "batchnorm": False,
                                 "batchnorm_after": "hidden Linear layer"})
@click.option("--hidden", default="128", show_default=True, help="Units of each hidden layer, comma-separated.")
@click.option("--activation", type=click.Choice(["relu", "tanh", "sigmoid", "leaky_relu", "gelu"]), default="relu",
              show_default=True)
def mlp(hidden, activation, **options):
    """Train a multilayer perceptron on the 8x8 digits (64 pixels -> hidden layers -> softmax)."""
    config = {"in_features": 64, "hidden": _int_list("--hidden", hidden), "num_classes": 10,
              "activation": activation, "dropout": options["dropout"], "batch_norm": options["batchnorm"]}
    train_classifier("mlp", config, options)


# ---------------------------------------------------------------------------- checkpoint kinds
def _evaluate_state(state, path="checkpoint"):
    """Accuracy, loss and confusion matrix (rows: true digit, columns: predicted) on the test split."""
    import numpy as np

    from tinygrad_seq.checkpoint import check_module_state, malformed_as_checkpoint_error
    from tinygrad_seq.nn import functional as F
    from tinygrad_seq.tensor import Tensor, no_grad

    kind = state["kind"]
    with malformed_as_checkpoint_error(path):
        model = _build_model(kind, state["config"])
        check_module_state(model, state["model"], path)
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
    return _evaluate_state(state, path)


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
