"""The CUDA kernels under Numba's CUDA simulator (no GPU needed).

NUMBA_ENABLE_CUDASIM=1 must be set before numba is imported, so this folder runs in a
process of its own: tests/test_cuda_simulator.py starts `python -m pytest tests/cudasim`
with it set.  In any other run (the normal suite, where numba is already imported without
the simulator) nothing here is collected.
"""
import os

import numpy as np
import pytest

SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
collect_ignore_glob = [] if SIMULATED else ["test_*.py"]


def pytest_configure(config):
    if SIMULATED:
        from numba import config as numba_config
        assert numba_config.ENABLE_CUDASIM, "numba was imported before NUMBA_ENABLE_CUDASIM was set"


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
