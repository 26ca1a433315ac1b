"""Comparison helpers for the simulator tests (the simulator runs each thread in Python:
keep shapes tiny, a few hundred elements per launch)."""
import numpy as np

DTYPES = [np.float32, np.float64]
# float32 kernels compute in float32 (the simulator promotes some of it to float64)
TOLERANCE = {np.dtype(np.float32): dict(rtol=2e-5, atol=2e-6),
             np.dtype(np.float64): dict(rtol=1e-12, atol=1e-13)}


def assert_close(actual, expected, dtype):
    """Same dtype and shape, and equal within the dtype's tolerance."""
    assert actual.dtype == np.dtype(dtype), f"dtype {actual.dtype}, expected {np.dtype(dtype)}"
    assert actual.shape == expected.shape, f"shape {actual.shape}, expected {expected.shape}"
    np.testing.assert_allclose(actual, expected, **TOLERANCE[np.dtype(dtype)])


def directional_derivative(loss, inputs, index, direction, eps=1e-6):
    """d/de loss(inputs with inputs[index] + e*direction) at e = 0, by central differences (float64)."""
    plus, minus = list(inputs), list(inputs)
    plus[index] = inputs[index] + eps * direction
    minus[index] = inputs[index] - eps * direction
    return (loss(*plus) - loss(*minus)) / (2 * eps)


def frozen(*arrays):
    """Copies to compare against afterwards: kernels must not modify their inputs."""
    return [None if a is None else a.copy() for a in arrays]


def assert_unchanged(arrays, copies):
    for a, c in zip(arrays, copies):
        if a is not None:
            np.testing.assert_array_equal(a, c)
