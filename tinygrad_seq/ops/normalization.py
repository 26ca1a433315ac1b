"""Normalization: layer norm (over each sample's features; the `normalization` kernel family)
and batch norm (over the batch, per channel; the backward of standardising, `_normalize_backward`)."""
import math

from ..device import device_of, xp_of
from ..tensor import Function


def _normalize_backward(dxhat, xhat, invstd, axes):
    """Backward of xhat = (x - mean) * invstd where mean and variance are over `axes`:
    dx = invstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))."""
    dx = xhat * (dxhat * xhat).mean(axis=axes, keepdims=True)
    xp_of(dx).subtract(dxhat, dx, out=dx)
    dx -= dxhat.mean(axis=axes, keepdims=True)
    dx *= invstd
    return dx


class LayerNorm(Function):
    """y = (x - mean) / sqrt(var + eps) * w + b, mean and (biased) var over the last `ndim` axes;
    dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * w;  dw = sum(dy * xhat);
    db = sum(dy).  The `normalization` kernel family does both, on x as (rows, n): rows the
    leading axes, n the normalised ones; x, mean and rstd are saved (xhat is recomputed).
    It computes in float32 or float64 (float16 in float32) and returns the dtype the
    arithmetic of x, w and b would."""

    def forward(self, x, weight=None, bias=None, ndim=1, eps=1e-5):
        from ..backend import kernels
        xp = xp_of(x)
        params = [p for p in (weight, bias) if p is not None]
        self.out_dtype = xp.result_type(x, *params)
        compute = xp.float64 if self.out_dtype == xp.float64 else xp.float32
        self.shape = x.shape
        rows, n = math.prod(x.shape[:x.ndim - ndim]), math.prod(x.shape[x.ndim - ndim:])
        x2 = xp.ascontiguousarray(x.reshape(rows, n), dtype=compute)
        w, b = (None if p is None else xp.ascontiguousarray(p.reshape(-1), dtype=compute) for p in (weight, bias))
        self.kernels = kernels("normalization", device_of(x))
        y, mean, rstd = self.kernels.layer_norm_forward(x2, w, b, float(eps))
        self.param_shapes = tuple(None if p is None else p.shape for p in (weight, bias))
        self.save_for_backward(x2, w, mean, rstd)
        return y.reshape(x.shape).astype(self.out_dtype if self.out_dtype.kind == "f" else compute, copy=False)

    def backward(self, dy):
        x2, w, mean, rstd = self.saved
        dy2 = xp_of(dy).ascontiguousarray(dy.reshape(x2.shape), dtype=x2.dtype)
        need_affine = self.needs_input_grad[1] or self.needs_input_grad[2]
        dx, dw, db = self.kernels.layer_norm_backward(dy2, x2, w, mean, rstd, need_affine)
        dx = dx.reshape(self.shape) if self.needs_input_grad[0] else None
        dw = dw.reshape(self.param_shapes[0]) if self.needs_input_grad[1] else None
        db = db.reshape(self.param_shapes[1]) if self.needs_input_grad[2] else None
        return dx, dw, db


class BatchNorm(Function):
    """y = (x - mean) / sqrt(var + eps) * w + b per channel (axis 1), with the mean and the
    biased variance taken over the batch and every spatial axis when `training`, else the
    running statistics.  Training updates the running statistics in place:
    running = (1 - momentum) * running + momentum * batch (the variance unbiased, as PyTorch).

    dx (training) = see _normalize_backward with dxhat = dy * w;  dx (eval) = dy * w * invstd;
    dw = sum(dy * xhat);  db = sum(dy)."""

    def forward(self, x, weight=None, bias=None, running_mean=None, running_var=None, training=True,
                momentum=0.1, eps=1e-5):
        xp = xp_of(x)
        if x.ndim < 2:
            raise ValueError(f"batch_norm: expects (N, C, ...) input, got shape {tuple(x.shape)}")
        axes = (0,) + tuple(range(2, x.ndim))
        channel_shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        if training:
            count = x.size // x.shape[1]
            if count <= 1:
                raise ValueError(f"batch_norm: expected more than 1 value per channel when training, "
                                 f"got input of shape {tuple(x.shape)}")
            mean = x.mean(axis=axes, keepdims=True)
            centred = x - mean
            var = (centred * centred).mean(axis=axes, keepdims=True)
            if running_mean is not None:
                running_mean *= 1 - momentum
                running_mean += momentum * mean.reshape(-1).astype(running_mean.dtype)
                running_var *= 1 - momentum
                running_var += momentum * (var.reshape(-1) * (count / (count - 1))).astype(running_var.dtype)
        else:
            centred = x - running_mean.reshape(channel_shape).astype(x.dtype, copy=False)
            var = running_var.reshape(channel_shape).astype(x.dtype, copy=False)
        invstd = (1.0 / xp.sqrt(var + eps)).astype(x.dtype, copy=False)
        xhat = centred * invstd
        self.axes, self.training, self.channel_shape = axes, training, channel_shape
        self.save_for_backward(xhat, invstd, weight)
        y = xhat * weight.reshape(channel_shape) if weight is not None else xhat
        return y + bias.reshape(channel_shape) if bias is not None else y

    def backward(self, dy):
        xhat, invstd, weight = self.saved
        dx = dw = db = None
        if self.needs_input_grad[0]:
            dxhat = dy * weight.reshape(self.channel_shape) if weight is not None else dy
            dx = _normalize_backward(dxhat, xhat, invstd, self.axes) if self.training else dxhat * invstd
        if self.needs_input_grad[1]:
            dw = (dy * xhat).sum(axis=self.axes)
        if self.needs_input_grad[2]:
            db = dy.sum(axis=self.axes)
        return dx, dw, db
