"""The kernel registry (tinygrad_seq/backend.py): how a backend is chosen, the errors a wrong
choice gives, and a machine without numba."""
import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tinygrad_seq as tgs
registry = importlib.import_module("tinygrad_seq.backend")   # tinygrad_seq.backend is also the function


@pytest.fixture
def process_choice(monkeypatch):
    """The process-wide choice, restored after the test."""
    monkeypatch.setattr(registry, "_process_choice", ["auto"])
    return registry


def test_a_block_beats_the_process_choice_and_blocks_nest(process_choice):
    assert registry.current() == "auto"
    tgs.set_backend("NumPy")                      # names are case-insensitive
    assert registry.current() == "numpy"
    with tgs.backend("numba"):
        assert registry.current() == "numba"
        with tgs.backend("numpy"):
            assert registry.current() == "numpy"
        assert registry.current() == "numba"
    assert registry.current() == "numpy"
    assert registry.resolve("softmax") == "numpy"


def test_the_environment_sets_the_process_default():
    code = "import tinygrad_seq.backend, sys; b = sys.modules['tinygrad_seq.backend']; print(b.current(), b.resolve('conv'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, TGS_BACKEND="numpy")).stdout.split()
    assert out == ["numpy", "numpy"]


def test_wrong_names_devices_and_families_say_what_to_do(process_choice):
    with pytest.raises(registry.BackendError, match="unknown backend 'fortran': choose one of auto, numpy"):
        tgs.set_backend("fortran")
    with pytest.raises(registry.BackendError, match="unknown kernel family 'fft'"):
        registry.resolve("fft")
    with tgs.backend("numba"):
        with pytest.raises(registry.BackendError, match="does not run on device 'cuda'.*'auto'"):
            registry.resolve("softmax", "cuda")
    assert registry.current() == "auto"          # a failed block leaves the choice as it was


def test_every_backend_reports_itself(process_choice):
    listed = {name: (devices, reason) for name, devices, reason in registry.available_backends()}
    assert set(listed) == {"numpy", "numba", "cython", "cuda"}
    assert listed["numpy"][1] is None and "cpu" in listed["numpy"][0]
    for name, (_, reason) in listed.items():
        assert reason is None or (isinstance(reason, str) and "\n" not in reason)
        if reason is None and "cpu" in listed[name][0]:
            with tgs.backend(name):
                module = registry.kernels("softmax")
            y = module.softmax_forward(np.array([[0.0, np.log(3.0)]]), None)
            np.testing.assert_allclose(y, [[0.25, 0.75]])


def test_without_numba_everything_still_works():
    """A fresh interpreter where numba cannot be imported: the package imports, `auto` picks
    another backend, training works, `tgs backends` says why numba is missing, and asking for
    it by name is a one-line error."""
    script = """
import sys
sys.modules["numba"] = None          # import numba now raises ImportError
import numpy as np
import tinygrad_seq as tgs
from tinygrad_seq.backend import resolve, unavailable_reason
assert unavailable_reason("numba").startswith("numba does not import"), unavailable_reason("numba")
assert resolve("recurrence") in ("cython", "numpy") and resolve("softmax") != "numba"
lstm = tgs.nn.LSTM(3, 4)
out, _ = lstm(tgs.randn(5, 2, 3))
out.sum().backward()
assert lstm.weight_hh_l0.grad is not None and np.isfinite(lstm.weight_hh_l0.grad.numpy()).all()
from click.testing import CliRunner
from tinygrad_seq.cli.main import cli
shown = CliRunner().invoke(cli, ["backends"])
line = [l for l in shown.output.splitlines() if l.startswith("numba")][0]
assert "unavailable: numba does not import" in line, line
chosen = CliRunner().invoke(cli, ["train", "charlm", "--backend", "numba", "--steps", "1"])
assert chosen.exit_code != 0 and "numba" in chosen.stderr and len(chosen.stderr.strip().splitlines()) == 1, chosen.stderr
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180,
                            env=dict(os.environ, TGS_BACKEND="auto"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


def _write(path, table):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(table))


def test_the_users_choice_table_wins_family_by_family_over_the_shipped_one(monkeypatch, tmp_path, process_choice):
    shipped = tmp_path / "shipped.json"
    _write(shipped, {"cpu": {"conv": "numba", "softmax": "numba"}})
    monkeypatch.setattr(registry, "CHOICE_TABLE", str(shipped))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert registry.user_choice_table() == str(tmp_path / "config" / "tinygrad_seq" / "auto_backend.json")
    with tgs.backend("auto"):
        assert registry.resolve("softmax") == "numba"         # no user table yet: the shipped default
        written = registry.save_auto_choices("cpu", {"softmax": "numpy"})
        assert written == {"cpu": {"softmax": "numpy"}}       # the user's file holds only the user's entries
        assert registry.resolve("softmax") == "numpy"
        assert registry.resolve("conv") == "numba"            # a family the user did not measure keeps the default
    assert json.loads(shipped.read_text()) == {"cpu": {"conv": "numba", "softmax": "numba"}}


def test_the_users_table_defaults_to_home_config_and_a_broken_one_is_ignored(monkeypatch, tmp_path, process_choice):
    shipped = tmp_path / "shipped.json"
    _write(shipped, {"cpu": {"softmax": "numba"}})
    monkeypatch.setattr(registry, "CHOICE_TABLE", str(shipped))
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    user_table = tmp_path / "home" / ".config" / "tinygrad_seq" / "auto_backend.json"
    assert registry.user_choice_table() == str(user_table)
    user_table.parent.mkdir(parents=True)
    user_table.write_text("{half a table")
    with tgs.backend("auto"):
        assert registry.resolve("softmax") == "numba"
        _write(user_table, {"cpu": {"softmax": "numpy"}})
        monkeypatch.setenv("XDG_CONFIG_HOME", "relative/path")   # ignored, as the XDG spec says
        assert registry.resolve("softmax") == "numpy"


def test_observed_kernels_report_every_call_and_only_inside_the_block():
    """observe_kernels (tgs bench --profile) sees each kernel call the engine makes, with its
    family, function and arguments; outside the block kernels() hands out the module itself."""
    seen = []
    x = tgs.randn(5, 2, 3, requires_grad=True)
    lstm = tgs.nn.LSTM(3, 4)
    with registry.backend("numpy"):
        plain = registry.kernels("recurrence")
        with registry.observe_kernels(lambda *call: seen.append(call)):
            lstm(x)[0].sum().backward()
        assert registry.kernels("recurrence") is plain
    calls = [(family, function) for family, function, _, _ in seen]
    assert ("recurrence", "lstm_forward_xh") in calls and ("recurrence", "lstm_backward") in calls
    assert ("matmul", "matmul") in calls
    forward_args = next(args for family, function, args, _ in seen if function == "lstm_forward_xh")
    assert forward_args[0].shape == (6, 2, 3 + 1 + 4)   # xh: T + 1, B, [x | 1 | h]
    assert forward_args[1].shape == (16, 3 + 1)         # w_x: 4H, [W_ih | b]
    assert forward_args[2].shape == (16, 4)             # w_hh
    assert all(seconds >= 0 for *_, seconds in seen)
    assert x.grad is not None
