"""Logistic regression and the multilayer perceptron (a feed-forward net of any depth).

Logistic regression (binary):

    x (N, D) -> Linear(D, 1) -> logit z (N,);     P(y = 1 | x) = sigmoid(z)

trained with binary cross-entropy on the logits.  Softmax regression is the same with C
outputs and cross-entropy; it is an MLP with no hidden layers.

MLP:

    x (N, D) -> [Linear -> (BatchNorm1d) -> activation -> (Dropout)] x len(hidden) -> Linear -> logits (N, C)

Each hidden layer is a learned feature map; without the nonlinearity the stack would collapse
into one linear map.  The weights start with He initialisation for ReLU-like activations and
Glorot for tanh/sigmoid (the scale that keeps activations from shrinking or exploding).
"""
from dataclasses import dataclass

from .. import nn
from ..config import Config, check_dropout
from ..nn import functional as F
from ..tensor import no_grad

__all__ = ["LogisticRegression", "MLPConfig", "MLP"]


class LogisticRegression(nn.Module):
    """P(y = 1 | x) = sigmoid(w . x + b):  `model(x)` gives the logits (N,)."""

    def __init__(self, in_features):
        super().__init__()
        self.linear = nn.Linear(in_features, 1)
        nn.init.zeros_(self.linear.weight)  # the loss is convex: any start works, zero is the classic one
        nn.init.zeros_(self.linear.bias)

    def forward(self, x):
        return self.linear(x).reshape(-1)

    @no_grad()
    def predict_proba(self, x):
        return self.forward(x).sigmoid()


ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU}


@dataclass
class MLPConfig(Config):
    in_features: int = 64
    hidden: tuple = (64,)          # one hidden layer per entry; () gives softmax regression
    num_classes: int = 10
    activation: str = "relu"
    dropout: float = 0.0
    batch_norm: bool = False

    def __post_init__(self):
        self.hidden = tuple(int(h) for h in self.hidden)
        if self.in_features < 1 or self.num_classes < 1 or any(h < 1 for h in self.hidden):
            raise ValueError(f"MLPConfig: sizes must be positive, got in_features={self.in_features}, "
                             f"hidden={self.hidden}, num_classes={self.num_classes}")
        check_dropout(self.dropout, "MLPConfig: ")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"MLPConfig: unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}")


class MLP(nn.Module):
    """`MLP(MLPConfig(...))(x (N, in_features))` -> logits (N, num_classes); layers in `self.net`."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        layers, width = [], config.in_features
        for size in config.hidden:
            linear = nn.Linear(width, size)
            if config.activation in ("relu", "leaky_relu", "gelu"):
                nn.init.kaiming_uniform_(linear.weight, nonlinearity="relu")
            else:
                nn.init.xavier_uniform_(linear.weight, gain=nn.init.calculate_gain(config.activation))
            nn.init.zeros_(linear.bias)
            layers.append(linear)
            if config.batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(ACTIVATIONS[config.activation]())
            if config.dropout:
                layers.append(nn.Dropout(config.dropout))
            width = size
        layers.append(nn.Linear(width, config.num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        if x.ndim != 2 or x.shape[1] != self.config.in_features:
            raise ValueError(f"MLP: expects inputs of shape (N, {self.config.in_features}), got {x.shape}")
        return self.net(x)

    @no_grad()
    def predict_proba(self, x):
        """softmax of the logits: (N, num_classes) class probabilities (evaluation mode is the caller's)."""
        return F.softmax(self.forward(x), dim=-1)
