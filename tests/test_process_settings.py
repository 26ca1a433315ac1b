"""`import tinygrad_seq` changes nothing process-wide; the `tgs` command and one opt-in call do."""
import os
import subprocess
import sys

import pytest

THREAD_VARIABLES = ("OPENBLAS_THREAD_TIMEOUT", "GOMP_SPINCOUNT")
# the environment of a user who set nothing (the test process itself is configured: conftest.py)
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES + ("TGS_MALLOPT",)}

# Allocates and frees a 20 MB array, then counts the page faults of allocating another:
# memory the C library kept for reuse is already mapped; memory fresh from the kernel faults
# once per 4 KiB page (NumPy's transparent huge pages are switched off to count them).
SECOND_ALLOCATION_FAULTS = """
import resource, numpy as np
np._core.multiarray._set_madvise_hugepage(False)
first = np.ones(5 * 2**20, dtype=np.float32)
del first
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
second = np.ones(5 * 2**20, dtype=np.float32)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES = 20 * 2 ** 20 // 4096
# a user script: numpy first, then the engine used for a training step
USE_THE_ENGINE = """
import numpy, os, tinygrad_seq as tgs
from tinygrad_seq import nn
x = tgs.randn(8, 4)
nn.Linear(4, 3)(x).relu().sum().backward()
print(*(os.environ.get(name, "-") for name in {names!r}))
"""


def _python(code, **env):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**CLEAN_ENV, **env})
    assert result.returncode == 0, result.stderr
    return result


def _faults(setup, **env):
    return int(_python(setup + SECOND_ALLOCATION_FAULTS, **env).stdout.split()[-1])


def test_importing_and_using_the_engine_sets_no_environment_variable_and_prints_nothing():
    result = _python(USE_THE_ENGINE.format(names=THREAD_VARIABLES))
    assert result.stdout.split() == ["-", "-"]
    assert result.stderr == ""     # no warning about import order either


def test_import_does_not_import_numpy_so_the_opt_in_call_can_come_first():
    result = _python("import sys, tinygrad_seq, tinygrad_seq.runtime; print('numpy' in sys.modules)")
    assert result.stdout.split() == ["False"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt tuning is for glibc on Linux")
def test_import_leaves_the_allocator_alone_and_the_opt_in_call_tunes_it():
    assert _faults("import tinygrad_seq, tinygrad_seq.nn\n") > PAGES // 2     # the C library's default
    opt_in = "import tinygrad_seq.runtime\ntinygrad_seq.runtime.configure_for_speed()\n"
    assert _faults(opt_in) < PAGES // 10
    assert _faults(opt_in, TGS_MALLOPT="0") > PAGES // 2


def test_opt_in_call_sets_thread_variables_keeps_the_users_and_says_when_too_late():
    code = ("import os, sys, tinygrad_seq.runtime as rt\n"
            "{before}\n"
            "changed = rt.configure_for_speed(allocator=False)\n"
            "print(os.environ['OPENBLAS_THREAD_TIMEOUT'], os.environ['GOMP_SPINCOUNT'], '|', *changed)")
    early = _python(code.format(before="")).stdout.split()
    assert early == ["4", "10000", "|", "OPENBLAS_THREAD_TIMEOUT=4", "GOMP_SPINCOUNT=10000"]
    late = _python(code.format(before="import numpy")).stdout
    assert "OPENBLAS_THREAD_TIMEOUT=4 (too late: already loaded)" in late
    theirs = _python(code.format(before=""), OPENBLAS_THREAD_TIMEOUT="7", GOMP_SPINCOUNT="5").stdout.split()
    assert theirs == ["7", "5", "|"]


def test_the_tgs_command_configures_its_own_process_before_numpy_loads():
    code = ("import os, sys, tinygrad_seq.cli.main\n"
            "print('numpy' in sys.modules, os.environ['OPENBLAS_THREAD_TIMEOUT'], os.environ['GOMP_SPINCOUNT'])")
    assert _python(code).stdout.split() == ["False", "4", "10000"]
    if sys.platform.startswith("linux"):
        assert _faults("import tinygrad_seq.cli.main\n") < PAGES // 10


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="GNU OpenMP's loading is configured on Linux")
def test_the_kernels_team_spin_count_leaves_the_environment_unchanged():
    """The Cython kernels load GNU OpenMP with a short spin count for their team, and leave no
    variable behind; a spin count or wait policy the user chose is kept."""
    code = ("import os, numpy, tinygrad_seq as tgs\n"
            "from tinygrad_seq import nn\n"
            "with tgs.backend('cython'):\n"
            "    nn.GELU()(tgs.randn(64, 64)).sum()\n"
            "print(os.environ.get('GOMP_SPINCOUNT', '-'),\n"
            "      any('/libgomp.so.1' in line for line in open('/proc/self/maps')))")
    from tinygrad_seq.backend import unavailable_reason
    if unavailable_reason("cython") is not None:
        pytest.skip("needs the compiled Cython kernels (a C compiler at install)")
    assert _python(code).stdout.split() == ["-", "True"]
    assert _python(code, GOMP_SPINCOUNT="123").stdout.split() == ["123", "True"]
