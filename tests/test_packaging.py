"""The package as a package: one version, its metadata, what ships in it, and the bundled digits."""
import importlib.metadata
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import tinygrad_seq as tgs
from tinygrad_seq import _version
from tinygrad_seq.cli.main import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_one_version_from_the_metadata_shown_by_tgs_version():
    installed = importlib.metadata.version("tinygrad_seq")
    assert tgs.__version__ == installed
    assert _version._from_source_tree() == installed   # pyproject.toml says the same (reinstall if not)
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"tgs {installed}"


def test_the_version_is_written_nowhere_but_pyproject():
    """The version string once appeared in setup.py, cli/main.py and __init__.py."""
    literal = re.compile(r"""["']%s["']""" % re.escape(tgs.__version__))
    for folder in ("tinygrad_seq", "cli", "kernels"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
            for name in files:
                if name.endswith(".py"):
                    with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                        assert not literal.search(f.read()), os.path.join(dirpath, name)
    with open(os.path.join(ROOT, "setup.py"), encoding="utf-8") as f:
        assert "version" not in re.sub(r"--version|vect-max-version", "", f.read())


def test_without_metadata_the_source_tree_or_a_placeholder_gives_the_version(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert _version.package_version() == _version._from_source_tree() == tgs.__version__
    monkeypatch.setattr(_version, "_from_source_tree", lambda: None)
    assert _version.package_version() == "0+unknown"


def test_metadata_license_and_runtime_dependencies():
    meta = importlib.metadata.metadata("tinygrad_seq")
    assert meta["License"] == "MIT" and meta["Requires-Python"] == ">=3.9"
    with open(os.path.join(ROOT, "LICENSE"), encoding="utf-8") as f:
        text = f.read()
    assert text.startswith("MIT License") and "Copyright (c) 2026 the tinygrad_seq developers" in text
    requirements = importlib.metadata.requires("tinygrad_seq")
    runtime = {re.split(r"[<>=!;\[ ]", r)[0].lower() for r in requirements if "extra ==" not in r}
    assert runtime == {"numpy", "numba", "scipy", "click", "threadpoolctl"}   # no cython (build only), no scikit-learn
    extras = {}
    for r in requirements:
        if "extra ==" in r:
            name = r.split("extra ==")[1].strip().strip("\"'")
            extras.setdefault(name, []).append(r.split(";")[0].strip())
    assert {"test", "bench", "plot", "gpu", "dev", "mpi", "tune"} <= set(extras)
    test_names = {re.split(r"[<>=!\[ ]", r)[0].lower() for r in extras["test"]}
    assert {"pytest", "hypothesis", "torch", "scikit-learn"} <= test_names
    assert any(r.replace("_", "-").startswith("tinygrad-seq[") and "mpi" in r and "tune" in r for r in extras["test"])
    assert {r.split(">")[0] for r in extras["mpi"]} == {"mpi4py", "mpich"}
    for r in extras["test"] + extras["bench"]:
        if r.startswith("torch"):
            assert "==" not in r and "<" in r and ">=" in r, r   # a range, not one exact version


def test_the_built_package_holds_the_mapped_folders_and_its_data(tmp_path):
    """What setuptools copies into a wheel (build_py: no compiling): kernels/ and cli/ under
    tinygrad_seq, py.typed, the digits, the shipped choice table and the Cython sources."""
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path)], cwd=ROOT,
                   check=True, capture_output=True, timeout=300)
    package = tmp_path / "tinygrad_seq"
    for name in ("py.typed", "_version.py", "data/digits.npz", "data/auto_backend.json", "data/kjv.txt.gz",
                 "kernels/__init__.py", "kernels/cython/_common.pxi", "kernels/numba_cpu/__init__.py",
                 "cli/main.py"):
        assert (package / name).is_file(), name
    assert sorted(p.name for p in (package / "kernels" / "cython").glob("_*.pyx")) == [
        "_activation.pyx", "_attention.pyx", "_conv.pyx", "_memory.pyx", "_normalization.pyx", "_optim.pyx", "_recurrence.pyx",
        "_softmax.pyx", "_team_gemm.pyx"]


LOAD_WITHOUT_SKLEARN = """
import sys
sys.modules["sklearn"] = None     # any import of scikit-learn now fails
import numpy as np
from tinygrad_seq.data_utils import load_digits
X, y = load_digits(images=True)
print(X.shape, X.dtype, y.dtype, float(X.min()), float(X.max()), np.bincount(y).tolist())
"""


def test_digits_load_without_scikit_learn():
    result = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_SKLEARN], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == ("(1797, 1, 8, 8) float32 int64 0.0 1.0 "
                                     "[178, 182, 177, 183, 181, 182, 181, 179, 174, 180]")


def test_the_shipped_digits_are_scikit_learns():
    datasets = pytest.importorskip("sklearn.datasets", reason="scikit-learn (test extra) is the reference")
    from tinygrad_seq.data_utils import load_digits
    reference = datasets.load_digits()
    X, y = load_digits(dtype=np.float64)
    np.testing.assert_array_equal(X, reference.data / 16.0)
    np.testing.assert_array_equal(y, reference.target)
    images, _ = load_digits(images=True)
    assert images.dtype == np.float32 and images.shape == (1797, 1, 8, 8)
    np.testing.assert_array_equal(images[:, 0], (reference.images / 16.0).astype(np.float32))


def _public_callables():
    """The public API that carries type hints, Tensor's own methods and properties among them."""
    import importlib
    import inspect

    from tinygrad_seq import backend, data_utils, gradcheck, random, viz
    from tinygrad_seq.tensor import Function
    tensor = importlib.import_module("tinygrad_seq.tensor")   # the package's `tensor` is tgs.tensor(), the factory
    from tinygrad_seq.nn import functional, functional_conv, module
    from tinygrad_seq.optim import lr_scheduler, optimizers
    for mod in (tensor, module, functional, functional_conv, optimizers, lr_scheduler, backend, data_utils, gradcheck,
                random, viz):
        for name, obj in vars(mod).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
                continue
            if inspect.isfunction(obj):
                yield f"{mod.__name__}.{name}", obj, mod
            elif inspect.isclass(obj) and not issubclass(obj, (BaseException, Function)):   # ops: forward/backward
                for attr, member in vars(obj).items():
                    if isinstance(member, property):
                        member = member.fget
                    if inspect.isfunction(member) and (not attr.startswith("_") or attr == "__init__"):
                        yield f"{mod.__name__}.{name}.{attr}", member, mod


def test_public_api_signatures_are_annotated_and_the_hints_resolve():
    import inspect
    import typing

    checked, missing = 0, []
    for qualname, fn, mod in _public_callables():
        if qualname.endswith((".update", ".lr_at", ".forward", ".extra_repr")) and "module.Module" not in qualname:
            continue   # per-subclass hooks (an optimiser's update rule, a schedule's formula)
        hints = typing.get_type_hints(fn, globalns=vars(mod))   # raises on a name that does not exist
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.name not in ("self", "cls") and not p.name.startswith("_")]
        if "return" not in hints or any(p.name not in hints for p in params):
            missing.append(qualname)
        checked += 1
    assert checked > 80 and not missing, missing
    assert {"tinygrad_seq.tensor.Tensor.sum", "tinygrad_seq.tensor.Tensor.shape", "tinygrad_seq.tensor.Tensor.__init__",
            "tinygrad_seq.tensor.is_grad_enabled"} <= {qualname for qualname, _, _ in _public_callables()}
