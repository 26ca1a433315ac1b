"""bench/run_gpu.sh, the one device call of a GPU session, rehearsed on the CPU with --dry-run:
the steps in their order (the benchmark before the GPU tests, both before the rest), each under
its own timeout, the carried wheels installed with --no-index, the preflight's imports, and the
benchmark's plumbing on one small CPU step.  A mistake found here costs no device time."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "bench", "run_gpu.sh")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_out")
    run = subprocess.run(["bash", SCRIPT, "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OUT": str(out), "PYTHON": sys.executable})
    return run, out


def test_the_dry_run_succeeds_and_writes_its_summary_under_out(dry_run):
    run, out = dry_run
    assert run.returncode == 0, run.stdout + run.stderr
    summary = (out / "summary.txt").read_text()
    assert set(run.stdout.splitlines()) <= set(summary.splitlines())   # all it printed, and the preflight
    assert "NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS=0" in summary.splitlines()[0]
    assert summary.rstrip().splitlines()[-1].startswith("done")


def test_the_benchmark_runs_first_then_the_gpu_tests_then_the_rest(dry_run):
    run, _ = dry_run
    steps = re.findall(r"^step (\S+) \(timeout (\d+)s\): (.*)$", run.stdout, re.MULTILINE)
    names = [name for name, _, _ in steps]
    assert names[:3] == ["wheels", "build", "backends"]
    assert names[3:6] == ["bench_lstm_lm", "bench_cnn", "bench_transformer"]
    assert names[6] == "gpu_tests" and names[-1] == "other_tests"
    assert run.stdout.index("== preflight") < run.stdout.index("step build")
    commands = dict((name, command) for name, _, command in steps)
    assert "--no-index" in commands["wheels"]
    for workload in ("lstm_lm", "cnn", "transformer"):
        assert "--device cuda --backend cuda" in commands["bench_" + workload]
    assert "tests/test_cuda_gpu.py" in commands["gpu_tests"]
    assert "--ignore=tests/test_cuda_gpu.py" in commands["other_tests"]
    assert all(0 < int(seconds) <= 600 for _, seconds, _ in steps)


def test_the_preflight_imports_what_the_gpu_run_needs_and_tolerates_no_gpu_here(dry_run):
    _, out = dry_run
    preflight = (out / "preflight.txt").read_text()
    for module in ("click", "pytest", "Cython", "cupy", "torch", "numba.cuda"):
        assert re.search(rf"^import {re.escape(module)} (ok|FAILED)", preflight, re.MULTILINE), preflight
    assert "numba.cuda.detect()" in preflight
    assert "preflight" in preflight.splitlines()[-1]


def test_the_benchmark_plumbing_is_rehearsed_on_the_cpu(dry_run):
    run, out = dry_run
    assert "| lstm_lm | tgs[numpy] |" in (out / "bench_cpu_rehearsal.txt").read_text()
    assert "| lstm_lm | tgs[numpy] |" in run.stdout


def test_an_unknown_flag_is_refused():
    run = subprocess.run(["bash", SCRIPT, "--gpu-please"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "usage: bash bench/run_gpu.sh" in run.stderr
