"""Optimisers with PyTorch's names, arguments, defaults and update rules.

Each one is its `update(param, grad, state, group)`: a few lines of in-place array arithmetic on
`param.data`, written against the array's own module (NumPy or CuPy), so the same code updates
parameters on the CPU and the GPU.  `state` holds the per-parameter running quantities
(momentum buffers, moment estimates) under PyTorch's names.  Adam's (and AdamW's) update is the
hot one of a language model's step, so it is the `optim` kernel family's `adam_update`
(tinygrad_seq/backend.py; the array code is its reference, kernels/reference/optim.py): one fused
pass over each parameter, on the kernels' thread team where the backend has one.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import numpy as np

from ..backend import kernels
from ..device import device_of, to_device, xp_of
from ..runtime import in_engine_memory
from ..tensor import Tensor, enable_grad, no_grad

__all__ = ["Optimizer", "SGD", "RMSprop", "Adam", "AdamW"]

# What an optimiser takes: Tensors (model.parameters()), or dicts each with 'params' and the
# hyperparameters that differ for that group
Params = Union[Iterable[Tensor], Iterable[Dict[str, Any]]]


class Optimizer:
    """Holds `param_groups` (a list of dicts: 'params' and the hyperparameters, which may differ
    from group to group) and `state` (per parameter).  Subclasses define `update`."""

    def __init__(self, params: Params, defaults: Mapping[str, Any]) -> None:
        self.defaults = dict(defaults)
        self.state = {}
        self.param_groups = []
        if isinstance(params, Tensor):
            raise TypeError("params must be an iterable of Tensors or of dicts, not a single Tensor; "
                            "wrap it in a list")
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list; did the model register its parameters?")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: Dict[str, Any]) -> None:
        group = dict(group)
        params = group["params"]
        group["params"] = [params] if isinstance(params, Tensor) else list(params)
        for p in group["params"]:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimise Tensors, got {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("can't optimise a non-leaf Tensor (one computed from others); "
                                 "optimise the Parameters it came from")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in group["params"]):
            raise ValueError("some parameters appear in more than one parameter group")
        for name, value in self.defaults.items():
            group.setdefault(name, value)
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none or p.grad is None:
                    p.grad = None
                else:
                    p.grad.data[...] = 0

    @no_grad()
    @in_engine_memory
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """One update of every parameter that has a gradient; `closure` re-evaluates the loss."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self.update(p, p.grad.data, self.state.setdefault(p, {}), group)
        return loss

    def update(self, param, grad, state, group):  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ checkpoints
    def _params(self):
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self) -> Dict[str, Any]:
        """{'state': {index: {name: array or number}}, 'param_groups': [{hyperparameters, 'params': [index]}]}
        with parameters numbered in group order, arrays on the host (PyTorch's layout)."""
        index = {id(p): i for i, p in enumerate(self._params())}
        groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [index[id(p)] for p in g["params"]]}
                  for g in self.param_groups]
        state = {index[id(p)]: {k: to_device(v, "cpu").copy() if hasattr(v, "shape") else v for k, v in s.items()}
                 for p, s in self.state.items() if id(p) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a state_dict (from `state_dict()`, possibly through a JSON checkpoint, which
        turns the integer keys into strings and tuples into lists: both are accepted)."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"load_state_dict: the saved state has {len(groups)} parameter groups, "
                             f"this optimiser {len(self.param_groups)}")
        for saved, group in zip(groups, self.param_groups):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"load_state_dict: a saved parameter group has {len(saved['params'])} parameters, "
                                 f"this optimiser's has {len(group['params'])}")
        params = {}
        for saved, group in zip(groups, self.param_groups):
            for key, value in saved.items():
                if key == "params":
                    continue
                group[key] = tuple(value) if isinstance(value, list) else value
            for saved_index, p in zip(saved["params"], group["params"]):
                params[int(saved_index)] = p
        self.state = {}
        for key, values in state_dict["state"].items():
            p = params[int(key)]
            self.state[p] = {name: self._restore(value, p) for name, value in values.items()}

    @staticmethod
    def _restore(value, param):
        if isinstance(value, Tensor):
            value = value.numpy()
        elif hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch.Tensor (not imported here)
            value = value.detach().cpu().numpy()
        if isinstance(value, np.ndarray) and value.ndim > 0:
            value = value.astype(param.dtype, copy=True) if value.dtype.kind == "f" else value.copy()
            return to_device(value, param.device)
        if isinstance(value, (np.ndarray, np.generic)):
            return value.item()
        return value

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines) + "\n)"


def _check(name, value, low=0.0):
    if not value >= low:
        raise ValueError(f"invalid {name}: {value} (must be >= {low})")


class SGD(Optimizer):
    """Stochastic gradient descent, with momentum and (L2) weight decay as PyTorch:
        g = grad + weight_decay * p
        b = momentum * b + (1 - dampening) * g        (b = g on the first step)
        g = g + momentum * b  if nesterov  else  b
        p = p - lr * g
    """

    def __init__(self, params: Params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False) -> None:
        _check("lr", lr), _check("momentum", momentum), _check("weight_decay", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum > 0 and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def update(self, p, grad, state, group):
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * p.data
        momentum = group["momentum"]
        if momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = grad.copy()
            else:
                buf *= momentum
                buf += (1 - group["dampening"]) * grad
            grad = grad + momentum * buf if group["nesterov"] else buf
        p.data -= group["lr"] * grad


class RMSprop(Optimizer):
    """Divide the gradient by a running root-mean-square of recent gradients (Hinton):
        s = alpha * s + (1 - alpha) * g^2
        avg = sqrt(s - gbar^2) + eps  if centered (gbar: running mean of g)  else  sqrt(s) + eps
        p = p - lr * g / avg     (with momentum: b = momentum * b + g / avg;  p = p - lr * b)
    """

    def __init__(self, params: Params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False) -> None:
        _check("lr", lr), _check("alpha", alpha), _check("eps", eps), _check("momentum", momentum)
        _check("weight_decay", weight_decay)
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered))

    def update(self, p, grad, state, group):
        xp = xp_of(p.data)
        if not state:
            state["step"] = 0
            state["square_avg"] = xp.zeros_like(p.data)
            if group["momentum"]:
                state["momentum_buffer"] = xp.zeros_like(p.data)
            if group["centered"]:
                state["grad_avg"] = xp.zeros_like(p.data)
        state["step"] += 1
        alpha = group["alpha"]
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * p.data
        square_avg = state["square_avg"]
        square_avg *= alpha
        square_avg += (1 - alpha) * grad * grad
        if group["centered"]:
            grad_avg = state["grad_avg"]
            grad_avg *= alpha
            grad_avg += (1 - alpha) * grad
            avg = xp.sqrt(square_avg - grad_avg * grad_avg) + group["eps"]
        else:
            avg = xp.sqrt(square_avg) + group["eps"]
        if group["momentum"]:
            buf = state["momentum_buffer"]
            buf *= group["momentum"]
            buf += grad / avg
            p.data -= group["lr"] * buf
        else:
            p.data -= group["lr"] * grad / avg


class Adam(Optimizer):
    """Adaptive moment estimation (Kingma & Ba 2015):
        m = beta1 * m + (1 - beta1) * g          (first moment: momentum)
        v = beta2 * v + (1 - beta2) * g^2        (second moment: RMSprop's scale)
        m_hat = m / (1 - beta1^t),  v_hat = v / (1 - beta2^t)     (bias correction)
        p = p - lr * m_hat / (sqrt(v_hat) + eps)
    weight_decay adds weight_decay * p to g (L2, coupled; see AdamW); amsgrad uses the running
    maximum of v.  Computed by the `optim` kernels' adam_update (kernels/API.md)."""

    decoupled_weight_decay = False

    def __init__(self, params: Params, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False) -> None:
        _check("lr", lr), _check("eps", eps), _check("weight_decay", weight_decay)
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid betas {betas}: each must be in [0, 1)")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad))

    def update(self, p, grad, state, group):
        xp = xp_of(p.data)
        if not state:
            state["step"] = 0
            # C order whatever the parameter's layout: the fused kernels need it
            state["exp_avg"] = xp.zeros(p.data.shape, dtype=p.data.dtype)
            state["exp_avg_sq"] = xp.zeros(p.data.shape, dtype=p.data.dtype)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = xp.zeros(p.data.shape, dtype=p.data.dtype)
        state["step"] += 1
        beta1, beta2 = group["betas"]
        kernels("optim", device_of(p.data)).adam_update(
            p.data, grad, state["exp_avg"], state["exp_avg_sq"], state.get("max_exp_avg_sq"), lr=group["lr"],
            beta1=beta1, beta2=beta2, eps=group["eps"], weight_decay=group["weight_decay"],
            decoupled=self.decoupled_weight_decay, step=state["step"])


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019): p = p * (1 - lr * weight_decay)
    before the Adam step, instead of adding weight_decay * p to the gradient."""

    decoupled_weight_decay = True

    def __init__(self, params: Params, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)
