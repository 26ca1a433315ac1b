"""The basic layers, with PyTorch's names, arguments, parameter names, shapes and default
initialisation, so `load_state_dict({k: v.numpy() for k, v in torch_model.state_dict().items()})`
loads a PyTorch model's weights.

    Linear        y = x W^T + b                    weight (out, in), bias (out,)
    Embedding     y = W[ids]                       weight (num_embeddings, embedding_dim)
    BatchNorm     y = (x - mu_B) / sqrt(var_B + eps) * gamma + beta, per channel over the batch
    LayerNorm     y = (x - mu) / sqrt(var + eps) * gamma + beta, per sample over its last axes
    Dropout       inverted dropout: keep with probability 1 - p, scale by 1 / (1 - p)

plus the activations, Flatten/Identity and the loss modules.
"""
import math

import numpy as np

from ..device import to_device
from ..tensor import Tensor
from . import functional as F
from . import init
from .module import Module, Parameter

__all__ = ["Linear", "Embedding", "Dropout", "BatchNorm1d", "BatchNorm2d", "LayerNorm",
           "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "GELU", "Softmax", "LogSoftmax", "Identity", "Flatten",
           "CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss", "BCELoss", "BCEWithLogitsLoss"]


def _empty(shape, device=None, dtype=None):
    """A Parameter of zeros of `shape` (the caller initialises it) on `device`."""
    array = np.zeros(shape, dtype=np.dtype(dtype) if dtype is not None else np.float32)
    return Parameter(to_device(array, device or "cpu"), dtype=array.dtype)


def _buffer(array, device=None):
    return Tensor(to_device(array, device or "cpu"), dtype=array.dtype)


# ---------------------------------------------------------------------------- affine maps
class Linear(Module):
    """y = x W^T + b for x of shape (..., in_features).

    Default initialisation as PyTorch: W and b ~ U(-1/sqrt(in_features), 1/sqrt(in_features))
    (kaiming_uniform_ with a = sqrt(5))."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = _empty((self.out_features, self.in_features), device, dtype)
        if bias:
            self.bias = _empty((self.out_features,), device, dtype)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None and self.in_features > 0:
            bound = 1 / math.sqrt(self.in_features)
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A lookup table: ids of any shape (...) -> vectors (..., embedding_dim).

    Weight ~ N(0, 1) as PyTorch; the row `padding_idx` starts at zero and gets no gradient."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, device=None, dtype=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        if padding_idx is not None:
            if not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ValueError(f"Embedding: padding_idx {padding_idx} is outside [0, {self.num_embeddings})")
            padding_idx %= self.num_embeddings
        self.padding_idx = padding_idx
        self.weight = _empty((self.num_embeddings, self.embedding_dim), device, dtype)
        self.reset_parameters()

    def reset_parameters(self):
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None):
        """An Embedding holding the given (num, dim) vectors (e.g. trained word2vec or GloVe)."""
        data = embeddings.numpy() if isinstance(embeddings, Tensor) else np.asarray(embeddings)
        if data.ndim != 2:
            raise ValueError(f"Embedding.from_pretrained: embeddings must be 2-D, got shape {data.shape}")
        layer = cls(data.shape[0], data.shape[1], padding_idx=padding_idx, dtype=data.dtype if data.dtype.kind == "f" else None)
        layer.weight.data[...] = data
        layer.weight.requires_grad_(not freeze)
        return layer

    def forward(self, ids):
        return F.embedding(ids, self.weight, self.padding_idx)

    def extra_repr(self):
        pad = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"


class Dropout(Module):
    """Inverted dropout: in training, each unit is kept with probability keep_prob = 1 - p and
    scaled by 1 / keep_prob (so the expected activation is unchanged); identity in eval mode."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


# ---------------------------------------------------------------------------- normalisation
class _BatchNorm(Module):
    """Batch normalisation (Ioffe & Szegedy 2015) over axis 1 of (N, C, ...).

    Training: normalise with the batch's mean and (biased) variance and update
        running = (1 - momentum) * running + momentum * batch statistic
    (the variance unbiased, N / (N - 1); momentum=None: a cumulative average).
    Evaluation: normalise with the running statistics (if track_running_stats)."""

    expected_dims = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 device=None, dtype=None):
        super().__init__()
        self.num_features, self.eps, self.momentum = int(num_features), eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        dtype = np.dtype(dtype) if dtype is not None else np.dtype(np.float32)
        if affine:
            self.weight = Parameter(to_device(np.ones(num_features, dtype=dtype), device or "cpu"), dtype=dtype)
            self.bias = Parameter(to_device(np.zeros(num_features, dtype=dtype), device or "cpu"), dtype=dtype)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", _buffer(np.zeros(num_features, dtype=dtype), device))
            self.register_buffer("running_var", _buffer(np.ones(num_features, dtype=dtype), device))
            self.register_buffer("num_batches_tracked", _buffer(np.array(0, dtype=np.int64), device))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1
            self.num_batches_tracked.data[...] = 0

    def forward(self, x):
        if x.ndim not in self.expected_dims:
            raise ValueError(f"{type(self).__name__}: expected a {' or '.join(map(str, self.expected_dims))}-D input, "
                             f"got shape {x.shape}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}: input has {x.shape[1]} channels, expected {self.num_features}")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.data[...] += 1
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked.item())
        use_batch_stats = self.training or not self.track_running_stats
        update = not self.training or self.track_running_stats
        return F.batch_norm(x, self.running_mean if update else None, self.running_var if update else None,
                            self.weight, self.bias, training=use_batch_stats, momentum=factor, eps=self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """BatchNorm over (N, C) or (N, C, L): statistics per feature/channel C."""

    expected_dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """BatchNorm over images (N, C, H, W): statistics per channel over N, H and W."""

    expected_dims = (4,)


class LayerNorm(Module):
    """Layer normalisation (Ba et al. 2016): each sample normalised over its last
    len(normalized_shape) axes, then scaled by weight and shifted by bias (both of normalized_shape)."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, device=None, dtype=None):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.normalized_shape, self.eps, self.elementwise_affine = tuple(int(s) for s in shape), eps, elementwise_affine
        dtype = np.dtype(dtype) if dtype is not None else np.dtype(np.float32)
        if elementwise_affine:
            self.weight = Parameter(to_device(np.ones(self.normalized_shape, dtype=dtype), device or "cpu"), dtype=dtype)
            if bias:
                self.bias = Parameter(to_device(np.zeros(self.normalized_shape, dtype=dtype), device or "cpu"), dtype=dtype)
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


# ---------------------------------------------------------------------------- activations and reshaping
class ReLU(Module):
    """max(0, x)."""

    def __init__(self, inplace=False):
        super().__init__()

    def forward(self, x):
        return x.relu()


class LeakyReLU(Module):
    """x if x > 0 else negative_slope * x."""

    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        return x.leaky_relu(self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Tanh(Module):
    def forward(self, x):
        return x.tanh()


class Sigmoid(Module):
    def forward(self, x):
        return x.sigmoid()


class GELU(Module):
    """x * Phi(x) (approximate='tanh' for the tanh formula)."""

    def __init__(self, approximate="none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, x):
        return x.gelu(self.approximate)


class Softmax(Module):
    """softmax along `dim` (default: the last axis; PyTorch asks for it explicitly)."""

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return F.softmax(x, -1 if self.dim is None else self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """log softmax along `dim` (default: the last axis)."""

    def forward(self, x):
        return F.log_softmax(x, -1 if self.dim is None else self.dim)


class Identity(Module):
    """Returns its input (a placeholder, e.g. to remove a layer); ignores any arguments."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


class Flatten(Module):
    """Merge axes start_dim..end_dim into one: (N, C, H, W) -> (N, C*H*W) by default."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return x.flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


# ---------------------------------------------------------------------------- losses as modules
def _weight_buffer(module, name, weight):
    if weight is not None and not isinstance(weight, Tensor):
        weight = Tensor(np.asarray(weight))
    module.register_buffer(name, weight)


class CrossEntropyLoss(Module):
    """-log softmax(logits)[target] (see F.cross_entropy)."""

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__()
        _weight_buffer(self, "weight", weight)
        self.ignore_index, self.reduction, self.label_smoothing = ignore_index, reduction, label_smoothing

    def forward(self, input, target):
        return F.cross_entropy(input, target, self.weight, self.ignore_index, self.reduction, self.label_smoothing)


class NLLLoss(Module):
    """-log_probs[target] (see F.nll_loss)."""

    def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
        super().__init__()
        _weight_buffer(self, "weight", weight)
        self.ignore_index, self.reduction = ignore_index, reduction

    def forward(self, input, target):
        return F.nll_loss(input, target, self.weight, self.ignore_index, self.reduction)


class MSELoss(Module):
    def __init__(self, reduction="mean"):
        super().__init__()
        self.reduction = reduction

    def forward(self, input, target):
        return F.mse_loss(input, target, self.reduction)


class L1Loss(MSELoss):
    def forward(self, input, target):
        return F.l1_loss(input, target, self.reduction)


class BCELoss(Module):
    """Binary cross-entropy on probabilities (see F.binary_cross_entropy)."""

    def __init__(self, weight=None, reduction="mean"):
        super().__init__()
        _weight_buffer(self, "weight", weight)
        self.reduction = reduction

    def forward(self, input, target):
        return F.binary_cross_entropy(input, target, self.weight, self.reduction)


class BCEWithLogitsLoss(Module):
    """Binary cross-entropy on logits, computed stably (see F.binary_cross_entropy_with_logits)."""

    def __init__(self, weight=None, reduction="mean", pos_weight=None):
        super().__init__()
        _weight_buffer(self, "weight", weight)
        _weight_buffer(self, "pos_weight", pos_weight)
        self.reduction = reduction

    def forward(self, input, target):
        return F.binary_cross_entropy_with_logits(input, target, self.weight, self.reduction, self.pos_weight)
