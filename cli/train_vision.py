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
            click.option("--resume", is_flag=True,
                         help="Continue the run in --out (--epochs, the new total, --lr and --dropout may change)."),
        ]
        for decorator in reversed(opts):
            f = decorator(f)
        return f
    return decorate


def _check_options(options):
    for name in ("epochs", "batch_size", "shift"):
        if options[name] < 1:
            fail(f"--{name.replace('_', '-')} must be a positive integer, got {options[name]}")
    from tinygrad_seq.trainer import check_rates

    try:
        check_rates(options["lr"], 0.0, options["dropout"])
    except ValueError as exc:
        fail(f"--{exc}")
    if not 0 <= options["momentum"] < 1:
        fail(f"--momentum must be in [0, 1), got {options['momentum']}")
    if not (options["weight_decay"] >= 0 and math.isfinite(options["weight_decay"])):
        fail(f"--weight-decay must be a number >= 0, got {options['weight_decay']}")


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


def _classifier_trainer_class():
    """ClassifierTrainer, defined on first use so that importing this module stays light."""
    global ClassifierTrainer
    if "ClassifierTrainer" in globals():
        return ClassifierTrainer
    from dataclasses import dataclass, field

    import numpy as np

    from tinygrad_seq import optim, vision
    from tinygrad_seq.config import Config
    from tinygrad_seq.data_utils import evaluate_classifier
    from tinygrad_seq.nn import functional as F
    from tinygrad_seq.tensor import Tensor
    from tinygrad_seq.trainer import Trainer

    @dataclass
    class ClassifierConfig(Config):
        """Everything that defines a digit-classifier run (the options of `tgs train cnn|mlp`)."""
        kind: str = "cnn"
        model: dict = field(default_factory=dict)
        epochs: int = 20
        batch_size: int = 32
        lr: float = 2e-3
        optimizer: str = "adam"
        momentum: float = 0.9
        weight_decay: float = 0.0
        dropout: float = 0.0
        batchnorm: bool = True
        augment: bool = False
        shift: int = 1
        seed: int = 0
        out: str = None
        steps: int = 0              # epochs x batches per epoch (set by the trainer)
        eval_every: int = 0         # one epoch
        clip: float = 0.0
        backend: str = "auto"
        device: str = "cpu"

    class EpochBatches:
        """Minibatch `step` of a shuffled pass (each epoch's order and shifts drawn from its own
        generator seeded by (seed, epoch)), so a step's batch depends on the step alone."""

        def __init__(self, X, y, batch_size, seed, augment, shift, kind):
            self.X, self.y, self.batch_size, self.seed = X, y, batch_size, seed
            self.augment, self.shift, self.kind = augment, shift, kind
            self.per_epoch = -(-len(y) // batch_size)
            self._epoch = None

        def __call__(self, step):
            epoch, i = divmod(step, self.per_epoch)
            if self._epoch != epoch:
                rng = np.random.default_rng([self.seed, epoch])
                self._order = rng.permutation(len(self.y))
                images = self.X
                if self.augment:  # shift the 8x8 pictures, then flatten them again for the MLP
                    images = vision.random_shift(_as_images(self.X, self.kind), self.shift, rng=rng)
                    images = images.reshape(self.X.shape)
                self._images, self._epoch = images, epoch
            idx = self._order[i * self.batch_size:(i + 1) * self.batch_size]
            return epoch, self._images[idx], self.y[idx]

    class _ClassifierTrainer(Trainer):
        metric = "dev_accuracy"
        higher_is_better = True
        keep_best = True       # the best dev epoch's weights are the model that is kept and evaluated
        unit = "images"

        def __init__(self, config, splits, **trainer_options):
            from tinygrad_seq import random as tgs_random

            tgs_random.manual_seed(config.seed)
            self.kind = config.kind
            self.splits = splits
            model = _build_model(config.kind, config.model)
            params = list(model.parameters())
            if config.optimizer == "sgd":
                optimizer = optim.SGD(params, lr=config.lr, momentum=config.momentum,
                                      weight_decay=config.weight_decay)
            else:
                optimizer = optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
            batches = EpochBatches(*splits.train, config.batch_size, config.seed, config.augment, config.shift,
                                   config.kind)
            config.steps, config.eval_every = config.epochs * batches.per_epoch, batches.per_epoch
            super().__init__(config, model, optimizer, batches, **trainer_options)
            self.units_per_step = config.batch_size
            self.epoch_loss = [0.0, 0]
            self.started = None

        def change_settings(self, **changes):
            if "epochs" in changes:
                changes["steps"] = changes["epochs"] * self.batches.per_epoch
            super().change_settings(**{k: v for k, v in changes.items() if k != "epochs"})
            if "epochs" in changes:
                self.config.epochs = changes["epochs"]

        def compute_loss(self, batch):
            epoch, xb, yb = batch
            # cosine annealing over the epochs: the last ones settle into a minimum instead of bouncing around it
            lr = self.config.lr * (1 + np.cos(np.pi * epoch / self.config.epochs)) / 2
            for group in self.optimizer.param_groups:
                group["lr"] = float(lr)
            self._batch_size = len(yb)
            return F.cross_entropy(self.model(Tensor(xb, dtype=xb.dtype)), Tensor(yb, dtype=yb.dtype))

        def train_step(self):
            value = super().train_step()
            self.epoch_loss = [self.epoch_loss[0] + value * self._batch_size, self.epoch_loss[1] + self._batch_size]
            return value

        def validate(self):
            dev_loss, dev_acc = evaluate_classifier(self.model, *self.splits.dev)
            train_loss = self.epoch_loss[0] / max(self.epoch_loss[1], 1)
            self.epoch_loss = [0.0, 0]
            return {"epoch": self.step // self.batches.per_epoch, "train_loss": train_loss, "dev_loss": dev_loss,
                    "dev_accuracy": dev_acc}

        def report(self, metrics):
            import time

            saved = self.best is not None and self.best["step"] == self.step
            return (f"epoch {metrics['epoch']:3d}/{self.config.epochs}  train loss {metrics['train_loss']:.4f}  "
                    f"dev loss {metrics['dev_loss']:.4f}  dev acc {metrics['dev_accuracy']:6.2%}"
                    f"{'  saved' if saved else ''}  {time.perf_counter() - self.started:6.1f}s")

        def checkpoint_extra(self):
            return {"config": dict(self.config.model), "train": {"split_seed": SPLIT_SEED,
                                                                 "epoch_loss": list(self.epoch_loss)}}

        def restore_extra(self, state):
            self.epoch_loss = [float(x) for x in state["train"].get("epoch_loss", [0.0, 0])]

    _ClassifierTrainer.Config = ClassifierConfig
    ClassifierTrainer = _ClassifierTrainer
    return ClassifierTrainer


def train_classifier(kind, model_config, options):
    """The body of `tgs train cnn` / `tgs train mlp`: train, keep the best dev epoch, checkpoint, test."""
    import time

    from tinygrad_seq.checkpoint import CheckpointError, load_checkpoint

    from . import runs

    resume, overwrite = options.pop("resume"), options.pop("overwrite")
    state = runs.open_run(options["out"], (kind,), resume, overwrite)
    trainer_class = _classifier_trainer_class()
    splits = _digits(kind)
    if state is None:
        _check_options(options)
        try:
            _build_model(kind, model_config)
        except ValueError as exc:
            fail(exc)
        trainer = trainer_class(trainer_class.Config(kind=kind, model=model_config, **options), splits,
                                overwrite=overwrite)
    else:
        saved = state["train"]["config"]
        if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
            fail(f"cannot resume: {runs.checkpoint_of(options['out'])} is a malformed checkpoint (no run config)")
        # the model's own options (--channels, --hidden, ...) are compared with the saved model config
        changes = runs.resume_changes(dict(saved["model"], **saved), dict(model_config, **options),
                                      changeable=("epochs", "lr", "dropout"))
        _check_options(dict(saved, **changes))
        try:
            config = trainer_class.Config.from_dict(dict(saved, out=options["out"]))
            trainer = trainer_class(config, splits).restore(state, runs.checkpoint_of(options["out"]))
        except CheckpointError as exc:
            fail(f"cannot resume: {exc}")
        except (ValueError, TypeError, KeyError) as exc:
            fail(f"cannot resume: {runs.checkpoint_of(options['out'])} is a malformed checkpoint ({exc})")
        trainer.change_settings(**changes)
    cfg = trainer.config
    n_params = sum(p.numel() for p in trainer.params)
    click.echo(f"{'Resuming at epoch ' + str(trainer.step // trainer.batches.per_epoch) + ': ' if state else ''}"
               f"{CLASSIFIER_KINDS[kind]} ({n_params:,} parameters) on scikit-learn's 8x8 digits: "
               f"{len(splits.train[1])} training, {len(splits.dev[1])} dev, {len(splits.test[1])} test images; "
               f"{cfg.optimizer} lr {cfg.lr:g}; run directory {cfg.out}", err=True)
    trainer.started = time.perf_counter()
    result = runs.run(trainer)
    path = trainer.checkpoint_path
    best = trainer.best
    test = _evaluate_state(load_checkpoint(path), path)
    click.echo(f"best dev accuracy {best['value']:.2%} at epoch {best['step'] // trainer.batches.per_epoch}; "
               f"checkpoint {path}", err=True)
    click.echo(f"test accuracy {test['accuracy']:.2%} ({test['correct']}/{test['examples']}) "
               f"after {time.perf_counter() - trainer.started:.1f}s")
    return result


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
