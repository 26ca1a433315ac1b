"""Stateless neural-network functions (torch.nn.functional's names and arguments)."""
from __future__ import annotations

from typing import Optional, Sequence, Union

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
def relu(x: Tensor) -> Tensor:
    return x.relu()


def leaky_relu(x: Tensor, negative_slope: float = 0.01) -> Tensor:
    return x.leaky_relu(negative_slope)


def tanh(x: Tensor) -> Tensor:
    return x.tanh()


def sigmoid(x: Tensor) -> Tensor:
    return x.sigmoid()


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    return x.gelu(approximate)


def softmax(x: Tensor, dim: int = -1, mask: Union[Tensor, np.ndarray, None] = None) -> Tensor:
    """softmax_i = exp(x_i) / sum_j exp(x_j) along `dim`, computed stably.

    `mask` (bool, broadcastable, True = excluded) gives those entries probability 0."""
    if mask is not None:
        mask = mask.data if isinstance(mask, Tensor) else mask
        if dim % x.ndim != x.ndim - 1:
            mask = xp_of(mask).swapaxes(xp_of(mask).broadcast_to(mask, x.shape), dim, -1)
    return _last_dim_op(x, dim, lambda t: ops.Softmax.apply(t, mask=mask))


def log_softmax(x: Tensor, dim: int = -1) -> Tensor:
    """log softmax along `dim`: x - logsumexp(x), computed stably."""
    return _last_dim_op(x, dim, ops.LogSoftmax.apply)


def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
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


def nll_loss(log_probs: Tensor, target: Tensor, weight: Optional[Tensor] = None, ignore_index: int = -100,
             reduction: str = "mean") -> Tensor:
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


def cross_entropy(input: Tensor, target: Tensor, weight: Optional[Tensor] = None, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """-log softmax(input)[target]: logits (N, C) (or (N, C, d...)) and integer targets (N,),
    or class-probability targets of the same shape as input.

    With label smoothing eps the target is (1 - eps) * one_hot + eps / C, which PyTorch (and
    this function) computes as  (1 - eps) * nll  +  eps / C * smooth,  where the per-example
    smooth = -sum_c w_c log p_c (0 for ignored targets) and 'mean' divides it by the same
    denominator as the nll: the summed weights of the targets that are not ignored."""
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    class_dim = 1 if input.ndim > 1 else 0
    classes = input.shape[class_dim]
    logp = log_softmax(input, dim=class_dim)
    xp = xp_of(logp.data)
    w = weight.data if isinstance(weight, Tensor) else weight
    if w is not None:  # shaped to broadcast along the class dimension
        w = xp.asarray(w, dtype=logp.dtype).reshape((classes,) + (1,) * (input.ndim - class_dim - 1))
    if isinstance(target, Tensor) and target.dtype.kind == "f":
        if label_smoothing:
            target = target * (1 - label_smoothing) + label_smoothing / classes
        weighted = logp * target if w is None else logp * target * Tensor._wrap(w)
        losses = -weighted.sum(dim=class_dim)
        return _reduce(losses, reduction)  # 'mean' over the N*d... positions, as PyTorch
    hard = nll_loss(logp, target, weight, ignore_index, reduction)
    if not label_smoothing:
        return hard
    index = target.data if isinstance(target, Tensor) else np.asarray(target)
    kept = index != ignore_index
    smooth = -(logp if w is None else logp * Tensor._wrap(w)).sum(dim=class_dim)
    smooth = smooth * Tensor._wrap(xp.asarray(kept, dtype=logp.dtype))
    if reduction == "mean":
        if w is None:
            denominator = float(kept.sum())
        else:
            denominator = float(xp.asarray(w).reshape(-1)[xp.asarray(index[kept])].sum())
        smooth = smooth.sum() / denominator
    else:
        smooth = _reduce(smooth, reduction)
    return hard * (1 - label_smoothing) + smooth * (label_smoothing / classes)


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """mean((input - target)^2)."""
    diff = input - target
    return _reduce(diff * diff, reduction)


def l1_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    return _reduce((input - target).abs(), reduction)


def binary_cross_entropy(input: Tensor, target: Tensor, weight: Optional[Tensor] = None,
                         reduction: str = "mean") -> Tensor:
    """-(y log p + (1 - y) log(1 - p)) for probabilities p; logs are clamped at -100 like PyTorch."""
    if isinstance(target, Tensor) and target.shape != input.shape:
        raise ValueError(f"binary_cross_entropy: target shape {target.shape} differs from input shape {input.shape}")
    log_p = input.log().clip(min=-100)
    log_q = (1 - input).log().clip(min=-100)
    losses = -(target * log_p + (1 - target) * log_q)
    if weight is not None:
        losses = losses * weight
    return _reduce(losses, reduction)


def binary_cross_entropy_with_logits(input: Tensor, target: Tensor, weight: Optional[Tensor] = None,
                                     reduction: str = "mean", pos_weight: Optional[Tensor] = None) -> Tensor:
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


# ---------------------------------------------------------------------------- layers' functional forms
def linear(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """y = x W^T + b (torch.nn.functional.linear): one fused op, one GEMM per gradient."""
    return ops.Linear.apply(input, weight, bias)


def embedding(input: Tensor, weight: Tensor, padding_idx: Optional[int] = None) -> Tensor:
    """Rows of `weight` (num_embeddings, dim) picked by the integer ids in `input` (any shape)."""
    ids = input.data if isinstance(input, Tensor) else np.asarray(input)
    if padding_idx is not None and padding_idx < 0:
        padding_idx += weight.shape[0]
    return ops.Embedding.apply(weight, ids, padding_idx=padding_idx)


def layer_norm(input: Tensor, normalized_shape: Union[int, Sequence[int]], weight: Optional[Tensor] = None,
               bias: Optional[Tensor] = None, eps: float = 1e-5) -> Tensor:
    """Normalise each sample over its last len(normalized_shape) axes, then scale and shift."""
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if input.shape[input.ndim - len(normalized_shape):] != normalized_shape:
        raise ValueError(f"layer_norm: input of shape {input.shape} does not end in normalized_shape {normalized_shape}")
    return ops.LayerNorm.apply(input, weight, bias, ndim=len(normalized_shape), eps=eps)


def batch_norm(input: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor],
               weight: Optional[Tensor] = None, bias: Optional[Tensor] = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """torch.nn.functional.batch_norm: batch statistics when `training` (updating the running
    statistics in place if given), else the running statistics."""
    rm = running_mean.data if isinstance(running_mean, Tensor) else running_mean
    rv = running_var.data if isinstance(running_var, Tensor) else running_var
    if not training and (rm is None or rv is None):
        raise ValueError("batch_norm: evaluation mode needs running_mean and running_var")
    return ops.BatchNorm.apply(input, weight, bias, running_mean=rm, running_var=rv, training=training,
                               momentum=momentum, eps=eps)


# ---------------------------------------------------------------------------- re-exported from their own modules
# (imported last: those modules use the functions above)
from .attention import scaled_dot_product_attention  # noqa: E402,F401
from .functional_conv import (avg_pool1d, avg_pool2d, conv1d, conv2d, max_pool1d, max_pool2d,  # noqa: E402,F401
                              pad)
