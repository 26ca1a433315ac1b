"""Stateless neural-network functions (torch.nn.functional's names and arguments)."""
import math

import numpy as np

from .. import ops
from ..creation import one_hot  # noqa: F401  (re-exported: F.one_hot as in PyTorch)
from ..device import xp_of
from ..random import generator
from ..tensor import Tensor


def _last_dim_op(x, dim, fn):
    """Apply a last-axis op along `dim` by moving that dim last and back."""
    dim %= x.ndim
    if dim == x.ndim - 1:
        return fn(x)
    return fn(x.transpose(dim, -1)).transpose(dim, -1)


# ---------------------------------------------------------------------------- activations
def relu(x):
    return x.relu()


def leaky_relu(x, negative_slope=0.01):
    return x.leaky_relu(negative_slope)


def tanh(x):
    return x.tanh()


def sigmoid(x):
    return x.sigmoid()


def gelu(x, approximate="none"):
    return x.gelu(approximate)


def softmax(x, dim=-1, mask=None):
    """softmax_i = exp(x_i) / sum_j exp(x_j) along `dim`, computed stably.

    `mask` (bool, broadcastable, True = excluded) gives those entries probability 0."""
    if mask is not None:
        mask = mask.data if isinstance(mask, Tensor) else mask
        if dim % x.ndim != x.ndim - 1:
            mask = xp_of(mask).swapaxes(xp_of(mask).broadcast_to(mask, x.shape), dim, -1)
    return _last_dim_op(x, dim, lambda t: ops.Softmax.apply(t, mask=mask))


def log_softmax(x, dim=-1):
    """log softmax along `dim`: x - logsumexp(x), computed stably."""
    return _last_dim_op(x, dim, ops.LogSoftmax.apply)


def dropout(x, p=0.5, training=True):
    """Inverted dropout: keep each unit with probability keep_prob = 1 - p and scale by 1/keep_prob,
    so nothing changes at test time."""
    if not 0 <= p < 1:
        if p == 1 and training:
            return x * 0
        if p != 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0:
        return x
    keep = generator().random(x.shape) >= p
    mask = keep.astype(x.dtype) / (1 - p)
    if x.device == "cuda":
        mask = xp_of(x.data).asarray(mask)
    return x * Tensor._wrap(mask)


# ---------------------------------------------------------------------------- losses
def _reduce(losses, reduction):
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    if reduction == "none":
        return losses
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', not {reduction!r}")


def nll_loss(log_probs, target, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood of integer targets given log-probabilities (N, C) or (N, C, d...)."""
    target = target.data if isinstance(target, Tensor) else np.asarray(target)
    if target.dtype.kind not in "iu":
        raise TypeError(f"nll_loss: targets must be integer class indices, not {target.dtype}")
    if log_probs.ndim > 2:  # (N, C, d1, ...) -> (N*d1*..., C)
        classes = log_probs.shape[1]
        log_probs = log_probs.transpose(1, -1).reshape(-1, classes) if log_probs.ndim == 3 else \
            log_probs.permute(0, *range(2, log_probs.ndim), 1).reshape(-1, classes)
        out_shape = target.shape
        target = target.reshape(-1)
    else:
        out_shape = None
    if log_probs.ndim == 1:
        log_probs, target = log_probs.reshape(1, -1), target.reshape(1)
        out_shape = ()
    if target.shape[0] != log_probs.shape[0]:
        raise ValueError(f"cross_entropy: {log_probs.shape[0]} predictions but {target.shape[0]} targets")
    w = weight.data if isinstance(weight, Tensor) else weight
    loss = ops.NLLLoss.apply(log_probs, target, weight=w, ignore_index=ignore_index, reduction=reduction)
    if reduction == "none" and out_shape is not None:
        loss = loss.reshape(out_shape)
    return loss


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """-log softmax(input)[target]: logits (N, C) (or (N, C, d...)) and integer targets (N,),
    or class-probability targets of the same shape as input."""
    logp = log_softmax(input, dim=1 if input.ndim > 1 else 0)
    if isinstance(target, Tensor) and target.dtype.kind == "f":
        return _reduce(-(logp * target).sum(dim=1 if input.ndim > 1 else 0), reduction)
    if label_smoothing:
        classes = input.shape[1]
        hard = nll_loss(logp, target, weight, ignore_index, reduction)
        uniform = _reduce(-logp.mean(dim=1), reduction)
        return hard * (1 - label_smoothing) + uniform * label_smoothing if classes else hard
    return nll_loss(logp, target, weight, ignore_index, reduction)


def mse_loss(input, target, reduction="mean"):
    """mean((input - target)^2)."""
    diff = input - target
    return _reduce(diff * diff, reduction)


def l1_loss(input, target, reduction="mean"):
    return _reduce((input - target).abs(), reduction)


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    """-(y log p + (1 - y) log(1 - p)) for probabilities p; logs are clamped at -100 like PyTorch."""
    if isinstance(target, Tensor) and target.shape != input.shape:
        raise ValueError(f"binary_cross_entropy: target shape {target.shape} differs from input shape {input.shape}")
    log_p = input.log().clip(min=-100)
    log_q = (1 - input).log().clip(min=-100)
    losses = -(target * log_p + (1 - target) * log_q)
    if weight is not None:
        losses = losses * weight
    return _reduce(losses, reduction)


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    """BCE on logits z, stably: max(z, 0) - z*y + log(1 + e^-|z|)  (with pos_weight as PyTorch)."""
    if isinstance(target, Tensor) and target.shape != input.shape:
        raise ValueError(f"binary_cross_entropy_with_logits: target shape {target.shape} differs from input shape {input.shape}")
    softplus_neg = (1 + (-input.abs()).exp()).log() + (-input).relu()  # log(1 + e^-z)
    if pos_weight is not None:
        losses = (1 - target) * input + (1 + (pos_weight - 1) * target) * softplus_neg
    else:
        losses = (1 - target) * input + softplus_neg
    if weight is not None:
        losses = losses * weight
    return _reduce(losses, reduction)
