"""The Cython backend as a build artefact: present after `pip install -e .` on a machine with a
C compiler, explained when missing, and never needed to import tinygrad_seq.

The kernels' numbers are checked against the reference in tests/test_kernels_*.py, which run
every available backend; here only what is particular to the compiled modules.
"""
import importlib
import os
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
import pytest

import tinygrad_seq.kernels.cython as cython_backend

# the module, not tinygrad_seq.backend the context manager that the package re-exports
registry = importlib.import_module("tinygrad_seq.backend")

COMPILED = [f"tinygrad_seq.kernels.cython.{name}" for name in cython_backend.COMPILED]


def _c_compiler():
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc)


@pytest.fixture
def fresh_registry(monkeypatch):
    """The registry with its caches emptied, restored after the test."""
    monkeypatch.setattr(registry, "_reasons", {})
    monkeypatch.setattr(registry, "_modules", {})
    return registry


def test_backend_is_available_after_the_build(fresh_registry):
    if _c_compiler() is None:
        pytest.skip("no C compiler on this machine, so the Cython kernels cannot have been built")
    assert cython_backend.unavailable_reason() is None
    assert fresh_registry.unavailable_reason("cython") is None
    with fresh_registry.backend("cython"):
        for family in fresh_registry.FAMILIES:
            module = fresh_registry.kernels(family)
            assert module.__name__ == f"tinygrad_seq.kernels.cython.{family}"


@pytest.mark.parametrize("missing", COMPILED)
def test_reason_names_the_missing_module_and_the_fix(monkeypatch, fresh_registry, missing):
    monkeypatch.delitem(sys.modules, missing, raising=False)
    monkeypatch.setitem(sys.modules, missing, None)   # makes `import missing` raise ImportError
    reason = cython_backend.unavailable_reason()
    assert reason is not None and "\n" not in reason
    assert "not compiled" in reason and "pip install -e ." in reason
    assert missing.rsplit(".", 1)[1] in reason

    assert fresh_registry.unavailable_reason("cython") == reason
    with pytest.raises(fresh_registry.BackendError, match="unavailable: not compiled"):
        with fresh_registry.backend("cython"):
            fresh_registry.kernels("softmax")
    with fresh_registry.backend("auto"):
        assert fresh_registry.resolve("softmax") != "cython"   # auto falls back


def test_import_tinygrad_seq_without_the_compiled_modules():
    """A fresh interpreter in which every compiled kernel module fails to import."""
    script = f"""
import importlib.abc, sys
class NoCompiledKernels(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in {COMPILED!r}:
            raise ImportError("simulated: no compiled module " + name)
sys.meta_path.insert(0, NoCompiledKernels())
import tinygrad_seq
from tinygrad_seq.backend import resolve, unavailable_reason
reason = unavailable_reason("cython")
assert reason and reason.startswith("not compiled"), reason
assert resolve("conv") != "cython"
print("ok")
"""
    env = dict(os.environ, TGS_BACKEND="auto")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


@pytest.mark.skipif(cython_backend.unavailable_reason() is not None,
                    reason="Cython kernels not compiled (no C compiler at install time)")
def test_openmp_threads_give_the_serial_results():
    """The prange loops (OpenMP, serial by default) must not change any number."""
    from tinygrad_seq.kernels.cython import conv, recurrence, softmax

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 9, 8))
    w = rng.standard_normal((5, 4, 3, 3))
    xw = rng.standard_normal((4, 6, 4 * 5))
    w_hh = rng.standard_normal((4 * 5, 5))
    h0, c0 = rng.standard_normal((2, 6, 5))
    logits = rng.standard_normal((7, 11))
    mask = rng.random((7, 11)) < 0.3

    def everything():
        y = conv.conv2d_forward(x, w, None, (1, 2), (1, 1), (1, 1))
        out = [y, *conv.conv2d_backward(y, x, w, (1, 2), (1, 1), (1, 1), True)]
        out += conv.maxpool2d_forward(x, (3, 3), (2, 2), (1, 1))
        out += [conv.avgpool2d_forward(x, (2, 3), (2, 1), (1, 1))]
        hs, cs, gates = recurrence.lstm_forward(xw, w_hh, h0, c0)
        out += [hs, *recurrence.lstm_backward(hs, c0, w_hh, h0, c0, hs, cs, gates)]
        out += [softmax.softmax_forward(logits, mask)]
        return out

    from tinygrad_seq.kernels.cython import _conv
    default = _conv.get_num_threads()
    try:
        cython_backend.set_num_threads(1)
        serial = everything()
        cython_backend.set_num_threads(2)
        threaded = everything()
    finally:
        cython_backend.set_num_threads(default)
    for a, b in zip(serial, threaded):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(cython_backend.unavailable_reason() is not None,
                    reason="Cython kernels not compiled (no C compiler at install time)")
def test_maxpool_backward_rejects_an_argmax_outside_the_plane():
    """The compiled scatter would write outside dx; it must raise instead."""
    from tinygrad_seq.kernels.cython import conv

    dy = np.ones((1, 1, 2, 2))
    argmax = np.array([[[[0, 1], [4, 16]]]], dtype=np.int64)   # 16 is past a 4x4 plane
    with pytest.raises(ValueError, match="maxpool2d"):
        conv.maxpool2d_backward(dy, argmax, (1, 1, 4, 4))
