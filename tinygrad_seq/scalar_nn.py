"""Neuron, Layer and MLP on scalar Values, with micrograd.nn's constructors and behaviour.

Weights are drawn exactly as micrograd draws them (`random.uniform(-1, 1)` per input, bias 0,
in the same order), so after the same `random.seed` both libraries build the same network.
The only difference is inside `Neuron.__call__`: the pre-activation `b + sum_i w_i x_i` is one
fused `Value.dot` node rather than a chain of 2n binary nodes.
"""
import random

from .value import Value


class Module:

    def zero_grad(self):
        for p in self.parameters():
            p.grad = 0.0

    def parameters(self):
        return []


class Neuron(Module):
    """act = b + sum_i w_i x_i, followed by ReLU unless it is a linear (output) neuron."""

    def __init__(self, nin, nonlin=True):
        self.w = [Value(random.uniform(-1, 1)) for _ in range(nin)]
        self.b = Value(0)
        self.nonlin = nonlin

    def __call__(self, x):
        act = Value.dot(self.w, x, start=self.b)
        return act.relu() if self.nonlin else act

    def parameters(self):
        return self.w + [self.b]

    def __repr__(self):
        return f"{'ReLU' if self.nonlin else 'Linear'}Neuron({len(self.w)})"


class Layer(Module):

    def __init__(self, nin, nout, **kwargs):
        self.neurons = [Neuron(nin, **kwargs) for _ in range(nout)]

    def __call__(self, x):
        # plain numbers become leaves once here, not once per neuron
        x = [xi if isinstance(xi, Value) else Value(xi) for xi in x]
        out = [n(x) for n in self.neurons]
        return out[0] if len(out) == 1 else out

    def parameters(self):
        return [p for n in self.neurons for p in n.parameters()]

    def __repr__(self):
        return f"Layer of [{', '.join(str(n) for n in self.neurons)}]"


class MLP(Module):
    """MLP(nin, [h1, h2, ..., nout]): ReLU hidden layers, a linear last layer."""

    def __init__(self, nin, nouts):
        sz = [nin] + nouts
        self.layers = [Layer(sz[i], sz[i + 1], nonlin=i != len(nouts) - 1) for i in range(len(nouts))]

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def parameters(self):
        return [p for layer in self.layers for p in layer.parameters()]

    def __repr__(self):
        return f"MLP of [{', '.join(str(layer) for layer in self.layers)}]"
