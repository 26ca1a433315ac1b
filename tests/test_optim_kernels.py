"""The optim kernel family (Adam's and AdamW's fused update, kernels/reference/optim.py) on every
CPU backend against the NumPy reference: float32 and float64, Adam, L2 weight decay, AdamW and
amsgrad over several steps (bias correction), sizes on the calling thread and on the Cython
team, NaN and inf in the gradient, layouts the loops cannot update in place, bad arguments;
and the optimisers under each backend against PyTorch.

(The cuda backend's kernel runs under the simulator in tests/cudasim/test_sim_optim.py.)
"""
import functools
import importlib

import numpy as np
import pytest
from kernel_checks import ADAM_CASES, adam_steps, assert_matches, backend_kernels

import tinygrad_seq as tgs
from tinygrad_seq import nn, optim
from tinygrad_seq.backend import BACKENDS, kernels
from tinygrad_seq.kernels.reference import optim as ref

CPU_BACKENDS = [name for name, (_, devices) in BACKENDS.items() if "cpu" in devices]
COMPILED_CPU = [name for name in CPU_BACKENDS if name != "numpy"]
DTYPES = [np.float32, np.float64]
optim_kernels = functools.partial(backend_kernels, family="optim")   # (backend name) -> module


# The Cython backend shares a parameter of TEAM_MIN_SIZE elements or more over its OpenMP team;
# the tests lower that threshold (small_team) so that small arrays take the team's path too.
TEAM_MIN_SIZE = 4096
# a scalar, a bias (calling thread), a matrix on the team and a vector not a multiple of 16
SHAPES = [(), (37,), (3, TEAM_MIN_SIZE // 3 + 16), (TEAM_MIN_SIZE + 5,)]


@pytest.fixture(autouse=True)
def small_team(monkeypatch):
    try:
        cython_optim = importlib.import_module("tinygrad_seq.kernels.cython.optim")
    except ImportError:            # not built: the cython tests skip, naming why
        return
    monkeypatch.setattr(cython_optim, "TEAM_MIN_SIZE", TEAM_MIN_SIZE)


def _inputs(shape, dtype, steps=4, seed=0):
    rng = np.random.default_rng(seed)
    param = rng.standard_normal(shape).astype(dtype)
    return param, [rng.standard_normal(shape).astype(dtype) for _ in range(steps)]


@pytest.mark.parametrize("name", COMPILED_CPU)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, options, amsgrad", ADAM_CASES, ids=[c[0] for c in ADAM_CASES])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_adam_update_takes_the_references_steps(name, dtype, case, options, amsgrad, shape):
    module = optim_kernels(name)
    param, grads = _inputs(shape, dtype)
    frozen = [g.copy() for g in grads]
    got = adam_steps(module, param, grads, options, amsgrad)
    expected = adam_steps(ref, param, grads, options, amsgrad)
    assert_matches(got, expected, dtype, f"{name} {case}")
    assert not np.allclose(got[0], param)                      # it moved
    for g, before in zip(grads, frozen):
        np.testing.assert_array_equal(g, before)               # the gradient is read only


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_the_update_is_in_place_and_keeps_each_arrays_identity(name):
    module = optim_kernels(name)
    param, (grad,) = _inputs((4, 5), np.float32, steps=1)
    state = [np.zeros_like(param) for _ in range(3)]
    views = [a.reshape(-1) for a in [param] + state]           # share memory with the arrays
    assert module.adam_update(param, grad, *state, lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8,
                              weight_decay=0.0, decoupled=False, step=1) is None
    assert all(np.any(view != 0) for view in views)            # written through, not replaced


def test_the_cython_team_and_the_calling_thread_give_the_same_numbers():
    """Each element's arithmetic is the same whichever thread does it, so any team size gives the
    calling thread's numbers exactly (a slice left out or done twice would not)."""
    module = optim_kernels("cython")
    compiled = importlib.import_module("tinygrad_seq.kernels.cython._optim")
    saved = compiled.get_num_threads()
    param, grads = _inputs((TEAM_MIN_SIZE + 77,), np.float32, steps=3)
    results = {}
    try:
        for threads in (1, 2, 3, 5):
            compiled.set_num_threads(threads)
            results[threads] = adam_steps(module, param, grads, dict(weight_decay=0.1, decoupled=True), True)
    finally:
        compiled.set_num_threads(saved)
    for threads in (2, 3, 5):
        for got, expected in zip(results[threads], results[1]):
            np.testing.assert_array_equal(got, expected)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")   # the reference's inf / inf
@pytest.mark.parametrize("name", COMPILED_CPU)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("size", [19, TEAM_MIN_SIZE + 3])
def test_nan_and_inf_in_the_gradient_spread_as_in_the_reference(name, dtype, amsgrad, size):
    module = optim_kernels(name)
    param, grads = _inputs((size,), dtype, steps=3)
    grads[0][[1, 5]] = np.nan
    grads[1][[2, 7]] = np.inf
    grads[1][[3, 8]] = -np.inf
    grads[2][size - 1] = np.nan                                # a late NaN, in the last SIMD tail
    for options in (dict(weight_decay=0.0, decoupled=False), dict(weight_decay=0.1, decoupled=True)):
        got = adam_steps(module, param, grads, options, amsgrad)
        expected = adam_steps(ref, param, grads, options, amsgrad)
        assert np.isnan(expected[0][[1, 2, 3, 5, 7, 8, size - 1]]).all()   # else this checks nothing
        assert_matches(got, expected, dtype, f"{name} {options}")


@pytest.mark.parametrize("name", COMPILED_CPU)
def test_layouts_the_loop_cannot_update_in_place_get_the_references_result(name):
    """A strided parameter (a view into a larger array) is updated in place by the reference's
    array code; a strided or other-dtype gradient is read as a contiguous copy in param's dtype."""
    module = optim_kernels(name)
    rng = np.random.default_rng(3)
    base = rng.standard_normal((6, 8)).astype(np.float32)
    grads = [rng.standard_normal((6, 8))[:, ::2] for _ in range(3)]       # float64, strided
    got_base, expected_base = base.copy(), base.copy()
    for module_, target in ((module, got_base), (ref, expected_base)):
        param = target[:, ::2]
        state = [np.zeros(param.shape, np.float32) for _ in range(2)]
        for step, grad in enumerate(grads, 1):
            module_.adam_update(param, grad.astype(np.float32), *state, None, lr=0.1, beta1=0.9, beta2=0.99,
                                eps=1e-8, weight_decay=0.0, decoupled=False, step=step)
    assert_matches(got_base, expected_base, np.float32)
    np.testing.assert_array_equal(got_base[:, 1::2], base[:, 1::2])      # the rest of the base untouched
    assert not np.allclose(got_base[:, ::2], base[:, ::2])

    param, (grad,) = _inputs((5, 6), np.float32, steps=1)
    got = adam_steps(module, param, [grad.astype(np.float64).T.copy().T], dict(weight_decay=0.0, decoupled=False),
                     False)
    assert_matches(got, adam_steps(ref, param, [grad], dict(weight_decay=0.0, decoupled=False), False), np.float32)


@pytest.mark.parametrize("name", COMPILED_CPU)
def test_an_empty_parameter_is_no_work(name):
    module = optim_kernels(name)
    empty = np.zeros((0, 3), np.float32)
    module.adam_update(empty, empty.copy(), empty.copy(), empty.copy(), empty.copy(), lr=0.1, beta1=0.9,
                       beta2=0.99, eps=1e-8, weight_decay=0.1, decoupled=True, step=1)
    assert empty.shape == (0, 3)


@pytest.mark.parametrize("name", COMPILED_CPU)
def test_bad_arguments_raise_the_references_message(name):
    module = optim_kernels(name)
    p = np.zeros((2, 3), np.float32)
    hyper = dict(lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.0, decoupled=False)
    calls = [(np.zeros((2, 3), np.int64), p, p.copy(), p.copy(), None, 1),      # not a float parameter
             (p, np.zeros((3, 2), np.float32), p.copy(), p.copy(), None, 1),    # grad of another shape
             (p, p.copy(), np.zeros(6, np.float32), p.copy(), None, 1),          # state of another shape
             (p, p.copy(), p.copy(), p.astype(np.float64), None, 1),            # state of another dtype
             (p, p.copy(), p.copy(), p.copy(), np.zeros(2, np.float32), 1),     # amsgrad's max likewise
             (p, p.copy(), p.copy(), p.copy(), None, 0)]                         # no step counted
    for *arrays, step in calls:
        with pytest.raises(ValueError) as expected:
            ref.adam_update(*arrays, step=step, **hyper)
        with pytest.raises(ValueError, match="^adam_update: ") as got:
            module.adam_update(*arrays, step=step, **hyper)
        assert str(got.value) == str(expected.value) and "\n" not in str(got.value)


@pytest.mark.parametrize("name", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls, options", [("Adam", dict(weight_decay=0.1)), ("Adam", dict(amsgrad=True)),
                                          ("AdamW", dict(weight_decay=0.1, amsgrad=True))])
def test_the_optimisers_follow_pytorch_under_each_backend(name, dtype, cls, options):
    torch = pytest.importorskip("torch")
    optim_kernels(name)
    rng = np.random.default_rng(8)
    inits = [rng.standard_normal(shape).astype(dtype) for shape in ((4, TEAM_MIN_SIZE // 4), (40,))]
    ours = [nn.Parameter(a.copy(), dtype=dtype) for a in inits]
    theirs = [torch.nn.Parameter(torch.tensor(a.copy())) for a in inits]
    opt, topt = getattr(optim, cls)(ours, lr=0.01, **options), getattr(torch.optim, cls)(theirs, lr=0.01, **options)
    tolerance = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    with tgs.backend(name):
        assert kernels("optim").__name__.split(".")[-2] == BACKENDS[name][0].split(".")[-1]
        for _ in range(4):
            for p, q in zip(ours, theirs):
                g = rng.standard_normal(p.shape).astype(dtype)
                p.grad, q.grad = tgs.Tensor(g, dtype=dtype), torch.tensor(g)
            opt.step()
            topt.step()
            for p, q in zip(ours, theirs):
                assert p.dtype == dtype
                np.testing.assert_allclose(p.numpy(), q.detach().numpy(), **tolerance)


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_adam_and_adamw_call_the_chosen_backends_kernel(monkeypatch, name):
    module = optim_kernels(name)
    calls = []
    real = module.adam_update
    monkeypatch.setattr(module, "adam_update", lambda *args, **kwargs: calls.append(kwargs["decoupled"]) or
                        real(*args, **kwargs))
    params = [nn.Parameter(np.ones((2, 3), np.float32)), nn.Parameter(np.ones(3, np.float32))]
    for cls in (optim.Adam, optim.AdamW):
        opt = cls(params, lr=0.1)
        for p in params:
            p.grad = tgs.Tensor(np.ones(p.shape, np.float32))
        with tgs.backend(name):
            opt.step()
    assert calls == [False, False, True, True]              # one call per parameter per step
    assert (params[0].numpy() < 1).all()
