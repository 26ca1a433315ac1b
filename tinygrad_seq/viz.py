"""Pictures of computation graphs, drawn by Graphviz's `dot` program.

    tgs.viz.draw(loss, "graph.svg")                       # a Tensor's graph (or a Value's)
    tgs.viz.draw(loss, "graph.png", names=dict(model.named_parameters()))
    Value(...).draw("graph.svg")                          # the scalar engine's own method

`to_dot` gives the DOT text, which needs nothing installed; `draw` hands it to `dot` (the
Graphviz program, not a Python package: apt-get install graphviz, brew install graphviz, or
conda install graphviz) and writes SVG, PNG or PDF, chosen by the file's extension.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import Mapping, Optional, Union

from .tensor import Tensor
from .value import Value, _dot_escape

FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf"}


class GraphvizNotFoundError(RuntimeError):
    """Graphviz's `dot` program is not on PATH."""


def to_dot(root: Union[Tensor, Value], rankdir: str = "LR", names: Optional[Mapping[str, object]] = None) -> str:
    """The graph that produced `root` (a Tensor or a Value) as Graphviz DOT text.

    A Tensor's graph has one box per tensor (its name from `names`, its shape and dtype;
    parameters, the leaves that require grad, shaded) and one ellipse per op, with edges
    input -> op -> output."""
    if isinstance(root, Value):
        return root.to_dot(rankdir)
    label_of = {id(t): name for name, t in (names or {}).items()}
    lines = ["digraph G {", f"  rankdir={rankdir};"]
    tensor_ids, op_ids = {}, {}

    def tensor_node(t):
        if id(t) not in tensor_ids:
            node = tensor_ids[id(t)] = f"t{len(tensor_ids)}"
            fields = [_dot_escape(label_of[id(t)])] if id(t) in label_of else []
            fields.append(_dot_escape(f"{tuple(t.shape)} {t.dtype}"))
            shaded = ", style=filled, fillcolor=lightgrey" if t._ctx is None and t.requires_grad else ""
            lines.append(f'  {node} [shape=record, label="{{ {" | ".join(fields)} }}"{shaded}];')
        return tensor_ids[id(t)]

    stack, seen = [root], {id(root)}
    tensor_node(root)
    while stack:
        t = stack.pop()
        fn = t._ctx
        if fn is None:
            continue
        if id(fn) not in op_ids:
            op = op_ids[id(fn)] = f"op{len(op_ids)}"
            lines.append(f'  {op} [shape=ellipse, label="{_dot_escape(type(fn).__name__)}"];')
            for parent in fn.parents:
                if parent is None:
                    continue
                lines.append(f"  {tensor_node(parent)} -> {op};")
                if id(parent) not in seen:
                    seen.add(id(parent))
                    stack.append(parent)
        lines.append(f"  {op_ids[id(fn)]} -> {tensor_node(t)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(dot_source: str, path: str | os.PathLike) -> str:
    """Write DOT text as an image with Graphviz's `dot`, the format from the extension of `path`
    (.svg, .png, .pdf); returns the path.  The file appears whole or not at all."""
    path = os.fspath(path)
    extension = os.path.splitext(path)[1].lower()
    if extension not in FORMATS:
        raise ValueError(f"cannot draw a graph as {path!r}: end the file name in "
                         f"{', '.join(FORMATS)} to choose the image format")
    dot = shutil.which("dot")
    if dot is None:
        raise GraphvizNotFoundError("drawing a graph needs Graphviz's `dot` program, which is not on PATH: "
                                    "install Graphviz (apt-get install graphviz, brew install graphviz or "
                                    "conda install graphviz), or save .to_dot()'s text and render it elsewhere")
    partial = f"{path}.{os.getpid()}.partial"
    try:
        result = subprocess.run([dot, f"-T{FORMATS[extension]}", "-o", partial], input=dot_source,
                                capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            detail = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[0]
            raise RuntimeError(f"Graphviz's dot could not draw {path!r}: {detail}")
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return path


def draw(root: Union[Tensor, Value], path: str | os.PathLike, rankdir: str = "LR",
         names: Optional[Mapping[str, object]] = None) -> str:
    """Draw the graph that produced `root` (a Tensor or a Value) to `path` (.svg, .png or .pdf)
    through Graphviz's `dot`; returns the path.  Raises GraphvizNotFoundError without `dot`."""
    return render(to_dot(root, rankdir, names), path)
