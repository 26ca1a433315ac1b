"""Finite-difference gradient checking in float64 (torch.autograd.gradcheck's idea)."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .tensor import Tensor


class GradcheckError(AssertionError):
    pass


def gradcheck(fn: Callable[..., Any], inputs: Sequence[Any], eps: float = 1e-6, atol: float = 1e-5,
              rtol: float = 1e-3, raise_exception: bool = True, seed: int = 0) -> bool:
    """Compare fn's analytic gradients with central differences, in float64.

    `inputs` is a sequence of Tensors (or arrays); floating ones are copied to float64 and
    checked.  The output may have any shape: it is reduced with fixed random weights, so
    every output element takes part.  Returns True, or raises GradcheckError naming the
    input and the worst element (returns False with raise_exception=False).
    """
    inputs = [x if isinstance(x, Tensor) else Tensor(x, dtype=np.asarray(x).dtype) for x in inputs]
    leaves = [Tensor(x.numpy(), dtype=np.float64, requires_grad=True) if x.dtype.kind == "f"
              else Tensor(x.numpy()) for x in inputs]

    def reduced(*args):
        out = fn(*args)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        total = 0.0
        for i, o in enumerate(outs):
            if o.dtype.kind != "f":
                continue
            weights = np.random.default_rng(seed + i).standard_normal(o.shape)
            total = total + (o * Tensor(weights, dtype=np.float64)).sum()
        return total

    loss = reduced(*leaves)
    loss.backward()
    for k, leaf in enumerate(leaves):
        if not leaf.requires_grad:
            continue
        analytic = leaf.grad.numpy() if leaf.grad is not None else np.zeros(leaf.shape)
        numeric = np.zeros(leaf.shape)
        flat = leaf.data.reshape(-1)
        for j in range(flat.size):
            original = flat[j]
            flat[j] = original + eps
            plus = float(reduced(*[Tensor(l.data.copy(), dtype=l.dtype) for l in leaves]).item())
            flat[j] = original - eps
            minus = float(reduced(*[Tensor(l.data.copy(), dtype=l.dtype) for l in leaves]).item())
            flat[j] = original
            numeric.reshape(-1)[j] = (plus - minus) / (2 * eps)
        bad = ~np.isclose(analytic, numeric, atol=atol, rtol=rtol)
        if bad.any():
            worst = np.unravel_index(np.argmax(np.abs(analytic - numeric)), leaf.shape)
            message = (f"gradcheck: input {k} (shape {leaf.shape}) disagrees at {worst}: "
                       f"analytic {analytic[worst]:.8g} vs numeric {numeric[worst]:.8g} "
                       f"({int(bad.sum())} of {bad.size} elements off)")
            if raise_exception:
                raise GradcheckError(message)
            return False
    return True
