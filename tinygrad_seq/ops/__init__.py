"""Everything the engine can differentiate: each op one Function with its forward and its local
backward side by side and its equation in the docstring, written once against `xp` (NumPy or
CuPy, read from the data).  Hot loops go through the kernel registry (`tinygrad_seq.backend`).

Naming rule: an op is named for the function it computes, with no suffix (no ...Function,
...Op, ...Sequence).  Where an nn Module wraps an op, the op carries the Module's name:
`ops.LSTM` is the differentiable function behind `nn.LSTM`, `ops.ReLU` the one behind
`nn.ReLU`, `ops.Conv2d` behind `nn.Conv2d` (and nn.Conv1d, run on one row).

Read top to bottom, the imports below are the table of contents, grouped as the course notes
group the ops; each group is one module of this package.
"""
# elementwise: arithmetic (broadcasting), the unary functions of maths, activations
from .elementwise import (Add, Sub, Mul, Div, Neg, Pow, PowTensor, Maximum, Where, Cast, Clone,
                          Exp, Log, Sqrt, Abs, Clip, Sin, Cos, Tan, Asin, Acos, Atan, Sinh, Cosh, Asinh, Acosh,
                          Atanh, Rsqrt, Log1p, Expm1, Erf, Step,
                          Tanh, Sigmoid, ReLU, LeakyReLU, GELU)
# reductions along axes
from .reduction import Sum, Max, Prod, CumSum
# movement and indexing: views, indexing and assignment, joining, gather/scatter, padding, devices
from .movement import (Reshape, Permute, Expand, GetItem, SetItem, Concat, Split, Stack, Gather, ScatterAdd, Scatter,
                       Pad, ToDevice)
# matrix products: matmul, the linear layer, einsum, the embedding lookup
from .linear import MatMul, Linear, Einsum, Embedding
# normalization over features (layer) or over the batch (batch)
from .normalization import LayerNorm, BatchNorm
# probabilities and losses
from .loss import Softmax, LogSoftmax, NLLLoss
# convolution and pooling over (N, C, H, W)
from .convolution import Conv2d, MaxPool2d, AvgPool2d
# recurrence: one op per layer and direction for the whole time loop
from .recurrence import RNN, LSTM, GRU
# attention: softmax(scale q k^T) v as one op, its scores kept inside the kernel
from .attention import ScaledDotProductAttention
# the two building blocks other modules name: the one place matrices are multiplied, and the
# maker of a unary elementwise op from its formula and its derivative
from .linear import matmul_rows
from .elementwise import unary

__all__ = [
    # elementwise
    "Add", "Sub", "Mul", "Div", "Neg", "Pow", "PowTensor", "Maximum", "Where", "Cast", "Clone",
    "Exp", "Log", "Sqrt", "Abs", "Clip", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh",
    "Acosh", "Atanh", "Rsqrt", "Log1p", "Expm1", "Erf", "Step",
    "Tanh", "Sigmoid", "ReLU", "LeakyReLU", "GELU",
    # reduction
    "Sum", "Max", "Prod", "CumSum",
    # movement
    "Reshape", "Permute", "Expand", "GetItem", "SetItem", "Concat", "Split", "Stack", "Gather", "ScatterAdd", "Scatter",
    "Pad", "ToDevice",
    # linear
    "MatMul", "Linear", "Einsum", "Embedding",
    # normalization
    "LayerNorm", "BatchNorm",
    # loss
    "Softmax", "LogSoftmax", "NLLLoss",
    # convolution
    "Conv2d", "MaxPool2d", "AvgPool2d",
    # recurrence
    "RNN", "LSTM", "GRU",
    # attention
    "ScaledDotProductAttention",
]
