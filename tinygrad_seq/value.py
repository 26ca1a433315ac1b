"""A scalar reverse-mode autodiff engine in the spirit of micrograd.

Every `Value` holds one number (`data`), the derivative of the final output with respect to
it (`grad`), the nodes it was computed from (`_prev`) and the op that made it (`_op`).

The one change from micrograd is *how* the backward pass is stored.  micrograd gives every
node a `_backward` closure; here each op computes its local derivatives d(out)/d(child) in
the forward pass, right next to the forward formula, and stores them in `_local`, aligned
with `_prev`.  The backward pass is then one generic chain-rule loop,

    child.grad += local * out.grad        for every (child, local) of every node,

which needs no closures (so no reference cycles for the garbage collector to chase) and is
several times faster.  Ops that would otherwise build long chains of binary nodes, a sum or
a dot product, are single n-ary nodes (`Value.sum`, `Value.dot`), and `backward()` walks the
graph with an explicit stack, so arbitrarily deep graphs work without touching Python's
recursion limit.

    >>> a = Value(2.0); b = a * 3 + a ** 2; b.backward(); a.grad
    7.0
"""
import math
import numbers
from operator import mul


def _as_float(data):
    """`data` as a Python float; anything that is not a real number is a TypeError."""
    if isinstance(data, numbers.Real):  # int, float, bool, numpy scalars
        return float(data)
    raise TypeError(f"Value holds a real number, got {type(data).__name__}: {data!r}")


def _as_value(x):
    """`x` itself if it is a Value, else a constant leaf holding it."""
    return x if isinstance(x, Value) else Value(x)


def _pow_with_derivatives(base, exponent):
    """base**exponent with d/dbase = exponent * base**(exponent-1) and d/dexponent = base**exponent * ln(base).

    Raises ValueError where the real power is undefined (0 to a negative power, a negative
    base to a fractional power).  Where one of the derivatives is undefined but the value
    is not, the derivative is inf or nan, as in PyTorch: d/dexponent needs ln(base), so it
    is nan for a negative base (and 0 for base 0, where base**exponent is constant 0).
    """
    if base == 0.0 and exponent < 0.0:
        raise ValueError(f"0 raised to the negative power {exponent!r} is undefined")
    if base < 0.0 and not float(exponent).is_integer():
        raise ValueError(f"negative base {base!r} raised to the fractional power {exponent!r} is not real")
    out = base ** exponent
    if exponent == 0.0:
        d_base = 0.0
    elif base == 0.0 and exponent < 1.0:
        d_base = math.inf  # e.g. sqrt has an infinite slope at 0
    else:
        d_base = exponent * base ** (exponent - 1.0)
    if base > 0.0:
        d_exponent = out * math.log(base)
    elif base == 0.0:
        d_exponent = 0.0
    else:
        d_exponent = math.nan
    return out, d_base, d_exponent


class Value:
    """A scalar in a computation graph, with its gradient.

    data   -- the number (always a Python float)
    grad   -- d(root)/d(self) after root.backward(); starts at 0
    _prev  -- the Values this one was computed from (a tuple; may repeat, as in a*a)
    _op    -- the op that produced it ('' for leaves), for printing and graph drawing
    _local -- d(self)/d(child) for each child in _prev, filled in by the forward pass
    label  -- an optional name, used by to_dot()
    """

    __slots__ = ("data", "grad", "_prev", "_op", "_local", "label")

    def __init__(self, data, _children=(), _op="", label="", _local=()):
        self.data = data if type(data) is float else _as_float(data)
        self.grad = 0.0
        self._prev = _children
        self._op = _op
        self._local = _local
        self.label = label

    # ---- arithmetic -----------------------------------------------------------------------
    # Each op returns NotImplemented for operand types it does not understand, so Python
    # raises its usual "unsupported operand type(s)" TypeError.

    def __add__(self, other):
        """out = a + b;  dout/da = 1, dout/db = 1"""
        if not isinstance(other, Value):
            if not isinstance(other, numbers.Real):
                return NotImplemented
            other = Value(other)
        return Value(self.data + other.data, (self, other), "+", "", (1.0, 1.0))

    def __sub__(self, other):
        """out = a - b;  dout/da = 1, dout/db = -1"""
        if not isinstance(other, Value):
            if not isinstance(other, numbers.Real):
                return NotImplemented
            other = Value(other)
        return Value(self.data - other.data, (self, other), "-", "", (1.0, -1.0))

    def __mul__(self, other):
        """out = a * b;  dout/da = b, dout/db = a"""
        if not isinstance(other, Value):
            if not isinstance(other, numbers.Real):
                return NotImplemented
            other = Value(other)
        return Value(self.data * other.data, (self, other), "*", "", (other.data, self.data))

    def __truediv__(self, other):
        """out = a / b;  dout/da = 1/b, dout/db = -a/b^2"""
        if not isinstance(other, Value):
            if not isinstance(other, numbers.Real):
                return NotImplemented
            other = Value(other)
        if other.data == 0.0:
            raise ZeroDivisionError(f"division by zero: {self!r} / {other!r}")
        inv = 1.0 / other.data
        return Value(self.data * inv, (self, other), "/", "", (inv, -self.data * inv * inv))

    def __pow__(self, exponent):
        """out = a ** n            (number n):  dout/da = n a^(n-1)
           out = a ** b            (Value b):   dout/da = b a^(b-1),  dout/db = a^b ln(a)"""
        if isinstance(exponent, Value):
            out, d_base, d_exponent = _pow_with_derivatives(self.data, exponent.data)
            return Value(out, (self, exponent), "**", "", (d_base, d_exponent))
        if not isinstance(exponent, numbers.Real):
            return NotImplemented
        out, d_base, _ = _pow_with_derivatives(self.data, float(exponent))
        return Value(out, (self,), f"**{exponent}", "", (d_base,))

    def __neg__(self):
        """out = -a;  dout/da = -1"""
        return Value(-self.data, (self,), "neg", "", (-1.0,))

    # reflected ops: `number (op) Value`; the number becomes a constant leaf, like micrograd

    def __radd__(self, other):  # other + self
        if not isinstance(other, numbers.Real):
            return NotImplemented
        return Value(other) + self

    def __rsub__(self, other):  # other - self
        if not isinstance(other, numbers.Real):
            return NotImplemented
        return Value(other) - self

    def __rmul__(self, other):  # other * self
        if not isinstance(other, numbers.Real):
            return NotImplemented
        return Value(other) * self

    def __rtruediv__(self, other):  # other / self
        if not isinstance(other, numbers.Real):
            return NotImplemented
        return Value(other) / self

    def __rpow__(self, base):
        """out = c ** a  (number c);  dout/da = c^a ln(c)"""
        if not isinstance(base, numbers.Real):
            return NotImplemented
        out, _, d_exponent = _pow_with_derivatives(float(base), self.data)
        return Value(out, (self,), f"{base}**", "", (d_exponent,))

    # ---- elementary functions -------------------------------------------------------------

    def exp(self):
        """out = e^a;  dout/da = e^a"""
        out = math.exp(self.data)
        return Value(out, (self,), "exp", "", (out,))

    def log(self):
        """out = ln(a);  dout/da = 1/a   (a > 0)"""
        if self.data <= 0.0:
            raise ValueError(f"log is only defined for positive numbers, got {self!r}")
        return Value(math.log(self.data), (self,), "log", "", (1.0 / self.data,))

    def tanh(self):
        """out = tanh(a);  dout/da = 1 - tanh(a)^2"""
        t = math.tanh(self.data)
        return Value(t, (self,), "tanh", "", (1.0 - t * t,))

    def sigmoid(self):
        """out = s(a) = 1 / (1 + e^-a);  dout/da = s(a) (1 - s(a))"""
        x = self.data
        if x >= 0.0:
            s = 1.0 / (1.0 + math.exp(-x))
        else:  # same value, written so that exp cannot overflow for very negative x
            e = math.exp(x)
            s = e / (1.0 + e)
        return Value(s, (self,), "sigmoid", "", (s * (1.0 - s),))

    def relu(self):
        """out = max(0, a);  dout/da = 1 if a > 0 else 0"""
        x = self.data
        if x > 0.0:
            return Value(x, (self,), "ReLU", "", (1.0,))
        return Value(0.0, (self,), "ReLU", "", (0.0,))

    def leaky_relu(self, negative_slope=0.01):
        """out = a if a > 0 else slope * a;  dout/da = 1 if a > 0 else slope"""
        x = self.data
        if x > 0.0:
            return Value(x, (self,), "LeakyReLU", "", (1.0,))
        return Value(negative_slope * x, (self,), "LeakyReLU", "", (float(negative_slope),))

    # ---- fused n-ary nodes ----------------------------------------------------------------
    # One node for a whole sum or dot product instead of a chain of 2n binary nodes: fewer
    # objects in the forward pass, fewer nodes to sort and visit in the backward pass.

    @staticmethod
    def sum(values, start=0.0):
        """out = start + sum_i v_i;  dout/dv_i = 1 (and dout/dstart = 1 if start is a Value)"""
        values = [_as_value(v) for v in values]
        if isinstance(start, Value):
            values.insert(0, start)
            start = 0.0
        data = sum([v.data for v in values], _as_float(start))
        return Value(data, tuple(values), "sum", "", (1.0,) * len(values))

    @staticmethod
    def dot(ws, xs, start=0.0):
        """out = start + sum_i w_i x_i;  dout/dw_i = x_i, dout/dx_i = w_i (dout/dstart = 1)

        A neuron's pre-activation `b + w.x` is `Value.dot(w, x, start=b)`: one node.
        """
        ws, xs = tuple(ws), tuple(xs)
        if len(ws) != len(xs):
            raise ValueError(f"dot needs two sequences of equal length, got {len(ws)} and {len(xs)}")
        # plain numbers become constant leaves; tested by type, not by a `.data` attribute,
        # which NumPy scalars have too (a memoryview of their bytes)
        if not (all(isinstance(w, Value) for w in ws) and all(isinstance(x, Value) for x in xs)):
            ws, xs = tuple(map(_as_value, ws)), tuple(map(_as_value, xs))
        w_data = [w.data for w in ws]
        x_data = [x.data for x in xs]
        # summed left to right from `start`, the order of micrograd's sum(w*x for ..., b)
        if isinstance(start, Value):
            data = sum(map(mul, w_data, x_data), start.data)
            return Value(data, ws + xs + (start,), "dot", "", (*x_data, *w_data, 1.0))
        data = sum(map(mul, w_data, x_data), _as_float(start))
        return Value(data, ws + xs, "dot", "", (*x_data, *w_data))

    # ---- backward pass --------------------------------------------------------------------

    def _topological_order(self, include_leaves=False):
        """Every node this one depends on, each after all of its children (and self last).

        A depth-first post-order, like micrograd's recursive build_topo, but with an explicit
        stack whose entries remember how far through their children they have got, so a
        chain of a million nodes needs no recursion.  Leaves (no _prev) have nothing to
        propagate, so the backward pass leaves them out unless asked for them.
        """
        order = []
        visited = {self}
        stack = [(self, iter(self._prev))]
        while stack:
            node, children = stack[-1]
            for child in children:
                if child not in visited and (include_leaves or child._prev):
                    visited.add(child)
                    stack.append((child, iter(child._prev)))
                    break
            else:  # every child is done: node can go
                stack.pop()
                order.append(node)
        return order

    def backward(self):
        """Fill in .grad = d(self)/d(node) for every node of the graph (chain rule, in reverse topological order).

        Like micrograd, gradients accumulate: call zero_grad() on parameters between steps.
        """
        self.grad = 1.0
        for node in reversed(self._topological_order()):
            g = node.grad
            for child, local in zip(node._prev, node._local):
                child.grad += local * g

    # ---- inspection -----------------------------------------------------------------------

    def __repr__(self):
        return f"Value(data={self.data}, grad={self.grad})"

    def to_dot(self, rankdir="LR"):
        """The graph that produced this Value as Graphviz DOT text (render with `dot -Tsvg`).

        Each Value is a record node `{ label | data ... | grad ... }` named v0, v1, ...; each
        op is a small node named op0, op1, ... with edges child -> op -> result.
        """
        nodes = self._topological_order(include_leaves=True)
        name = {node: f"v{i}" for i, node in enumerate(nodes)}
        lines = ["digraph G {", f"  rankdir={rankdir};"]
        for node in nodes:
            fields = [_dot_escape(node.label)] if node.label else []
            fields += [f"data {node.data:.4f}", f"grad {node.grad:.4f}"]
            lines.append(f'  {name[node]} [shape=record, label="{{ {" | ".join(fields)} }}"];')
        op_count = 0
        for node in nodes:
            if not node._prev:
                continue
            op = f"op{op_count}"
            op_count += 1
            lines.append(f'  {op} [shape=ellipse, label="{_dot_escape(node._op)}"];')
            lines.extend(f"  {name[child]} -> {op};" for child in node._prev)
            lines.append(f"  {op} -> {name[node]};")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def draw(self, path, rankdir="LR"):
        """Draw this graph (to_dot's) to `path`, as SVG, PNG or PDF by its extension, with
        Graphviz's `dot` program; returns the path.  Without `dot` on PATH it raises
        tinygrad_seq.viz.GraphvizNotFoundError saying how to install it."""
        from .viz import render   # viz builds on this module, so it comes in late
        return render(self.to_dot(rankdir), path)


def _dot_escape(text):
    """Escape what DOT record labels treat specially: quotes, backslashes, braces, |, <, >."""
    return "".join("\\" + ch if ch in '\\"{}|<>' else ch for ch in str(text))
