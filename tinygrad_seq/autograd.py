"""tgs.autograd: PyTorch's torch.autograd entry points on top of the engine.

`autograd.Function` is PyTorch's custom-op protocol (static `forward(ctx, ...)` and
`backward(ctx, *grad_outputs)` on Tensors, `ctx.save_for_backward`), carried by one engine
Function node; `autograd.grad` returns gradients instead of accumulating them into `.grad`.
The engine's own ops use the array-level protocol of tensor.Function instead (see the ops package).
"""
from .gradcheck import gradcheck  # noqa: F401 (torch.autograd.gradcheck)
from .tensor import Function as _EngineFunction
from .device import xp_of
from .tensor import Tensor, enable_grad, no_grad  # noqa: F401 (torch.autograd.no_grad, ...)

__all__ = ["Function", "grad", "gradcheck", "no_grad", "enable_grad"]


class _Context:
    """The `ctx` of a custom Function: save_for_backward / saved_tensors plus any attributes."""

    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors

    def mark_non_differentiable(self, *tensors):
        pass


class _CustomNode(_EngineFunction):
    """One engine node running a user's autograd.Function: arrays in and out, Tensors inside."""

    def forward(self, *arrays, user, tensor_slots):
        self.ctx, self.user = _Context(), user
        self.ctx.needs_input_grad = self.needs_input_grad
        args = [Tensor._wrap(a) if is_tensor else a for a, is_tensor in zip(arrays, tensor_slots)]
        with no_grad():
            out = user.forward(self.ctx, *args)
        self.single = not isinstance(out, tuple)
        outs = (out,) if self.single else out
        result = tuple(o.data if isinstance(o, Tensor) else o for o in outs)
        return result[0] if self.single else result

    def backward(self, *grads):
        with no_grad():
            got = self.user.backward(self.ctx, *(Tensor._wrap(g) for g in grads))
        got = got if isinstance(got, tuple) else (got,)
        if len(got) != len(self.needs_input_grad):
            raise RuntimeError(f"{self.user.__name__}.backward returned {len(got)} gradients for "
                               f"{len(self.needs_input_grad)} inputs of forward; return None for the others")
        return tuple(g.data if isinstance(g, Tensor) else g for g in got)


class Function:
    """Subclass with static forward(ctx, *args) and backward(ctx, *grad_outputs), then call
    `MyFunction.apply(*args)`: forward runs without recording, and backward supplies the
    gradient of every input of forward (None where there is none), as in PyTorch."""

    @staticmethod
    def forward(ctx, *args):  # pragma: no cover - abstract
        raise NotImplementedError("an autograd.Function defines forward(ctx, ...)")

    @staticmethod
    def backward(ctx, *grad_outputs):  # pragma: no cover - abstract
        raise NotImplementedError("an autograd.Function defines backward(ctx, ...)")

    @classmethod
    def apply(cls, *args):
        return _CustomNode.apply(*args, user=cls, tensor_slots=tuple(isinstance(a, Tensor) for a in args))


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, allow_unused=False):
    """The gradients of `outputs` with respect to `inputs` (a tuple), leaving every `.grad` as it
    was.  create_graph (gradients of gradients) is not supported by the engine."""
    if create_graph:
        raise NotImplementedError("autograd.grad(create_graph=True): the engine does not differentiate "
                                  "its backward pass; compute higher derivatives by finite differences")
    from .tensor import _run_backward
    outputs = (outputs,) if isinstance(outputs, Tensor) else tuple(outputs)
    inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    if grad_outputs is None or isinstance(grad_outputs, Tensor):
        grad_outputs = (grad_outputs,) * len(outputs) if grad_outputs is None else (grad_outputs,)
    capture = {id(t): [t, None] for t in inputs}
    for k, (out, g) in enumerate(zip(outputs, grad_outputs)):
        if not out.requires_grad:
            raise RuntimeError("autograd.grad: an output does not require grad (built under no_grad?)")
        if g is None:
            if out.numel() != 1:
                raise RuntimeError(f"autograd.grad: an output of shape {out.shape} needs grad_outputs")
            g = xp_of(out.data).ones_like(out.data)
        else:
            g = g.data if isinstance(g, Tensor) else xp_of(out.data).asarray(g, dtype=out.dtype)
        if id(out) in capture:   # d out / d out
            r = capture[id(out)]
            r[1] = g if r[1] is None else r[1] + g
        if out._ctx is not None:
            keep = bool(retain_graph) or k < len(outputs) - 1
            _run_backward(out, g, keep, capture=capture)
    found = tuple(None if r[1] is None else Tensor._wrap(r[1].astype(r[0].dtype, copy=False))
                  for r in (capture[id(t)] for t in inputs))
    if not allow_unused and any(g is None for g in found):
        raise RuntimeError("autograd.grad: one of the inputs was not used to compute the outputs; "
                           "pass allow_unused=True to get None for it")
    return found
