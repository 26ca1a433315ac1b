"""Probabilities and losses: softmax (the attention and output hot path), log-softmax and the
negative log-likelihood that cross-entropy is built from."""
from ..device import xp_of
from ..tensor import Function


def _rows(a):
    """View an array as contiguous (rows, last-axis) for the kernels."""
    xp = xp_of(a)
    return xp.ascontiguousarray(a.reshape(-1, a.shape[-1]))


class Softmax(Function):
    """y = exp(x - max x) / sum exp(x - max x) over the last axis; entries where `mask` is True
    get probability 0 (a fully masked row is all zeros);  dx = y * (dy - sum(dy * y)).

    The row loop is a hot path of attention, so it runs in the `softmax` kernel family."""

    def forward(self, x, mask=None):
        from ..backend import kernels
        from ..device import device_of
        self.kernels = kernels("softmax", device_of(x))
        rows = None
        if mask is not None:
            xp = xp_of(x)
            mask = xp.broadcast_to(xp.asarray(mask, dtype=bool), x.shape)
            # a backend that reads a broadcast mask where it is (cuda) is spared the full-size copy
            compact = getattr(self.kernels, "broadcast_mask_rows", None)
            rows = (compact(mask) if compact else None) or _rows(mask)
        y = self.kernels.softmax_forward(_rows(x), rows)
        self.save_for_backward(y)
        return y.reshape(x.shape)

    def backward(self, dy):
        (y,) = self.saved
        return self.kernels.softmax_backward(_rows(dy), y).reshape(dy.shape)


class LogSoftmax(Function):
    """y = x - max x - log sum exp(x - max x) over the last axis;  dx = dy - exp(y) * sum(dy).

    Every language model's loss starts here (cross_entropy = log_softmax + nll_loss), so the
    row loop runs in the `softmax` kernel family, as ops.Softmax's does."""

    def forward(self, x):
        from ..backend import kernels
        from ..device import device_of
        self.kernels = kernels("softmax", device_of(x))
        y = self.kernels.log_softmax_forward(_rows(x))
        self.save_for_backward(y)
        return y.reshape(x.shape)

    def backward(self, dy):
        (y,) = self.saved
        return self.kernels.log_softmax_backward(_rows(dy), y).reshape(dy.shape)


class NLLLoss(Function):
    """loss = -sum_n w[t_n] * logp[n, t_n] / sum_n w[t_n] (reduction 'mean'), over rows whose
    target is not ignore_index;  dlogp[n, t_n] = -w[t_n] * dloss / normaliser."""

    def forward(self, logp, target, weight=None, ignore_index=-100, reduction="mean"):
        xp = xp_of(logp)
        n, classes = logp.shape
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', not {reduction!r}")
        self.shape, self.reduction = logp.shape, reduction
        if weight is None and n and not 0 <= ignore_index < classes \
                and 0 <= int(target.min()) and int(target.max()) < classes:
            # every row counts with weight 1 (a language model's loss): a third of the array
            # passes the general case below makes over the targets
            self.save_for_backward(target, None)
            self.total = n
            losses = -logp[xp.arange(n), target]
            if reduction == "none":
                return losses
            return losses.sum() / logp.dtype.type(n) if reduction == "mean" else losses.sum()
        keep = target != ignore_index
        safe = xp.where(keep, target, 0)
        if xp.any(keep & ((safe < 0) | (safe >= classes))):
            bad = int(target[keep & ((safe < 0) | (safe >= classes))][0])
            raise IndexError(f"cross_entropy: target {bad} is out of range for {classes} classes")
        w = keep.astype(logp.dtype) if weight is None else xp.where(keep, weight[safe], 0).astype(logp.dtype)
        picked = logp[xp.arange(n), safe]
        losses = -w * picked
        self.save_for_backward(safe, w)
        if reduction == "none":
            return losses
        if reduction == "sum":
            return losses.sum()
        self.total = w.sum()
        return losses.sum() / self.total

    def backward(self, dy):
        xp = xp_of(dy)
        safe, w = self.saved
        dlogp = xp.zeros(self.shape, dtype=dy.dtype)
        scale = -dy if w is None else -w * dy
        if self.reduction == "mean":
            scale = scale / self.total
        dlogp[xp.arange(self.shape[0]), safe] = scale
        return dlogp, None
