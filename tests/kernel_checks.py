"""Checks shared by the tests: kernels of every backend against the NumPy reference (the CPU
backends' property and build tests, the CUDA kernels under the simulator and on a GPU):
IEEE-aware closeness, the arguments of one recurrence kind and of lstm_forward_xh, a
convolution case's inputs, the pooling round trip and the masked softmax's and log-softmax's
special values; and engine results against PyTorch's (assert_close_to_torch)."""
import importlib

import numpy as np
import pytest

TOLERANCE = {np.dtype(np.float32): (2e-4, 2e-5), np.dtype(np.float64): (1e-10, 1e-12)}
RECURRENCE_KINDS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]
# (x shape, kernel, stride, padding) of the pooling checks: non-overlapping windows, overlapping
# ones (stride < kernel), padding, odd sizes that leave pixels out, non-square everything, one row
POOL_CASES = [
    ((2, 2, 4, 4), (2, 2), (2, 2), (0, 0)),
    ((1, 3, 5, 7), (3, 3), (1, 2), (1, 1)),
    ((2, 1, 6, 5), (3, 2), (2, 1), (1, 0)),
    ((1, 3, 7, 6), (3, 2), (2, 1), (1, 1)),
    ((1, 2, 1, 8), (1, 3), (1, 2), (0, 1)),
    ((2, 1, 1, 9), (1, 3), (1, 3), (0, 1)),
]


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


def lstm_xh_case(rng, dtype, T, B, I, H, bias):
    """(xh, w_x, w_hh, c0, xw, h0) for lstm_forward_xh: xh's rows [x_t | 1 | h_{t-1}] (no ones
    column without a bias), the x part of its last row NaN (never to be read), h0 in row 0,
    w_x = [W_ih | b]; and the same LSTM's xw = x W_ih^T + b and h0 for lstm_forward."""
    K = I + bias
    x = rng.standard_normal((T, B, I)).astype(dtype)
    w_ih = (rng.standard_normal((4 * H, I)) / np.sqrt(I + 1)).astype(dtype)
    b = rng.standard_normal(4 * H).astype(dtype) if bias else np.zeros(4 * H, dtype)
    w_hh = (rng.standard_normal((4 * H, H)) / np.sqrt(H)).astype(dtype)
    h0, c0 = (rng.standard_normal((B, H)).astype(dtype) for _ in range(2))
    xh = np.full((T + 1, B, K + H), np.nan, dtype=dtype)
    xh[:T, :, :I] = x
    if bias:
        xh[:T, :, I] = 1
    xh[0, :, K:] = h0
    w_x = np.concatenate([w_ih, b[:, None]], axis=1) if bias else w_ih
    return xh, w_x, w_hh, c0, (x @ w_ih.T + b).astype(dtype), h0


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


def check_softmax_special_values(both, dtype, what=""):
    """A softmax backend on softmax_special_values, against the reference and the IEEE rules
    themselves: a NaN or +inf in a row makes that row NaN (inf - inf); -inf logits and masked
    entries give exactly 0, an all -inf or fully masked row all zeros, never NaN; a NaN under
    the mask is excluded like any masked value; NaN gradients (in a partly and in a fully masked
    row) propagate as in the reference.  `both(name, *args)` gives (the backend's result, the
    reference's result) of softmax kernel `name`."""
    x, mask = softmax_special_values(dtype)
    for m in (None, mask):
        y, expected = both("softmax_forward", x, m)
        assert_matches(y, expected, dtype, f"{what} softmax_forward mask={m is not None}")
        assert np.all(np.isnan(y[0])) and np.all(np.isnan(y[1]))
        assert y[2, 0] == 0 and y[2, 2] == 0 and np.all(y[3] == 0)
        if m is not None:
            assert np.all(np.isfinite(y[4])) and y[4, 1] == 0 and np.all(y[5] == 0)
    dy = np.ones_like(x)
    dy[4, 0] = dy[5, 0] = np.nan
    assert_matches(*both("softmax_backward", dy, expected), dtype, f"{what} softmax_backward")


def log_softmax_special_values(dtype):
    """Logits covering the IEEE cases of log-softmax: a NaN row, a +inf row, -inf beside finite
    logits, an all -inf row, logits far apart (1000 and -1000: exp underflows, nothing overflows)
    and a row of equal logits (-log 4 each)."""
    return np.array([[1.0, np.nan, 2.0, 0.5],
                     [1.0, np.inf, 2.0, 0.5],
                     [-np.inf, 3.0, -np.inf, 1.0],
                     [-np.inf, -np.inf, -np.inf, -np.inf],
                     [1000.0, 999.0, -1000.0, 0.0],
                     [-1e4, -1e4, -1e4, -1e4]], dtype=dtype)


def check_log_softmax_special_values(both, dtype, what=""):
    """A log-softmax backend on log_softmax_special_values, against the reference and the IEEE
    rules themselves (PyTorch's): a NaN or +inf in a row, or a row of only -inf, makes the row
    NaN; -inf beside a finite max gives exactly -inf; far-apart logits stay finite.  Backward: a
    NaN in dy makes its row NaN; an inf in dy meets exp(-inf) = 0 exactly (0 * inf = NaN) and
    exp(y) > 0 elsewhere (-inf), as in the reference.  `both(name, *args)` gives (the backend's
    result, the reference's result) of softmax-family kernel `name`."""
    x = log_softmax_special_values(dtype)
    y, expected = both("log_softmax_forward", x)
    assert_matches(y, expected, dtype, f"{what} log_softmax_forward")
    assert np.all(np.isnan(y[[0, 1, 3]]))
    assert np.isneginf(y[2, 0]) and np.isneginf(y[2, 2]) and np.all(np.isfinite(y[2, [1, 3]]))
    assert np.all(np.isfinite(y[4:]))
    np.testing.assert_allclose(y[5], -np.log(4.0), rtol=1e-6)
    dy = np.ones_like(x)
    dy[4, 0] = np.nan
    dy[2, 1] = dy[5, 1] = np.inf
    dx, expected_dx = both("log_softmax_backward", dy, expected)
    assert_matches(dx, expected_dx, dtype, f"{what} log_softmax_backward")
    assert np.all(np.isnan(dx[4])) and np.isnan(dx[2, 0]) and np.isnan(dx[5, 1]) and np.isneginf(dx[5, 0])


def conv_inputs(rng, dtype, x_shape, w_shape):
    """Input, weight and bias of one convolution case: standard normal in `dtype`."""
    return tuple(rng.standard_normal(shape).astype(dtype) for shape in (x_shape, w_shape, w_shape[:1]))


def check_pooling(both, assert_close, rng, x, kernel, stride, padding):
    """Max and average pooling, forward and backward, of one backend against the reference.
    `both(name, *args)` gives (the backend's result as host arrays, the reference's result) of
    conv kernel `name`; `assert_close(got, expected)` compares float outputs; the max-pooling
    argmax must be int64 and equal to the reference's (ties included)."""
    (y, argmax), (expected_y, expected_argmax) = both("maxpool2d_forward", x, kernel, stride, padding)
    assert_close(y, expected_y)
    assert argmax.dtype == np.int64
    np.testing.assert_array_equal(argmax, expected_argmax)
    dy = rng.standard_normal(expected_y.shape).astype(x.dtype)
    assert_close(*both("maxpool2d_backward", dy, expected_argmax, x.shape))
    assert_close(*both("avgpool2d_forward", x, kernel, stride, padding))
    assert_close(*both("avgpool2d_backward", dy, x.shape, kernel, stride, padding))


def backend_kernels(backend_name, family):
    """Backend `backend_name`'s kernel module of `family`; the test is skipped, naming why, where
    that backend is unavailable on this machine (a compiled one not built, Numba missing)."""
    from tinygrad_seq.backend import BACKENDS, unavailable_reason
    reason = unavailable_reason(backend_name)
    if reason:
        pytest.skip(f"backend {backend_name} unavailable: {reason}")
    return importlib.import_module(f"{BACKENDS[backend_name][0]}.{family}")


def assert_same_dtype_and_close(got, expected, dtype, tolerance):
    """`got` has `dtype` and the reference's shape, and its numbers are within
    tolerance[dtype] (a dict of rtol and atol) of the reference's."""
    assert got.dtype == np.dtype(dtype) and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, **tolerance[np.dtype(dtype)])


def assert_raises_like_reference(kernels, reference, name, *args):
    """Kernel `name` of module `kernels` refuses `args` with the ValueError, message and all,
    that the reference module's kernel of that name raises."""
    with pytest.raises(ValueError) as expected:
        getattr(reference, name)(*args)
    with pytest.raises(ValueError) as got:
        getattr(kernels, name)(*args)
    assert str(got.value) == str(expected.value)


# calls every softmax backend must refuse as the reference does: a 1-D input, a mask of the
# wrong shape, a gradient of the wrong shape
SOFTMAX_BAD_CALLS = [("softmax_forward", (np.zeros(3), None)),
                     ("softmax_forward", (np.zeros((2, 3)), np.zeros((2, 4), dtype=bool))),
                     ("softmax_backward", (np.zeros((2, 4)), np.zeros((2, 3))))]
# and the log-softmax's: a 1-D or 3-D input, a gradient of the wrong shape or a 1-D pair
LOG_SOFTMAX_BAD_CALLS = [("log_softmax_forward", (np.zeros(3),)),
                         ("log_softmax_forward", (np.zeros((2, 3, 4)),)),
                         ("log_softmax_backward", (np.zeros((2, 4)), np.zeros((2, 3)))),
                         ("log_softmax_backward", (np.zeros(3), np.zeros(3)))]


def char_lstm_losses(out_dir, backend, device="cpu", steps=20):
    """(trainer, losses) of `steps` seeded training steps of a small char-LSTM on the CLI tests'
    short text under kernel backend `backend` on `device`: the whole-model check that a backend
    trains as numpy does."""
    from cli_helpers import TEXT
    import tinygrad_seq as tgs
    from tinygrad_seq.training import LMTrainer, TrainConfig, split_corpus
    train, val = split_corpus(TEXT)
    config = TrainConfig(model="lstm", hidden=32, embed=16, seq_len=12, batch_size=4, steps=steps,
                         eval_every=steps, out=str(out_dir), sample_length=20, lr=1e-2,
                         backend=backend, device=device)
    trainer = LMTrainer.from_texts(config, train, val)
    with tgs.backend(backend):
        losses = [float(trainer.train_step()) for _ in range(steps)]
    return trainer, losses


def assert_close_to_torch(ours, theirs, tol=1e-9):
    """A tinygrad_seq result (Tensor or array) of PyTorch's shape and within `tol` (relative and
    absolute) of PyTorch's (a torch.Tensor or an array)."""
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else theirs
    ours = ours.numpy() if hasattr(ours, "numpy") else np.asarray(ours)
    assert ours.shape == np.shape(theirs), f"shape {ours.shape} != {np.shape(theirs)}"
    np.testing.assert_allclose(ours, theirs, rtol=tol, atol=tol)


# Adam's settings the optim kernels are checked on: (name, adam_update's keyword arguments,
# amsgrad) for Adam, Adam with L2 weight decay, AdamW, with and without amsgrad
ADAM_CASES = [
    ("adam", dict(weight_decay=0.0, decoupled=False), False),
    ("adam_l2", dict(weight_decay=0.1, decoupled=False), False),
    ("adam_amsgrad", dict(weight_decay=0.0, decoupled=False), True),
    ("adam_l2_amsgrad", dict(weight_decay=0.05, decoupled=False), True),
    ("adamw", dict(weight_decay=0.1, decoupled=True), False),
    ("adamw_amsgrad", dict(weight_decay=0.3, decoupled=True), True),
]


def adam_steps(kernels, param, grads, options, amsgrad, **hyper):
    """(param, exp_avg, exp_avg_sq, max_exp_avg_sq or None) after one `kernels.adam_update` per
    gradient of `grads` (steps 1, 2, ...) from `param` and zero moments; the inputs are left alone."""
    param = param.copy()
    state = [np.zeros(param.shape, param.dtype) for _ in range(3 if amsgrad else 2)] + ([] if amsgrad else [None])
    hyper = {**dict(lr=0.05, beta1=0.9, beta2=0.999, eps=1e-8), **hyper, **options}
    for step, grad in enumerate(grads, 1):
        kernels.adam_update(param, grad, *state, step=step, **hyper)
    return (param, *state)


def _attention_arrays(N=2, L=3, S=4, E=5, Ev=6, dtype=np.float64):
    return tuple(np.zeros(shape, dtype=dtype) for shape in ((N, L, E), (N, S, E), (N, S, Ev)))


_q, _k, _v = _attention_arrays()
_out, _lse = np.zeros((2, 3, 6)), np.zeros((2, 3))
# calls every attention backend must refuse as the reference does: 2-D q, N, E and S that
# disagree, no keys, mixed and integer dtypes; a backward whose lse, dout or out do not fit
ATTENTION_BAD_CALLS = [
    ("attention_forward", (_q[0], _k, _v, 1.0, False)),
    ("attention_forward", (_q[:1], _k, _v, 1.0, False)),
    ("attention_forward", (_q[..., :4], _k, _v, 1.0, True)),
    ("attention_forward", (_q, _k[:, :3], _v, 1.0, False)),
    ("attention_forward", _attention_arrays(S=0) + (1.0, True)),
    ("attention_forward", (_q.astype(np.float32), _k, _v, 1.0, False)),
    ("attention_forward", (_q.astype(np.int64), _k.astype(np.int64), _v.astype(np.int64), 1.0, False)),
    ("attention_backward", (_out, _q, _k, _v, _out, _lse[:, :2], 1.0, True)),
    ("attention_backward", (_out[..., :5], _q, _k, _v, _out, _lse, 1.0, False)),
    ("attention_backward", (_out.astype(np.float32), _q, _k, _v, _out, _lse, 1.0, False)),
]


def attention_inputs(rng, dtype, N, L, S, E, Ev):
    """q, k, v and dout of one attention case, standard normal in `dtype`."""
    return tuple(rng.standard_normal(shape).astype(dtype) for shape in ((N, L, E), (N, S, E), (N, S, Ev), (N, L, Ev)))


def check_attention_special_values(kernels, reference, dtype, causal):
    """NaN and inf in q, k, v and dout against the reference, and the rule behind it: a NaN
    reaches the queries that see it (under the causal mask, only those: a NaN key or value at
    position j leaves the rows i < j finite), and the hidden pairs never pass one on."""
    rng = np.random.default_rng(7)
    N, L, S, E, Ev = 3, 9, 9, 4, 5
    q, k, v, dout = attention_inputs(rng, dtype, N, L, S, E, Ev)
    q[0, 2, 1] = np.nan             # matrix 0: one query row NaN
    k[1, 5, 0] = np.nan             # matrix 1: a key seen by the rows i >= 5 only
    v[2, 6, 3] = np.inf             # matrix 2: an infinite value
    dout[1, 1, 2] = np.nan
    out, lse = kernels.attention_forward(q, k, v, 0.5, causal)
    expected = reference.attention_forward(q, k, v, 0.5, causal)
    assert_matches((out, lse), expected, dtype, f"attention_forward causal={causal}")
    assert np.all(np.isnan(out[0, 2])) and np.all(np.isnan(out[1, 5:]))
    if causal:
        assert np.all(np.isfinite(out[1, :5])) and np.all(np.isfinite(out[2, :6]))
        assert np.all(np.isfinite(out[0, [0, 1] + list(range(3, L))]))
    else:
        assert np.all(np.isnan(out[1]))
    grads = kernels.attention_backward(dout, q, k, v, *expected, 0.5, causal)
    assert_matches(grads, reference.attention_backward(dout, q, k, v, *expected, 0.5, causal), dtype,
                   f"attention_backward causal={causal}")


# calls every normalization backend must refuse as the reference does: 1-D and 3-D x, an integer
# and a float16 x, rows of length 0, a weight of the wrong length or dtype, a bias of the wrong
# length; a backward whose dy, mean or rstd do not fit x
_x = np.zeros((3, 4))
NORMALIZATION_BAD_CALLS = [
    ("layer_norm_forward", (np.zeros(4), None, None, 1e-5)),
    ("layer_norm_forward", (np.zeros((2, 3, 4)), None, None, 1e-5)),
    ("layer_norm_forward", (np.zeros((3, 4), dtype=np.int64), None, None, 1e-5)),
    ("layer_norm_forward", (np.zeros((3, 4), dtype=np.float16), None, None, 1e-5)),
    ("layer_norm_forward", (np.zeros((3, 0)), None, None, 1e-5)),
    ("layer_norm_forward", (_x, np.ones(3), None, 1e-5)),
    ("layer_norm_forward", (_x, np.ones(4, dtype=np.float32), None, 1e-5)),
    ("layer_norm_forward", (_x, None, np.ones(5), 1e-5)),
    ("layer_norm_backward", (np.zeros((3, 5)), _x, None, np.zeros(3), np.ones(3), True)),
    ("layer_norm_backward", (_x.astype(np.float32), _x, None, np.zeros(3), np.ones(3), True)),
    ("layer_norm_backward", (_x, _x, None, np.zeros(2), np.ones(3), False)),
    ("layer_norm_backward", (_x, _x, np.ones(4), np.zeros(3), np.ones(3, dtype=np.float32), True)),
    ("layer_norm_backward", (_x, _x, np.ones(2), np.zeros(3), np.ones(3), True)),
]


def check_layer_norm_special_values(kernels, reference, dtype):
    """NaN and inf through a layer norm backend, against the reference and the rule behind it: a
    NaN or an inf in a row of x makes that whole row of y (and its mean or rstd) NaN and leaves
    the other rows alone; a constant row gives y = bias (var 0, rstd 1/sqrt(eps)); a NaN in dy
    reaches its row of dx (through mean(g)) and its column of dweight and dbias, nothing else."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((6, 21)).astype(dtype)
    x[0, 3], x[1, 7], x[2, 0] = np.nan, np.inf, -np.inf
    x[4] = 2.5
    weight, bias = rng.standard_normal(21).astype(dtype), rng.standard_normal(21).astype(dtype)
    with np.errstate(invalid="ignore"):
        expected = reference.layer_norm_forward(x, weight, bias, 1e-5)
        got = kernels.layer_norm_forward(x, weight, bias, 1e-5)
    assert_matches(tuple(got), tuple(expected), dtype, "layer_norm_forward with NaN/inf")
    y, mean, rstd = got
    assert np.all(np.isnan(y[:3])) and np.all(np.isfinite(y[3:]))
    np.testing.assert_allclose(y[4], bias, rtol=1e-6)
    np.testing.assert_allclose(rstd[4], 1 / np.sqrt(1e-5), rtol=1e-6)
    dy = rng.standard_normal(x.shape).astype(dtype)
    with np.errstate(invalid="ignore"):
        grads = kernels.layer_norm_backward(dy, x, weight, mean, rstd, True)
        assert_matches(tuple(grads), reference.layer_norm_backward(dy, x, weight, mean, rstd, True), dtype,
                       "layer_norm_backward of NaN rows")
    assert np.all(np.isnan(grads[0][:3])) and np.all(np.isfinite(grads[0][3:]))
    finite = np.where(np.isfinite(x).all(axis=1, keepdims=True), x, 1.0).astype(dtype)
    y, mean, rstd = kernels.layer_norm_forward(finite, weight, bias, 1e-5)
    dy[3, 5] = np.nan
    with np.errstate(invalid="ignore"):
        grads = kernels.layer_norm_backward(dy, finite, weight, mean, rstd, True)
        assert_matches(tuple(grads), reference.layer_norm_backward(dy, finite, weight, mean, rstd, True), dtype,
                       "layer_norm_backward of a NaN gradient")
    dx, dweight, dbias = grads
    assert np.all(np.isnan(dx[3])) and np.all(np.isfinite(np.delete(dx, 3, axis=0)))
    for d in (dweight, dbias):
        assert np.isnan(d[5]) and np.all(np.isfinite(np.delete(d, 5)))
