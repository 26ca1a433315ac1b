"""Optimisers and learning-rate schedules (torch.optim's names and arguments)."""
from . import lr_scheduler  # noqa: F401
from .optimizers import SGD, Adam, AdamW, Optimizer, RMSprop  # noqa: F401
