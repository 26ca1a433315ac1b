"""Drawing computation graphs: the Tensor graph's DOT text, and SVG/PNG through Graphviz's `dot`."""
import shutil

import pytest

import tinygrad_seq as tgs
from tinygrad_seq import Value, nn, viz

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="needs the Graphviz `dot` program")


def small_graph():
    model = nn.Linear(3, 2)
    x = tgs.randn(4, 3)
    loss = model(x).relu().sum()
    return model, x, loss


def test_tensor_graph_dot_names_ops_shapes_and_parameters():
    model, x, loss = small_graph()
    text = viz.to_dot(loss, names=dict(model.named_parameters()))
    assert text.startswith("digraph G {") and text.rstrip().endswith("}")
    for op in ("ReLU", "Sum"):
        assert f'label="{op}"' in text
    assert "weight" in text and "bias" in text
    assert "(4, 3) float32" in text and "(2, 3) float32" in text and "() float32" in text
    assert text.count("fillcolor=lightgrey") == 2          # the two parameters, not the input x
    ops = [line.split()[0] for line in text.splitlines() if "shape=ellipse" in line]
    arrows = [line.split() for line in text.splitlines() if "->" in line]
    for op in ops:   # every op: one output, at least one input
        assert sum(a[0] == op for a in arrows) == 1 and sum(a[2] == op + ";" for a in arrows) >= 1
    tensors = [line.split()[0] for line in text.splitlines() if "shape=record" in line]
    assert len(tensors) == len(set(tensors))


def test_a_tensor_used_twice_is_one_node_with_two_arrows():
    x = tgs.randn(3, requires_grad=True)
    y = (x * x).sum()
    text = viz.to_dot(y)
    assert len([line for line in text.splitlines() if "shape=record" in line]) == 3   # x, x*x, y
    mul = next(line.split()[0] for line in text.splitlines() if 'label="Mul"' in line)
    leaf = next(line.split()[0] for line in text.splitlines() if "fillcolor" in line)
    assert sum(line.strip() == f"{leaf} -> {mul};" for line in text.splitlines()) == 2


@needs_dot
@pytest.mark.parametrize("extension", [".svg", ".png"])
def test_value_and_tensor_graphs_render(tmp_path, extension):
    a, b = Value(-4.0, label="a"), Value(2.0, label="b")
    c = (a * b + b ** 3).relu()
    path = c.draw(tmp_path / f"value{extension}")
    _, _, loss = small_graph()
    tensor_path = viz.draw(loss, str(tmp_path / f"tensor{extension}"))
    for written in (path, tensor_path):
        data = open(written, "rb").read()
        if extension == ".svg":
            assert data.lstrip().startswith(b"<?xml") and b"<svg" in data
        else:
            assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert extension == ".png" or b">ReLU<" in open(path, "rb").read()


def test_without_dot_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "")
    c = Value(1.0) * 2
    with pytest.raises(viz.GraphvizNotFoundError) as info:
        c.draw(tmp_path / "graph.svg")
    message = str(info.value)
    assert "\n" not in message and "`dot`" in message and "install" in message
    _, _, loss = small_graph()
    with pytest.raises(viz.GraphvizNotFoundError):
        viz.draw(loss, tmp_path / "graph.png")
    assert list(tmp_path.iterdir()) == []            # nothing half-written


def test_an_unknown_image_format_is_refused_before_drawing(tmp_path):
    with pytest.raises(ValueError, match=r"\.svg, \.png, \.pdf"):
        (Value(1.0) + 1).draw(tmp_path / "graph.jpeg")
