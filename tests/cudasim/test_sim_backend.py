"""The cuda backend under the simulator: available exactly when CuPy imports."""
import importlib.util

from tinygrad_seq.kernels import cuda as cuda_backend


def test_unavailable_reason_under_the_simulator():
    reason = cuda_backend.unavailable_reason()
    if importlib.util.find_spec("cupy") is None:
        assert reason == "CuPy not installed: pip install tinygrad_seq[gpu]"
    else:
        assert reason is None or reason.startswith("CuPy does not import")
