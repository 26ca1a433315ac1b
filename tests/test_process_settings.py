"""What `import tinygrad_seq` changes in the process, and the switches that undo it."""
import os
import subprocess
import sys

import pytest

# Allocates and frees a 20 MB array, then counts the page faults of allocating another:
# memory the C library kept for reuse is already mapped; memory fresh from the kernel faults
# once per 4 KiB page (NumPy's transparent huge pages are switched off to count them).
SECOND_ALLOCATION_FAULTS = """
import resource, numpy as np, tinygrad_seq
np._core.multiarray._set_madvise_hugepage(False)
first = np.ones(5 * 2**20, dtype=np.float32)
del first
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
second = np.ones(5 * 2**20, dtype=np.float32)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES = 20 * 2 ** 20 // 4096


def _faults(**env):
    result = subprocess.run([sys.executable, "-c", SECOND_ALLOCATION_FAULTS], capture_output=True, text=True,
                            env={**os.environ, **env}, timeout=120, check=True)
    return int(result.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt tuning is for glibc on Linux")
def test_freed_arrays_are_reused_without_page_faults():
    assert _faults() < PAGES // 10
    assert _faults(TGS_MALLOPT="0") > PAGES // 2     # the C library's default behaviour


def test_thread_settings_are_defaults_that_the_user_can_override():
    code = "import os, tinygrad_seq; print(os.environ['OPENBLAS_THREAD_TIMEOUT'], os.environ['GOMP_SPINCOUNT'])"
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_THREAD_TIMEOUT", "GOMP_SPINCOUNT")}
    ours = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert ours.stdout.split() == ["4", "10000"]
    theirs = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**env, "OPENBLAS_THREAD_TIMEOUT": "7", "GOMP_SPINCOUNT": "5"})
    assert theirs.stdout.split() == ["7", "5"]


def test_importing_numpy_first_warns_with_the_fix():
    """OpenBLAS reads its spin time when NumPy loads it: too late for tinygrad_seq to set it."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}

    def stderr(code, **extra):
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**env, **extra}).stderr

    warning = stderr("import numpy, tinygrad_seq")
    assert "RuntimeWarning" in warning and "import tinygrad_seq first" in warning
    assert "OPENBLAS_THREAD_TIMEOUT=4" in warning
    assert stderr("import tinygrad_seq, numpy") == ""
    assert stderr("import numpy, tinygrad_seq", OPENBLAS_THREAD_TIMEOUT="4") == ""
