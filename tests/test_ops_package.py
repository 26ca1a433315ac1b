"""The ops package is the one home of every differentiable op: no Function subclass lives
elsewhere in the engine, ops.__all__ lists them all, each states its equation, each nn Module
that wraps an op shares its name, and no op keeps an array past its backward outside
save_for_backward."""
import importlib
import pkgutil
import re

import numpy as np
import pytest

import tinygrad_seq
import tinygrad_seq as tgs
import tinygrad_seq.cli
from tinygrad_seq import nn, ops
from tinygrad_seq.autograd import _CustomNode
from tinygrad_seq.tensor import Function

# The node that carries a user's torch-style autograd.Function: the protocol for writing ops
# outside the engine, not an op of the engine.
NOT_OPS = {_CustomNode}


def _engine_modules():
    """Every module of the engine and the CLI (kernels/ is left out: it never imports the graph)."""
    for package in (tinygrad_seq, tinygrad_seq.cli):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            yield importlib.import_module(info.name)


def _function_subclasses():
    list(_engine_modules())
    found, todo = set(), [Function]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in found:
                found.add(sub)
                todo.append(sub)
    return {c for c in found if c.__module__.startswith("tinygrad_seq.") and c not in NOT_OPS}


def test_every_function_subclass_lives_in_the_ops_package():
    strays = sorted(f"{c.__module__}.{c.__qualname__}" for c in _function_subclasses()
                    if not c.__module__.startswith("tinygrad_seq.ops."))
    assert not strays, f"differentiable ops outside tinygrad_seq/ops/: {strays}"


def test_ops_all_lists_every_op_and_only_ops():
    public = {c for c in _function_subclasses() if not c.__name__.startswith("_")}
    assert sorted(ops.__all__) == sorted(c.__name__ for c in public)
    assert len(set(ops.__all__)) == len(ops.__all__)
    for cls in public:
        assert getattr(ops, cls.__name__) is cls


@pytest.mark.parametrize("name", ops.__all__)
def test_every_op_follows_the_naming_rule_and_states_its_equation(name):
    assert not name.endswith(("Function", "Op", "Sequence")), name
    doc = getattr(ops, name).__doc__ or ""
    # the forward's equation and the backward's: 'y = ...;  dx = ...' (dx[...] +=, dW_ih = ...)
    assert "=" in doc and re.search(r"\bd\w+(\[[^\]]*\])?\s*\+?=", doc), \
        f"ops.{name} needs its forward and gradient equations in its docstring, has {doc!r}"


def _randn(*shape):
    return tgs.randn(*shape, requires_grad=True)


# nn Module -> (the op it must run, a call of the module); the op shares the Module's name
# (BatchNorm1d/2d both run ops.BatchNorm)
MODULE_OPS = {
    "Linear": ("Linear", lambda: nn.Linear(3, 2)(_randn(4, 3))),
    "Embedding": ("Embedding", lambda: nn.Embedding(5, 3)(tgs.Tensor(np.array([1, 4, 0])))),
    "LayerNorm": ("LayerNorm", lambda: nn.LayerNorm(3)(_randn(2, 3))),
    "BatchNorm1d": ("BatchNorm", lambda: nn.BatchNorm1d(3)(_randn(4, 3))),
    "ReLU": ("ReLU", lambda: nn.ReLU()(_randn(2, 3))),
    "LeakyReLU": ("LeakyReLU", lambda: nn.LeakyReLU(0.1)(_randn(2, 3))),
    "Tanh": ("Tanh", lambda: nn.Tanh()(_randn(2, 3))),
    "Sigmoid": ("Sigmoid", lambda: nn.Sigmoid()(_randn(2, 3))),
    "GELU": ("GELU", lambda: nn.GELU()(_randn(2, 3))),
    "Softmax": ("Softmax", lambda: nn.Softmax(dim=-1)(_randn(2, 3))),
    "LogSoftmax": ("LogSoftmax", lambda: nn.LogSoftmax(dim=-1)(_randn(2, 3))),
    "NLLLoss": ("NLLLoss", lambda: nn.NLLLoss()(_randn(2, 3), tgs.Tensor(np.array([0, 2])))),
    "Conv2d": ("Conv2d", lambda: nn.Conv2d(1, 2, 3)(_randn(1, 1, 5, 5))),
    "MaxPool2d": ("MaxPool2d", lambda: nn.MaxPool2d(2)(_randn(1, 1, 4, 4))),
    "AvgPool2d": ("AvgPool2d", lambda: nn.AvgPool2d(2)(_randn(1, 1, 4, 4))),
    "RNN": ("RNN", lambda: nn.RNN(3, 4)(_randn(5, 2, 3))[0]),
    "LSTM": ("LSTM", lambda: nn.LSTM(3, 4)(_randn(5, 2, 3))[0]),
    "GRU": ("GRU", lambda: nn.GRU(3, 4)(_randn(5, 2, 3))[0]),
}


@pytest.mark.parametrize("module", sorted(MODULE_OPS))
def test_a_module_runs_the_op_of_its_name(module):
    op, call = MODULE_OPS[module]
    assert type(call()._ctx) is getattr(ops, op)


def _uniform(low, high, *shape):
    return tgs.Tensor(np.random.default_rng(0).uniform(low, high, shape).astype(np.float32), requires_grad=True)


def _op_calls():
    """One call of every op on small inputs that need gradients: name -> () -> output(s)."""
    x, y, inside = _randn(2, 3), _randn(2, 3), _uniform(-0.9, 0.9, 2, 3)
    positive, above_one = _uniform(0.5, 2, 2, 3), _uniform(1.5, 3, 2, 3)
    row, w, b = _randn(1, 3), _randn(3, 4), _randn(4)
    images, filters = _randn(2, 2, 4, 4), _randn(3, 2, 3, 3)
    seq = _randn(4, 2, 3)
    index = np.array([[0, 2], [1, 1]])
    unary = {name: (lambda op: lambda: op.apply(inside))(getattr(ops, name))
             for name in ("Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Atanh", "Rsqrt",
                          "Log1p", "Expm1", "Erf", "Exp", "Abs", "Tanh", "Sigmoid", "ReLU", "GELU", "Neg", "Clone",
                          "Softmax", "LogSoftmax")}

    def recurrence(op, gates, states):
        weights = (_randn(gates * 4, 3), _randn(gates * 4, 4), _randn(gates * 4), _randn(gates * 4))
        return lambda: op.apply(seq, *[_randn(2, 4) for _ in range(states)], *weights)

    return {
        **unary,
        "Add": lambda: ops.Add.apply(x, row), "Sub": lambda: ops.Sub.apply(x, y), "Mul": lambda: ops.Mul.apply(x, y),
        "Div": lambda: ops.Div.apply(x, positive), "Pow": lambda: ops.Pow.apply(x, exponent=3),
        "PowTensor": lambda: ops.PowTensor.apply(positive, y), "Maximum": lambda: ops.Maximum.apply(x, y),
        "Where": lambda: ops.Where.apply(np.array([True, False, True]), x, y),
        "Cast": lambda: ops.Cast.apply(x, dtype=np.dtype(np.float64)),
        "Log": lambda: ops.Log.apply(positive), "Sqrt": lambda: ops.Sqrt.apply(positive),
        "Acosh": lambda: ops.Acosh.apply(above_one), "Clip": lambda: ops.Clip.apply(x, -0.5, 0.5),
        "Step": lambda: ops.Step.apply(x, kind="floor"), "LeakyReLU": lambda: ops.LeakyReLU.apply(x, 0.1),
        "Sum": lambda: ops.Sum.apply(x, axis=1), "Max": lambda: ops.Max.apply(x, axis=1),
        "Prod": lambda: ops.Prod.apply(x, axis=1), "CumSum": lambda: ops.CumSum.apply(x, axis=1),
        "Reshape": lambda: ops.Reshape.apply(x, shape=(3, 2)), "Permute": lambda: ops.Permute.apply(x, dims=(1, 0)),
        "Expand": lambda: ops.Expand.apply(row, shape=(2, 3)),
        "GetItem": lambda: ops.GetItem.apply(x, index=(np.array([0, 1, 1]),)),
        "SetItem": lambda: ops.SetItem.apply(x, row, index=(np.array([1]),)),
        "Concat": lambda: ops.Concat.apply(x, y, axis=0), "Stack": lambda: ops.Stack.apply(x, y, axis=1),
        "Split": lambda: ops.Split.apply(x, sizes=[1, 2], axis=1),
        "Gather": lambda: ops.Gather.apply(x, index, axis=1),
        "ScatterAdd": lambda: ops.ScatterAdd.apply(x, index, y, axis=1),
        "Scatter": lambda: ops.Scatter.apply(x, index, y, axis=1),
        "Pad": lambda: ops.Pad.apply(x, widths=((0, 0), (2, 1)), mode="reflect"),
        "ToDevice": lambda: ops.ToDevice.apply(x, device="cpu"),
        "MatMul": lambda: ops.MatMul.apply(x, w), "Linear": lambda: ops.Linear.apply(x, w.T, b),
        "Einsum": lambda: ops.Einsum.apply(x, w, equation="ij,jk->ik"),
        "Embedding": lambda: ops.Embedding.apply(w, np.array([[0, 2], [2, 1]])),
        "LayerNorm": lambda: ops.LayerNorm.apply(x, row.reshape(3), row.reshape(3)),
        "BatchNorm": lambda: ops.BatchNorm.apply(images, _randn(2), _randn(2), training=True),
        "NLLLoss": lambda: ops.NLLLoss.apply(x, np.array([2, 0])),
        "Conv2d": lambda: ops.Conv2d.apply(images, filters, _randn(3), stride=(1, 1), padding=(1, 1),
                                           dilation=(1, 1)),
        "MaxPool2d": lambda: ops.MaxPool2d.apply(images, kernel_size=(2, 2), stride=(2, 2), padding=(0, 0)),
        "AvgPool2d": lambda: ops.AvgPool2d.apply(images, kernel_size=(2, 2), stride=(2, 2), padding=(0, 0)),
        "RNN": recurrence(ops.RNN, 1, 1), "LSTM": recurrence(ops.LSTM, 4, 2), "GRU": recurrence(ops.GRU, 3, 1),
        "ScaledDotProductAttention": lambda: ops.ScaledDotProductAttention.apply(
            _randn(2, 4, 3), _randn(2, 5, 3), _randn(2, 5, 2), scale=0.5, causal=True),
    }


def _arrays_in(value):
    if isinstance(value, np.ndarray):
        return 1
    if isinstance(value, (tuple, list)):
        return sum(_arrays_in(v) for v in value)
    if isinstance(value, dict):
        return sum(_arrays_in(v) for v in value.values())
    return 0


def test_the_op_calls_cover_every_op():
    assert sorted(_op_calls()) == sorted(ops.__all__)


@pytest.mark.parametrize("name", ops.__all__)
def test_an_op_keeps_no_array_after_its_backward(name):
    """Arrays kept for backward go through save_for_backward, which backward frees: an array in
    any other attribute would outlive the pass (and hold its memory for the graph's lifetime)."""
    out = _op_calls()[name]()
    out = out[0] if isinstance(out, tuple) else out
    node = out._ctx
    assert type(node) is getattr(ops, name)
    out.sum().backward()
    kept = {k: v for k, v in vars(node).items() if k not in ("parents", "edges") and _arrays_in(v)}
    assert not kept, f"ops.{name} keeps arrays outside save_for_backward: {sorted(kept)}"
