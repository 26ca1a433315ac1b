"""The scalar engine: every op's gradient against finite differences and PyTorch, the micrograd
README example, deep graphs, DOT export, the MLP against micrograd, and error messages."""
import math
import random
import re
import sys

import pytest

from tinygrad_seq.scalar_nn import MLP, Layer, Neuron
from tinygrad_seq.value import Value

try:  # PyTorch is the reference for the torch comparisons only
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None

# name -> (function of Values, the same function on torch tensors, input points)
UNARY_OPS = {
    "neg": (lambda a: -a, lambda a: -a, [1.3, -0.7]),
    "exp": (lambda a: a.exp(), lambda a: a.exp(), [0.4, -2.1]),
    "log": (lambda a: a.log(), lambda a: a.log(), [0.3, 4.2]),
    "tanh": (lambda a: a.tanh(), lambda a: a.tanh(), [0.5, -1.7]),
    "sigmoid": (lambda a: a.sigmoid(), lambda a: a.sigmoid(), [0.8, -3.5, -40.0]),
    "relu": (lambda a: a.relu(), lambda a: a.relu(), [1.2, -0.4]),
    "leaky_relu": (lambda a: a.leaky_relu(), lambda a: F.leaky_relu(a, 0.01), [1.2, -0.4]),
    "leaky_relu_slope": (lambda a: a.leaky_relu(negative_slope=0.2), lambda a: F.leaky_relu(a, 0.2), [0.9, -2.5]),
    "pow_int": (lambda a: a**3, lambda a: a**3, [1.5, -0.8]),
    "pow_negative": (lambda a: a**-1.5, lambda a: a**-1.5, [0.7, 2.2]),
    "pow_half": (lambda a: a**0.5, lambda a: a**0.5, [0.7, 2.2]),
    "radd": (lambda a: 2.5 + a, lambda a: 2.5 + a, [0.3]),
    "rsub": (lambda a: 2.5 - a, lambda a: 2.5 - a, [0.3]),
    "rmul": (lambda a: 2.5 * a, lambda a: 2.5 * a, [0.3]),
    "rtruediv": (lambda a: 2.5 / a, lambda a: 2.5 / a, [0.3, -1.9]),
    "rpow": (lambda a: 2.5**a, lambda a: 2.5**a, [0.3, -1.9]),
    "add_number": (lambda a: a + 4, lambda a: a + 4, [0.3]),
    "sub_number": (lambda a: a - 4, lambda a: a - 4, [0.3]),
    "mul_number": (lambda a: a * -4, lambda a: a * -4, [0.3]),
    "div_number": (lambda a: a / -4, lambda a: a / -4, [0.3]),
}
BINARY_OPS = {
    "add": (lambda a, b: a + b, lambda a, b: a + b, [(0.3, -1.2)]),
    "sub": (lambda a, b: a - b, lambda a, b: a - b, [(0.3, -1.2)]),
    "mul": (lambda a, b: a * b, lambda a, b: a * b, [(0.3, -1.2)]),
    "truediv": (lambda a, b: a / b, lambda a, b: a / b, [(0.3, -1.2)]),
    "pow_value": (lambda a, b: a**b, lambda a, b: a**b, [(1.7, -0.6), (0.4, 2.3)]),
    "self_mul": (lambda a, b: a * a * b, lambda a, b: a * a * b, [(0.3, -1.2)]),
    "composite": (lambda a, b: (a * b + a.exp()).tanh() / (b**2 + 1),
                  lambda a, b: (a * b + a.exp()).tanh() / (b**2 + 1), [(0.3, -1.2)]),
}
# n-ary fused nodes take a list of inputs
NARY_OPS = {
    "sum": (lambda v: Value.sum(v), lambda v: sum(v), [0.3, -1.2, 2.0]),
    "sum_start_value": (lambda v: Value.sum(v[1:], start=v[0]), lambda v: sum(v[1:], v[0]), [0.3, -1.2, 2.0]),
    "sum_start_number": (lambda v: Value.sum(v, start=1.5), lambda v: sum(v, 1.5), [0.3, -1.2]),
    "dot": (lambda v: Value.dot(v[:2], v[2:]), lambda v: v[0] * v[2] + v[1] * v[3], [0.3, -1.2, 2.0, 0.7]),
    "dot_start_value": (lambda v: Value.dot(v[:2], v[2:4], start=v[4]),
                        lambda v: v[4] + v[0] * v[2] + v[1] * v[3], [0.3, -1.2, 2.0, 0.7, -0.5]),
    "dot_self": (lambda v: Value.dot(v, v), lambda v: sum(x * x for x in v), [0.3, -1.2]),
    "dot_mixed_numbers": (lambda v: Value.dot([v[0], 2.0], [3.0, v[1]]), lambda v: v[0] * 3.0 + 2.0 * v[1], [0.3, -1.2]),
}


def cases():
    for name, (ours, theirs, points) in UNARY_OPS.items():
        for x in points:
            yield pytest.param(lambda v, f=ours: f(v[0]), lambda v, f=theirs: f(v[0]), [x], id=f"{name}({x})")
    for name, (ours, theirs, points) in BINARY_OPS.items():
        for xs in points:
            yield pytest.param(lambda v, f=ours: f(*v), lambda v, f=theirs: f(*v), list(xs), id=f"{name}{xs}")
    for name, (ours, theirs, xs) in NARY_OPS.items():
        yield pytest.param(ours, theirs, xs, id=name)


def value_and_grads(fn, xs):
    inputs = [Value(x) for x in xs]
    out = fn(inputs)
    out.backward()
    return out.data, [v.grad for v in inputs]


@pytest.mark.parametrize("fn, torch_fn, xs", list(cases()))
def test_gradient_matches_finite_differences(fn, torch_fn, xs):
    _, grads = value_and_grads(fn, xs)
    h = 1e-6
    for i in range(len(xs)):
        up, down = list(xs), list(xs)
        up[i] += h
        down[i] -= h
        numeric = (fn([Value(x) for x in up]).data - fn([Value(x) for x in down]).data) / (2 * h)
        assert grads[i] == pytest.approx(numeric, rel=1e-6, abs=1e-8), f"input {i}"


@pytest.mark.parametrize("fn, torch_fn, xs", list(cases()))
def test_value_and_gradient_match_torch(fn, torch_fn, xs):
    if torch is None:
        pytest.skip("PyTorch (optional reference dependency) is not installed")
    data, grads = value_and_grads(fn, xs)
    inputs = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in xs]
    out = torch_fn(inputs)
    out.backward()
    assert data == pytest.approx(out.item(), rel=1e-12, abs=1e-14)
    for ours, t in zip(grads, inputs):
        assert ours == pytest.approx(t.grad.item(), rel=1e-12, abs=1e-14)


def test_micrograd_readme_example():
    a = Value(-4.0)
    b = Value(2.0)
    c = a + b
    d = a * b + b**3
    c += c + 1
    c += 1 + c + (-a)
    d += d * 2 + (b + a).relu()
    d += 3 * d + (b - a).relu()
    e = c - d
    f = e**2
    g = f / 2.0
    g += 10.0 / f
    assert g.data == pytest.approx(24.7041, abs=1e-4)
    g.backward()
    assert a.grad == pytest.approx(138.8338, abs=1e-4)
    assert b.grad == pytest.approx(645.5773, abs=1e-4)


def test_micrograd_attributes_and_exercise():
    a = Value(2.0)
    b = a * 3 + a**2
    b.backward()
    assert a.grad == 3 + 2 * 2.0
    assert b._op == "+" and len(b._prev) == 2
    assert any(a in child._prev for child in b._prev)
    assert repr(Value(1.5)) == "Value(data=1.5, grad=0.0)"


def test_reused_node_accumulates_gradient():
    a = Value(3.0)
    out = a + a * a  # d/da = 1 + 2a
    out.backward()
    assert a.grad == 7.0


def test_deep_chain_of_100000_nodes_does_not_recurse():
    x = Value(1.0)
    y = x
    for _ in range(100_000):
        y = y * 1.00001  # 100,000 '*' nodes in one chain
    limit = sys.getrecursionlimit()
    y.backward()
    assert sys.getrecursionlimit() == limit
    assert x.grad == pytest.approx(1.00001**100_000, rel=1e-9)
    assert y.data == pytest.approx(1.00001**100_000, rel=1e-9)


def test_to_dot_lists_values_ops_and_edges():
    a = Value(2.0, label="a")
    b = Value(-3.0, label="b")
    c = a * b
    c.label = "c"
    d = c.relu()
    d.label = "d"
    d.backward()
    text = d.to_dot()
    assert text.startswith("digraph") and text.rstrip().endswith("}")

    values = {}  # label -> (node name, data, grad)
    for name, label, data, grad in re.findall(
            r'(v\d+) \[shape=record, label="\{ (\w+) \| data (\S+) \| grad (\S+) \}"\];', text):
        values[label] = (name, float(data), float(grad))
    ops = dict(re.findall(r'(op\d+) \[shape=ellipse, label="([^"]*)"\];', text))
    edges = re.findall(r"(\w+) -> (\w+);", text)

    assert values == {"a": (values["a"][0], 2.0, 0.0), "b": (values["b"][0], -3.0, 0.0),
                      "c": (values["c"][0], -6.0, 0.0), "d": (values["d"][0], 0.0, 1.0)}
    assert sorted(ops.values()) == ["*", "ReLU"]
    mul_op = next(name for name, op in ops.items() if op == "*")
    relu_op = next(name for name, op in ops.items() if op == "ReLU")
    name = {label: v[0] for label, v in values.items()}
    assert sorted(edges) == sorted([(name["a"], mul_op), (name["b"], mul_op), (mul_op, name["c"]),
                                    (name["c"], relu_op), (relu_op, name["d"])])


def test_to_dot_escapes_record_characters():
    a = Value(1.0, label='x{1}|"y"')
    text = (a * 2).to_dot()
    assert 'x\\{1\\}\\|\\"y\\"' in text


def moons(n):
    from sklearn.datasets import make_moons
    X, y = make_moons(n_samples=n, noise=0.1, random_state=0)
    return X.tolist(), (y * 2 - 1).tolist()


def svm_loss(model, X, y, alpha=1e-4):
    """micrograd's demo loss: mean_i relu(1 - y_i score_i) + alpha * sum_p p^2"""
    scores = [model(x) for x in X]
    data_loss = Value.sum([(1 + -yi * si).relu() for yi, si in zip(y, scores)]) * (1.0 / len(y))
    params = model.parameters()
    return data_loss + alpha * Value.dot(params, params)


def test_mlp_training_reduces_loss():
    random.seed(0)
    X, y = moons(30)
    model = MLP(2, [8, 8, 1])
    losses = []
    for _ in range(8):
        loss = svm_loss(model, X, y)
        model.zero_grad()
        loss.backward()
        for p in model.parameters():
            p.data -= 0.5 * p.grad
        losses.append(loss.data)
    assert losses[-1] < 0.7 * losses[0]


def test_mlp_matches_micrograd_on_identical_weights():
    mg_nn = pytest.importorskip("micrograd.nn", reason="micrograd 0.1.0 (test extra) is the reference")
    mg_engine = pytest.importorskip("micrograd.engine")
    random.seed(1)
    theirs = mg_nn.MLP(2, [4, 4, 1])
    random.seed(1)
    ours = MLP(2, [4, 4, 1])  # same draws in the same order -> same weights
    assert [p.data for p in ours.parameters()] == [p.data for p in theirs.parameters()]
    for p in ours.parameters():  # move the biases off 0 so that their gradients matter
        p.data += 0.1
    for p in theirs.parameters():
        p.data += 0.1

    X, y = moons(10)
    ours_loss = svm_loss(ours, X, y)
    scores = [theirs(list(map(mg_engine.Value, x))) for x in X]
    losses = [(1 + -yi * si).relu() for yi, si in zip(y, scores)]
    theirs_loss = sum(losses) * (1.0 / len(losses)) + 1e-4 * sum(p * p for p in theirs.parameters())
    ours_loss.backward()
    theirs_loss.backward()
    assert ours_loss.data == pytest.approx(theirs_loss.data, abs=1e-12)
    ours_grads = [p.grad for p in ours.parameters()]
    theirs_grads = [p.grad for p in theirs.parameters()]
    assert any(g != 0 for g in ours_grads)
    assert ours_grads == pytest.approx(theirs_grads, abs=1e-12)


def test_module_api():
    random.seed(0)
    model = MLP(3, [4, 2])
    assert len(model.parameters()) == 4 * (3 + 1) + 2 * (4 + 1)
    assert [n.nonlin for layer in model.layers for n in layer.neurons] == [True] * 4 + [False] * 2
    out = model([1.0, -2.0, 0.5])  # plain numbers are accepted as inputs
    assert len(out) == 2 and all(isinstance(o, Value) for o in out)
    (out[0] + out[1]).backward()
    assert any(p.grad != 0 for p in model.parameters())
    model.zero_grad()
    assert all(p.grad == 0 for p in model.parameters())
    assert isinstance(Layer(2, 1)([1.0, 2.0]), Value)  # one neuron: a Value, not a list
    assert repr(Neuron(3, nonlin=False)) == "LinearNeuron(3)"


def test_log_of_non_positive_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match=r"log.*-2\.5"):
        Value(-2.5).log()
    with pytest.raises(ValueError, match=r"log.*0\.0"):
        Value(0.0).log()


@pytest.mark.parametrize("make", [
    lambda: Value(1.0) + "a",
    lambda: "a" * Value(1.0),
    lambda: Value(1.0) ** "x",
    lambda: [1.0] - Value(1.0),
    lambda: Value(1.0) / None,
    lambda: Value("1.0"),
    lambda: Value(1.0 + 2.0j),
])
def test_unsupported_types_are_type_errors(make):
    with pytest.raises(TypeError):
        make()


def test_undefined_arithmetic_is_reported():
    with pytest.raises(ZeroDivisionError, match="division by zero"):
        Value(1.0) / 0
    with pytest.raises(ValueError, match="fractional power"):
        Value(-2.0) ** 0.5
    with pytest.raises(ValueError, match="negative power"):
        Value(0.0) ** -1
    with pytest.raises(ValueError, match="equal length"):
        Value.dot([Value(1.0)], [Value(1.0), Value(2.0)])


def test_non_smooth_points_follow_torch_conventions():
    # relu'(0) = 0, leaky_relu'(0) = slope, d(x^0.5)/dx at 0 = inf, d(0^b)/db = 0, d((-2)^b)/db = nan
    for fn, expected in [(lambda a: a.relu(), 0.0), (lambda a: a.leaky_relu(0.1), 0.1),
                         (lambda a: a**0.5, math.inf), (lambda a: a**2, 0.0)]:
        a = Value(0.0)
        fn(a).backward()
        assert a.grad == expected
    base, exponent = Value(0.0), Value(2.0)
    (base**exponent).backward()
    assert exponent.grad == 0.0
    base, exponent = Value(-2.0), Value(3.0)
    out = base**exponent
    out.backward()
    assert out.data == -8.0 and base.grad == 12.0 and math.isnan(exponent.grad)
