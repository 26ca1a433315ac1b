"""The kernel contract in code (tinygrad_seq/backend.py's CONTRACT): every backend that runs
here conforms to it, and a backend that breaks it is refused when loaded, with what it lacks."""
import importlib
import sys
import types

import numpy as np
import pytest
from click.testing import CliRunner

import tinygrad_seq as tgs
from tinygrad_seq.cli.main import cli

registry = importlib.import_module("tinygrad_seq.backend")


def test_the_contract_covers_every_family_and_the_reference_keeps_it():
    assert set(registry.CONTRACT) == set(registry.FAMILIES)
    for family in registry.FAMILIES:
        module = importlib.import_module(f"tinygrad_seq.kernels.reference.{family}")
        assert registry.contract_violations(module, family) == []


@pytest.mark.parametrize("family", registry.FAMILIES)
@pytest.mark.parametrize("name", [name for name, (_, devices) in registry.BACKENDS.items()])
def test_every_backend_that_runs_here_conforms(name, family):
    reason = registry.unavailable_reason(name)
    if reason is not None:
        pytest.skip(f"backend {name} does not run on this machine: {reason}")
    module = importlib.import_module(f"{registry.BACKENDS[name][0]}.{family}")
    assert registry.contract_violations(module, family) == []


def _fake_backend(monkeypatch, softmax_module):
    """A backend package 'fake' whose softmax family is `softmax_module`; the others are the reference's."""
    package = types.ModuleType("fake_kernels")
    package.unavailable_reason = lambda: None
    package.__path__ = []
    monkeypatch.setitem(sys.modules, "fake_kernels", package)
    for family in registry.FAMILIES:
        module = softmax_module if family == "softmax" else \
            importlib.import_module(f"tinygrad_seq.kernels.reference.{family}")
        monkeypatch.setitem(sys.modules, f"fake_kernels.{family}", module)
    monkeypatch.setitem(registry.BACKENDS, "fake", ("fake_kernels", ("cpu",)))
    monkeypatch.setattr(registry, "_reasons", {})
    monkeypatch.setattr(registry, "_modules", {})


def test_a_backend_missing_functions_is_refused_with_their_names(monkeypatch):
    broken = types.ModuleType("fake_kernels.softmax")
    broken.softmax_forward = lambda x, mask: x          # softmax_backward forgotten
    _fake_backend(monkeypatch, broken)

    reason = registry.unavailable_reason("fake")
    assert reason is not None and "softmax_backward (missing)" in reason and "\n" not in reason
    with tgs.backend("fake"):
        with pytest.raises(registry.BackendError, match="softmax_backward"):
            registry.kernels("softmax")
    listing = CliRunner().invoke(cli, ["backends"])
    line = [row for row in listing.output.splitlines() if row.startswith("fake")][0]
    assert "unavailable" in line and "softmax_backward (missing)" in line


def test_a_backend_with_other_parameters_is_refused_and_auto_passes_it_by(monkeypatch):
    wrong = types.ModuleType("fake_kernels.softmax")
    wrong.softmax_forward = lambda logits, mask: logits     # a renamed parameter
    wrong.softmax_backward = lambda dy, y: dy
    wrong.log_softmax_forward = lambda x: x
    wrong.log_softmax_backward = lambda dy, y: dy
    _fake_backend(monkeypatch, wrong)
    assert registry.contract_violations(wrong, "softmax") == \
        ["softmax_forward(logits, mask) (expected x, mask)"]
    monkeypatch.setitem(registry.AUTO_ORDER, "cpu", ("fake", "numpy"))
    monkeypatch.setattr(registry, "_process_choice", ["auto"])
    monkeypatch.setattr(registry, "_auto_choices", lambda: {})
    assert registry.resolve("softmax") == "numpy"
    y = registry.kernels("softmax").softmax_forward(np.array([[0.0, np.log(3.0)]]), None)
    np.testing.assert_allclose(y, [[0.25, 0.75]])
