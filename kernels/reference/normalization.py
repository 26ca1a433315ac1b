"""Layer normalisation over the last axis of a 2-D array, written once against `xp` (NumPy or
CuPy).  The engine folds the leading axes into rows and the normalised axes into n.

For each row x (n,):

    mean = sum(x) / n;   var = sum((x - mean)^2) / n   (biased);   rstd = 1 / sqrt(var + eps)
    xhat = (x - mean) * rstd;   y = xhat * weight + bias   (weight, bias (n,), each optional)

Backward, from x and the saved mean and rstd (xhat is recomputed, not kept):

    g = dy * weight  (dy when there is no weight)
    dx = rstd * (g - mean(g) - xhat * mean(g * xhat))          per row
    dweight = sum_rows(dy * xhat);   dbias = sum_rows(dy)       (when need_affine)

Why a kernel family: the array code makes about eight passes over the activations each way
(the Transformer's five LayerNorms cost ~18 ms of its ~100 ms step); a compiled row loop makes
one or two, with the row in cache.  A NaN or inf in a row makes that whole row NaN (its mean or
variance is NaN); the ValueError messages here are the ones every backend copies.
"""
from tinygrad_seq.device import xp_of


def check_layer_norm_args(x, weight, bias):
    """The shapes and dtypes layer_norm_forward accepts (every backend's messages)."""
    if x.ndim != 2:
        raise ValueError(f"layer_norm: x must be 2-D (rows, n), got shape {tuple(x.shape)}")
    if x.dtype.name not in ("float32", "float64"):
        raise ValueError(f"layer_norm: x must be float32 or float64, got {x.dtype}")
    n = x.shape[1]
    if n == 0:
        raise ValueError("layer_norm: rows of length n = 0 have no mean or variance")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and (tuple(p.shape) != (n,) or p.dtype != x.dtype):
            raise ValueError(f"layer_norm: {name} must be of shape ({n},) and x's dtype {x.dtype}; "
                             f"got {tuple(p.shape)} {p.dtype}")


def check_layer_norm_grad_args(dy, x, weight, mean, rstd):
    """layer_norm_backward's arrays: the forward's x and weight, dy of x's shape, mean and rstd (rows,)."""
    check_layer_norm_args(x, weight, None)
    if tuple(dy.shape) != tuple(x.shape) or dy.dtype != x.dtype:
        raise ValueError(f"layer_norm: dy of shape {tuple(dy.shape)} and dtype {dy.dtype} must have x's "
                         f"shape {tuple(x.shape)} and dtype {x.dtype}")
    rows = x.shape[0]
    for name, a in (("mean", mean), ("rstd", rstd)):
        if tuple(a.shape) != (rows,) or a.dtype != x.dtype:
            raise ValueError(f"layer_norm: {name} must be of shape ({rows},) and x's dtype {x.dtype}; "
                             f"got {tuple(a.shape)} {a.dtype}")


def layer_norm_forward(x, weight, bias, eps):
    """(y, mean, rstd): y (rows, n) as x; mean and rstd (rows,), rstd = 1 / sqrt(var + eps)."""
    check_layer_norm_args(x, weight, bias)
    xp = xp_of(x)
    mean = x.mean(axis=1)
    y = x - mean[:, None]
    var = xp.square(y).mean(axis=1)
    rstd = xp.asarray(1 / xp.sqrt(var + eps), dtype=x.dtype)
    y *= rstd[:, None]
    if weight is not None:
        y *= weight
    if bias is not None:
        y += bias
    return y, mean, rstd


def layer_norm_backward(dy, x, weight, mean, rstd, need_affine):
    """(dx, dweight, dbias): dx (rows, n); dweight, dbias (n,) when need_affine, else None."""
    check_layer_norm_grad_args(dy, x, weight, mean, rstd)
    xhat = (x - mean[:, None]) * rstd[:, None]
    g = dy * weight if weight is not None else dy
    dx = xhat * (g * xhat).mean(axis=1, keepdims=True)
    xp_of(x).subtract(g, dx, out=dx)
    dx -= g.mean(axis=1, keepdims=True)
    dx *= rstd[:, None]
    if not need_affine:
        return dx, None, None
    return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)
