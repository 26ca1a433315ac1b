"""Training an image classifier with the shared loop (`tgs train cnn` / `tgs train mlp`).

    config = ClassifierConfig(kind="cnn", model=lenet_config_dict, epochs=20, out="runs/cnn")
    trainer = ClassifierTrainer(config, LeNet(...), splits)   # splits: train/dev/test (X, y) pairs
    result = trainer.train()     # per epoch: dev loss and accuracy; the best dev epoch's weights kept

One step is one minibatch; an evaluation closes each epoch (eval_every = batches per epoch).
The learning rate follows a cosine from `lr` to 0 over the epochs, so the last ones settle into
a minimum instead of bouncing around it.  The checkpoint's "model" holds the weights of the
best dev epoch (what `tgs eval` scores; a tie goes to the later epoch, whose smaller step size
has settled the weights further), its "train" the current weights, optimiser and RNG state
for a bit-for-bit resume.
"""
from dataclasses import dataclass, field

import numpy as np

from . import distributed as dist
from . import optim
from . import random as tgs_random
from .config import Config, check_positive_ints
from .data_utils import evaluate_classifier
from .nn import functional as F
from .tensor import Tensor
from .trainer import Trainer, check_rates, share_weighted, zero_loss
from .vision import random_shift


@dataclass
class ClassifierConfig(Config):
    """Everything that defines a classifier run (the options of `tgs train cnn|mlp`)."""

    kind: str = "cnn"                        # the checkpoint kind
    model: dict = field(default_factory=dict)  # the model's own config (kept in the checkpoint)
    epochs: int = 20
    batch_size: int = 32
    lr: float = 2e-3
    optimizer: str = "adam"                  # adam | sgd
    momentum: float = 0.9
    weight_decay: float = 0.0
    dropout: float = 0.0
    batchnorm: bool = True
    augment: bool = False                    # shift each training image by up to `shift` pixels
    shift: int = 1
    image_shape: tuple = ()                  # (C, H, W) of an image when the inputs are flat vectors
    seed: int = 0
    out: str = None
    steps: int = 0                           # epochs x batches per epoch (set by the trainer)
    eval_every: int = 0                      # one epoch (set by the trainer)
    clip: float = 0.0
    backend: str = "auto"
    device: str = "cpu"

    def __post_init__(self):
        check_positive_ints(self, ("epochs", "batch_size", "shift"), option_names=True)
        check_rates(self.lr, self.clip, self.dropout)
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be adam or sgd, not {self.optimizer!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if not (self.weight_decay >= 0 and np.isfinite(self.weight_decay)):
            raise ValueError(f"weight-decay must be a number >= 0, got {self.weight_decay}")


class EpochBatches:
    """Batch source: minibatch `step` of a shuffled pass over (X, y).  Each epoch's order (and
    shifts, with augment) comes from its own generator seeded by (seed, epoch), so a step's batch
    depends on the step alone.  Yields (epoch, inputs, targets, examples in the whole batch).
    With `world_size` ranks (MPI), rank r gets examples [n r / N, n (r+1) / N) of each batch of n."""

    def __init__(self, X, y, batch_size, seed, augment=False, shift=1, image_shape=(), rank=0, world_size=1):
        self.X, self.y, self.batch_size, self.seed = np.asarray(X), np.asarray(y), batch_size, seed
        self.augment, self.shift, self.image_shape = augment, shift, tuple(image_shape)
        self.rank, self.world_size = rank, world_size
        self.per_epoch = -(-len(self.y) // batch_size)
        self._epoch = None

    def __call__(self, step):
        epoch, i = divmod(step, self.per_epoch)
        if self._epoch != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._order = rng.permutation(len(self.y))
            images = self.X
            if self.augment:  # flat inputs are shifted as the pictures they are
                pictures = images.reshape((-1,) + self.image_shape) if self.image_shape else images
                images = random_shift(pictures, self.shift, rng=rng).reshape(self.X.shape)
            self._images, self._epoch = images, epoch
        idx = self._order[i * self.batch_size:(i + 1) * self.batch_size]
        n = len(idx)
        idx = idx[n * self.rank // self.world_size:n * (self.rank + 1) // self.world_size]
        return epoch, self._images[idx], self.y[idx], n


class ClassifierTrainer(Trainer):
    """Cross-entropy training of `model` on splits.train, validated on splits.dev each epoch.

    Under MPI each rank trains on its share of every minibatch (`--batch-size` stays the global
    batch).  Batch normalisation uses each rank's own share for its statistics and running
    averages (PyTorch's DistributedDataParallel without SyncBatchNorm; rank 0's are validated
    and saved), so only a model without it follows the one-process run to float rounding."""

    metric = "dev_accuracy"
    higher_is_better = True
    keep_best = True
    unit = "images"

    def __init__(self, config, model, splits, **trainer_options):
        self.kind = config.kind
        self.splits = splits
        params = list(model.parameters())
        if config.optimizer == "sgd":
            optimizer = optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
        else:
            optimizer = optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
        batches = EpochBatches(*splits.train, config.batch_size, config.seed, config.augment, config.shift,
                               config.image_shape, dist.get_rank(), dist.get_world_size())
        config.steps, config.eval_every = config.epochs * batches.per_epoch, batches.per_epoch
        super().__init__(config, model, optimizer, batches, **trainer_options)
        self.units_per_step = config.batch_size
        self.epoch_loss = [0.0, 0]      # sum of example losses and examples in the current epoch
        self._batch_size = 0

    @classmethod
    def build(cls, config, build_model, splits, **trainer_options):
        """Seed the engine with config.seed, build the model (`build_model(config.model)`) and the trainer."""
        tgs_random.manual_seed(config.seed)
        return cls(config, build_model(config.model), splits, **trainer_options)

    def change_settings(self, **changes):
        """As Trainer's, plus `epochs` (the new total: the cosine stretches to it)."""
        epochs = changes.pop("epochs", None)
        if epochs is not None and epochs != self.config.epochs:
            changes["steps"] = epochs * self.batches.per_epoch
            self.pending_changes["epochs"] = [self.config.epochs, epochs]
            self.config.epochs = epochs
        super().change_settings(**changes)

    def compute_loss(self, batch):
        epoch, xb, yb, n = batch
        lr = self.config.lr * (1 + np.cos(np.pi * epoch / self.config.epochs)) / 2
        for group in self.optimizer.param_groups:
            group["lr"] = float(lr)
        self._batch_size = n
        if len(yb) == 0:  # a last batch with fewer examples than ranks: this one adds nothing
            return zero_loss(self.params)
        loss = F.cross_entropy(self.model(Tensor(xb, dtype=xb.dtype)), Tensor(yb, dtype=yb.dtype))
        return share_weighted(loss, len(yb), n, self.world_size)

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
        saved = self.best is not None and self.best["step"] == self.step
        return (f"epoch {metrics['epoch']:3d}/{self.config.epochs}  train loss {metrics['train_loss']:.4f}  "
                f"dev loss {metrics['dev_loss']:.4f}  dev acc {metrics['dev_accuracy']:6.2%}"
                f"{'  saved' if saved else ''}")

    def checkpoint_extra(self):
        return {"config": dict(self.config.model), "train": {"epoch_loss": list(self.epoch_loss)}}

    def restore_extra(self, state):
        self.epoch_loss = [float(x) for x in state["train"].get("epoch_loss", [0.0, 0])]
