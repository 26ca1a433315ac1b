"""CUDA recurrence kernels (a GEMM + one fused gate kernel per step) vs the NumPy reference,
and their backward passes vs finite differences of their own forward passes."""
import numpy as np
import pytest
from kernel_checks import assert_raises_like_reference, lstm_xh_case
from simcheck import DTYPES, assert_close, assert_unchanged, directional_derivative, frozen

from tinygrad_seq.kernels.cuda import recurrence as cuda_rec
from tinygrad_seq.kernels.reference import recurrence as ref

# (T, B, H): one step, an odd size, and more (b, j) elements than the simulator grid's
# threads (2 blocks of 32), so the grid-stride loop runs more than once
SHAPES = [(1, 1, 3), (3, 2, 5), (2, 3, 23)]


def _rnn_inputs(rng, dtype, T, B, H, gates):
    xw = rng.standard_normal((T, B, gates * H)).astype(dtype)
    w_hh = (rng.standard_normal((gates * H, H)) / np.sqrt(H)).astype(dtype)
    h0 = (0.5 * rng.standard_normal((B, H))).astype(dtype)
    return xw, w_hh, h0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_forward_backward(rng, dtype, shape, nonlinearity):
    T, B, H = shape
    xw, w_hh, h0 = _rnn_inputs(rng, dtype, T, B, H, 1)
    copies = frozen(xw, w_hh, h0)
    hs = cuda_rec.rnn_forward(xw, w_hh, h0, nonlinearity)
    assert_close(hs, ref.rnn_forward(xw, w_hh, h0, nonlinearity), dtype)
    dhs = rng.standard_normal(hs.shape).astype(dtype)
    dpre, dh0 = cuda_rec.rnn_backward(dhs, w_hh, h0, hs, nonlinearity)
    rdpre, rdh0 = ref.rnn_backward(dhs, w_hh, h0, hs, nonlinearity)
    assert_close(dpre, rdpre, dtype)
    assert_close(dh0, rdh0, dtype)
    assert_unchanged([xw, w_hh, h0], copies)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_forward_fills_a_strided_hs_out(rng, dtype, cell):
    """hs_out: the states copied into the given strided array, which is returned; the backward
    takes that hs as it is."""
    T, B, H = 3, 2, 5
    gates = 4 if cell == "lstm" else 1
    xw, w_hh, h0 = _rnn_inputs(rng, dtype, T, B, H, gates)
    c0 = rng.standard_normal((B, H)).astype(dtype)
    states = (h0, c0) if cell == "lstm" else (h0, "tanh")
    rows = np.zeros((T + 1, B, 3 + H), dtype=dtype)
    given = getattr(cuda_rec, f"{cell}_forward")(xw, w_hh, *states, hs_out=rows[1:, :, 3:])
    expected = getattr(ref, f"{cell}_forward")(xw, w_hh, *states)
    hs = given[0] if cell == "lstm" else given
    assert_close(rows[1:, :, 3:], expected[0] if cell == "lstm" else expected, dtype)
    dhs = rng.standard_normal((T, B, H)).astype(dtype)
    if cell == "rnn":
        got, want = cuda_rec.rnn_backward(dhs, w_hh, h0, hs, "tanh"), ref.rnn_backward(dhs, w_hh, h0, expected, "tanh")
        for g, e in zip(got, want):
            assert_close(g, e, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lstm_forward_xh_on_the_engine_rows(rng, dtype):
    """lstm_forward_xh: projected by one GEMM, then the step kernels; the states land in the
    rows' h columns one step down, and the inputs and weights are left as they were."""
    T, B, H, K = 3, 2, 5, 4                       # K: 3 inputs and the bias's column of ones
    xh, w_x, w_hh, c0, *_ = lstm_xh_case(rng, dtype, T, B, 3, H, True)
    theirs, copies = xh.copy(), frozen(w_x, w_hh, c0)
    got = cuda_rec.lstm_forward_xh(xh, w_x, w_hh, c0) + (xh[1:, :, K:],)
    expected = ref.lstm_forward_xh(theirs, w_x, w_hh, c0) + (theirs[1:, :, K:],)
    for g, e in zip(got, expected):
        assert_close(g, e, dtype)
    np.testing.assert_array_equal(xh[:, :, :K], theirs[:, :, :K])
    assert_unchanged([w_x, w_hh, c0], copies)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_lstm_forward_backward(rng, dtype, shape):
    T, B, H = shape
    xw, w_hh, h0 = _rnn_inputs(rng, dtype, T, B, H, 4)
    c0 = rng.standard_normal((B, H)).astype(dtype)
    copies = frozen(xw, w_hh, h0, c0)
    hs, cs, gates = cuda_rec.lstm_forward(xw, w_hh, h0, c0)
    for got, expected in zip((hs, cs, gates), ref.lstm_forward(xw, w_hh, h0, c0)):
        assert_close(got, expected, dtype)
    dhs = rng.standard_normal(hs.shape).astype(dtype)
    dcT = rng.standard_normal((B, H)).astype(dtype)
    copies += frozen(dhs, dcT)
    got = cuda_rec.lstm_backward(dhs, dcT, w_hh, h0, c0, hs, cs, gates)
    expected = ref.lstm_backward(dhs, dcT, w_hh, h0, c0, hs, cs, gates)
    for g, e in zip(got, expected):
        assert_close(g, e, dtype)
    assert_unchanged([xw, w_hh, h0, c0, dhs, dcT], copies)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_gru_forward_backward(rng, dtype, shape):
    T, B, H = shape
    xw, w_hh, h0 = _rnn_inputs(rng, dtype, T, B, H, 3)
    b_hh = rng.standard_normal(3 * H).astype(dtype)
    copies = frozen(xw, w_hh, h0, b_hh)
    hs, gates, hn = cuda_rec.gru_forward(xw, w_hh, b_hh, h0)
    for got, expected in zip((hs, gates, hn), ref.gru_forward(xw, w_hh, b_hh, h0)):
        assert_close(got, expected, dtype)
    dhs = rng.standard_normal(hs.shape).astype(dtype)
    got = cuda_rec.gru_backward(dhs, w_hh, h0, hs, gates, hn)
    expected = ref.gru_backward(dhs, w_hh, h0, hs, gates, hn)
    for g, e in zip(got, expected):
        assert_close(g, e, dtype)
    assert_unchanged([xw, w_hh, h0, b_hh], copies)


# ----------------------------------------------------------------------------- finite differences
# L = sum(R * outputs) for fixed random R; <dL/dinput, v> must equal the directional
# derivative of L along a random v, computed from the CUDA forward alone.

def _check_direction(rng, loss, inputs, index, analytic):
    direction = rng.standard_normal(inputs[index].shape)
    numeric = directional_derivative(loss, inputs, index, direction)
    np.testing.assert_allclose(np.sum(analytic * direction), numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_backward_matches_finite_differences(rng, nonlinearity):
    xw, w_hh, h0 = _rnn_inputs(rng, np.float64, 3, 2, 4, 1)
    R = rng.standard_normal((3, 2, 4))

    def loss(xw, w_hh, h0):
        return np.sum(R * cuda_rec.rnn_forward(xw, w_hh, h0, nonlinearity))

    hs = cuda_rec.rnn_forward(xw, w_hh, h0, nonlinearity)
    dpre, dh0 = cuda_rec.rnn_backward(R, w_hh, h0, hs, nonlinearity)
    h_prev = np.concatenate([h0[None], hs[:-1]])
    dw_hh = np.einsum("tbi,tbj->ij", dpre, h_prev)          # what the engine computes from dpre
    _check_direction(rng, loss, [xw, w_hh, h0], 0, dpre)
    _check_direction(rng, loss, [xw, w_hh, h0], 1, dw_hh)
    _check_direction(rng, loss, [xw, w_hh, h0], 2, dh0)


def test_lstm_backward_matches_finite_differences(rng):
    T, B, H = 3, 2, 3
    xw, w_hh, h0 = _rnn_inputs(rng, np.float64, T, B, H, 4)
    c0 = rng.standard_normal((B, H))
    R_h, R_c = rng.standard_normal((T, B, H)), rng.standard_normal((B, H))

    def loss(xw, w_hh, h0, c0):
        hs, cs, _ = cuda_rec.lstm_forward(xw, w_hh, h0, c0)
        return np.sum(R_h * hs) + np.sum(R_c * cs[-1])      # uses dcT too

    hs, cs, gates = cuda_rec.lstm_forward(xw, w_hh, h0, c0)
    dpre, dh0, dc0 = cuda_rec.lstm_backward(R_h, R_c, w_hh, h0, c0, hs, cs, gates)
    h_prev = np.concatenate([h0[None], hs[:-1]])
    dw_hh = np.einsum("tbi,tbj->ij", dpre, h_prev)
    inputs = [xw, w_hh, h0, c0]
    for index, analytic in enumerate([dpre, dw_hh, dh0, dc0]):
        _check_direction(rng, loss, inputs, index, analytic)


def test_gru_backward_matches_finite_differences(rng):
    T, B, H = 3, 2, 3
    xw, w_hh, h0 = _rnn_inputs(rng, np.float64, T, B, H, 3)
    b_hh = rng.standard_normal(3 * H)
    R = rng.standard_normal((T, B, H))

    def loss(xw, w_hh, b_hh, h0):
        return np.sum(R * cuda_rec.gru_forward(xw, w_hh, b_hh, h0)[0])

    hs, gates, hn = cuda_rec.gru_forward(xw, w_hh, b_hh, h0)
    dxw, dhh, dh0 = cuda_rec.gru_backward(R, w_hh, h0, hs, gates, hn)
    h_prev = np.concatenate([h0[None], hs[:-1]])
    dw_hh = np.einsum("tbi,tbj->ij", dhh, h_prev)
    db_hh = dhh.sum(axis=(0, 1))
    inputs = [xw, w_hh, b_hh, h0]
    for index, analytic in enumerate([dxw, dw_hh, db_hh, dh0]):
        _check_direction(rng, loss, inputs, index, analytic)


# ----------------------------------------------------------------------------- bad arguments

def _same_error(name, *args):
    assert_raises_like_reference(cuda_rec, ref, name, *args)


def test_bad_arguments_raise_the_reference_message():
    """The cuda wrappers use the reference's checks, so every message is the reference's."""
    T, B, H = 2, 1, 3
    z = np.zeros
    xw, w_hh, h0 = z((T, B, H)), z((H, H)), z((B, H))
    _same_error("rnn_forward", xw, w_hh, h0, "sigmoid")
    _same_error("rnn_backward", xw, w_hh, h0, xw, "gelu")
    _same_error("rnn_forward", xw, z((H, H + 1)), h0, "tanh")
    _same_error("rnn_forward", xw.astype(np.float32), w_hh, h0, "tanh")   # mixed dtypes
    _same_error("rnn_backward", xw, w_hh, h0, z((T + 1, B, H)), "relu")
    _same_error("lstm_forward", z((T, B, 3 * H)), z((4 * H, H)), h0, h0)
    _same_error("lstm_forward", z((T, B, 4 * H)), z((4 * H, H)), h0, z((B + 1, H)))
    _same_error("lstm_backward", xw, z((B, H + 1)), z((4 * H, H)), h0, h0, xw, xw, z((T, B, 4 * H)))
    _same_error("gru_forward", z((T, B, 3 * H)), z((3 * H, H)), z((2 * H,)), h0)
    _same_error("gru_backward", xw, z((3 * H, H)), h0, xw, z((T, B, 3 * H)), z((T, B, H + 1)))
    _same_error("gru_forward", z((T, B)), z((3 * H, H)), z((3 * H,)), h0)
