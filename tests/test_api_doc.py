"""docs/API.md lists only what exists: every backticked name of its API sections is checked."""
import pathlib
import re

import pytest

import tinygrad_seq as tgs
from tinygrad_seq import nn, ops, optim
from tinygrad_seq.nn import functional as F
from tinygrad_seq.nn import init
from tinygrad_seq.utils import data

DOC = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "API.md").read_text()


def section(title):
    start = DOC.index(f"## {title}")
    end = DOC.find("\n## ", start + 1)
    return DOC[start:end if end > 0 else None]


def names(text):
    return [n for n in re.findall(r"`([A-Za-z_][A-Za-z_0-9]*)`", text)]


@pytest.mark.parametrize("title,owners", [
    ("`torch.Tensor` methods", [tgs.Tensor, tgs.tensor([1.0])]),
    ("`torch.*` functions", [tgs]),
    ("`torch.autograd`", [tgs.autograd]),
    ("`torch.nn` modules", [nn]),
    ("`torch.nn.functional`", [F]),
    ("`torch.nn.init`", [init, nn.utils]),
    ("`torch.optim`", [optim, optim.lr_scheduler]),
    ("`torch.utils.data`", [data]),
    ("Engine ops", [ops]),
])
def test_every_listed_name_exists(title, owners):
    listed = names(section(title).split("\n", 1)[1].split("Operators:")[0].split("dtype aliases")[0])
    assert len(listed) >= 5
    missing = [n for n in listed if not any(hasattr(owner, n) for owner in owners)]
    assert not missing, f"docs/API.md lists {missing} under {title}, which do not exist"


def test_engine_ops_section_lists_every_op():
    listed = names(section("Engine ops").split("\n", 1)[1])
    assert sorted(listed) == sorted(ops.__all__)
    assert f"`tinygrad_seq.ops`, {len(ops.__all__)})" in DOC


def test_dtype_aliases_listed_exist():
    aliases = re.findall(r"`tgs\.([a-z0-9_]+)`", section("`torch.*` functions"))
    assert "long" in aliases and all(hasattr(tgs, a) for a in aliases)
