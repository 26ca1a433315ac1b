"""Kernel-output comparison shared by the property tests of the CPU backends
(tests/test_kernel_properties.py) and of the CUDA kernels under the simulator
(tests/cudasim/test_sim_properties.py): IEEE-aware closeness to the NumPy reference, and the
arguments of one recurrence kind."""
import numpy as np

TOLERANCE = {np.dtype(np.float32): (2e-4, 2e-5), np.dtype(np.float64): (1e-10, 1e-12)}
RECURRENCE_KINDS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]


def assert_matches(got, expected, dtype, what=""):
    """Same structure, dtypes and shapes; numbers close relative to the output's magnitude;
    NaN exactly where the reference has NaN, infinities of the same sign where it has them."""
    got = got if isinstance(got, tuple) else (got,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert len(got) == len(expected), what
    rtol, atol = TOLERANCE[np.dtype(dtype)]
    for k, (g, e) in enumerate(zip(got, expected)):
        if e is None:
            assert g is None, what
            continue
        g, e = np.asarray(g), np.asarray(e)
        label = f"{what} output {k}"
        assert g.shape == e.shape, label
        if e.dtype.kind == "f":
            assert g.dtype == e.dtype == np.dtype(dtype), label
            np.testing.assert_array_equal(np.isnan(g), np.isnan(e), err_msg=f"{label}: NaN positions")
            np.testing.assert_array_equal(np.isposinf(g), np.isposinf(e), err_msg=f"{label}: +inf")
            np.testing.assert_array_equal(np.isneginf(g), np.isneginf(e), err_msg=f"{label}: -inf")
            finite = np.isfinite(e)
            scale = 1.0 + (np.max(np.abs(e[finite])) if finite.any() else 0.0)
            np.testing.assert_allclose(g[finite], e[finite], rtol=rtol, atol=atol * scale, err_msg=label)
        else:
            np.testing.assert_array_equal(g, e, err_msg=label)


def recurrence_args(kind, rng, dtype, T, B, H):
    """(cell, forward args, backward args after the forward's outputs) of one recurrence kind
    (one of RECURRENCE_KINDS)."""
    def arr(*shape, scale=1.0):
        return (scale * rng.standard_normal(shape)).astype(dtype)

    gates = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}[kind]
    xw, w_hh = arr(T, B, gates * H, scale=1.5), arr(gates * H, H, scale=H ** -0.5)
    h0, c0, dhs, dcT = arr(B, H), arr(B, H), arr(T, B, H), arr(B, H)
    if kind.startswith("rnn"):
        act = kind[4:]
        return "rnn", (xw, w_hh, h0, act), lambda out: (dhs, w_hh, h0, out, act)
    if kind == "lstm":
        return "lstm", (xw, w_hh, h0, c0), lambda out: (dhs, dcT, w_hh, h0, c0, *out)
    b_hh = arr(3 * H, scale=0.3)
    return "gru", (xw, w_hh, b_hh, h0), lambda out: (dhs, w_hh, h0, *out)


def softmax_special_values(dtype):
    """Logits and mask covering the IEEE cases of a masked softmax: a NaN row, a +inf row, -inf
    logits, an all -inf row, a NaN under the mask (row 4) and a fully masked row (row 5)."""
    x = np.array([[1.0, np.nan, 2.0, 0.5],
                  [1.0, np.inf, 2.0, 0.5],
                  [-np.inf, 3.0, -np.inf, 1.0],
                  [-np.inf, -np.inf, -np.inf, -np.inf],
                  [0.5, np.nan, 1.5, 2.0],
                  [7.0, 8.0, 9.0, 1.0]], dtype=dtype)
    mask = np.zeros_like(x, dtype=bool)
    mask[4, 1] = True
    mask[5] = True
    return x, mask
