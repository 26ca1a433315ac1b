"""Runs tests/cudasim (the CUDA kernels under Numba's CUDA simulator) in a subprocess.

The simulator must be switched on (NUMBA_ENABLE_CUDASIM=1) before numba is first
imported, and in this process numba may already be loaded for the CPU kernels, so the
simulator tests get a fresh interpreter.  Their output is shown only when they fail,
indented so that the inner pytest's closing summary cannot pass for this run's own.
"""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _numba_cuda_missing():
    """A reason to skip when numba.cuda cannot be imported at all, else None."""
    probe = subprocess.run([sys.executable, "-c", "import numba.cuda"], capture_output=True, text=True,
                           env={**os.environ, "NUMBA_ENABLE_CUDASIM": "1"})
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return f"numba.cuda does not import ({last}): pip install numba-cuda"
    return None


def _shares(paths, count):
    """`paths` in `count` groups of about equal size in bytes (the largest file to the lightest
    group), so that the groups take about as long."""
    groups = [[] for _ in range(max(1, count))]
    loads = [0] * len(groups)
    for path in sorted(paths, key=os.path.getsize, reverse=True):
        lightest = loads.index(min(loads))
        groups[lightest].append(path)
        loads[lightest] += os.path.getsize(path)
    return [group for group in groups if group]


def test_cuda_kernels_under_the_simulator():
    reason = _numba_cuda_missing()
    if reason:
        pytest.skip(reason)
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    # The simulator is pure Python on one core; its files run in one interpreter per core.
    files = [os.path.join("tests", "cudasim", name)
             for name in sorted(os.listdir(os.path.join(ROOT, "tests", "cudasim")))
             if name.startswith("test_") and name.endswith(".py")]
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    runs = [subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--no-header", *group],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for group in _shares([os.path.join(ROOT, f) for f in files], cores)]
    for run in runs:
        stdout, _ = run.communicate(timeout=600)
        output = "\n".join("    cudasim| " + line for line in stdout.splitlines())
        assert run.returncode == 0, f"the simulator tests failed (exit {run.returncode}):\n{output}"
        passed = re.search(r"(\d+) passed", stdout)
        assert passed and int(passed.group(1)) > 0, f"the simulator run passed no test:\n{output}"
        assert not re.search(r"\d+ (failed|error|skipped)", stdout), f"the simulator run was not clean:\n{output}"


def test_cuda_backend_package_imports_nothing_heavy_and_says_why_it_cannot_run():
    """`import tinygrad_seq` (and the cuda package itself) must not import numba or CuPy;
    unavailable_reason() gives one line naming the missing piece."""
    script = (
        "import sys, tinygrad_seq, tinygrad_seq.kernels.cuda as cuda_backend\n"
        "assert 'numba' not in sys.modules and 'cupy' not in sys.modules, 'imported at import time'\n"
        "print(cuda_backend.unavailable_reason())\n"
        "import numba.cuda, importlib.util\n"
        "print(numba.cuda.is_available(), importlib.util.find_spec('cupy') is not None)\n")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    reason, facts = run.stdout.strip().splitlines()
    gpu, cupy_installed = (word == "True" for word in facts.split())
    if not gpu:
        assert reason == "no GPU: numba.cuda.is_available() is False"
    elif not cupy_installed:
        assert reason == "CuPy not installed: pip install tinygrad_seq[gpu]"
