"""The optim family's CUDA kernel (kernels/cuda/optim.py, one launch per parameter) under the
simulator: the reference's steps for Adam, L2 weight decay, AdamW and amsgrad in float32 and
float64, NaN and inf in the gradient, the reference's fallback for a strided parameter, and
Adam/AdamW reaching it through the kernel registry."""
import numpy as np
import pytest
from kernel_checks import ADAM_CASES, adam_steps, assert_matches
from simcheck import DTYPES

import tinygrad_seq as tgs
from tinygrad_seq import optim
from tinygrad_seq.kernels.cuda import _launch
from tinygrad_seq.kernels.cuda import optim as cuda_optim
from tinygrad_seq.kernels.reference import optim as ref

optimizers = __import__("tinygrad_seq.optim.optimizers", fromlist=["kernels"])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, options, amsgrad", ADAM_CASES, ids=[c[0] for c in ADAM_CASES])
@pytest.mark.parametrize("shape", [(), (3, 5), (_launch.THREADS_PER_BLOCK * _launch.MAX_BLOCKS + 7,)], ids=str)
def test_one_launch_takes_the_references_steps(rng, dtype, case, options, amsgrad, shape):
    param = rng.standard_normal(shape).astype(dtype)
    grads = [rng.standard_normal(shape).astype(dtype) for _ in range(3)]
    with _launch.recording_launches() as launches:
        got = adam_steps(cuda_optim, param, grads, options, amsgrad)
    assert [name for name, _ in launches] == ["_adam_step"] * 3
    assert_matches(got, adam_steps(ref, param, grads, options, amsgrad), dtype, case)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")   # the reference's inf / inf
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("amsgrad", [False, True])
def test_nan_and_inf_in_the_gradient_spread_as_in_the_reference(rng, dtype, amsgrad):
    param = rng.standard_normal(11).astype(dtype)
    grads = [rng.standard_normal(11).astype(dtype) for _ in range(2)]
    grads[0][2], grads[1][[4, 6]] = np.nan, [np.inf, -np.inf]
    options = dict(weight_decay=0.1, decoupled=True)
    expected = adam_steps(ref, param, grads, options, amsgrad)
    assert np.isnan(expected[0][[2, 4, 6]]).all()
    assert_matches(adam_steps(cuda_optim, param, grads, options, amsgrad), expected, dtype)


def test_a_strided_parameter_gets_the_references_update_in_place():
    base = np.ones((4, 4), dtype=np.float32)
    param, grad = base[:, ::2], np.full((4, 2), 0.5, np.float32)
    expected = param.copy()
    ref.adam_update(expected, grad, np.zeros_like(expected), np.zeros_like(expected), None, lr=0.1, beta1=0.9,
                    beta2=0.999, eps=1e-8, weight_decay=0.0, decoupled=False, step=1)
    with _launch.recording_launches() as launches:
        cuda_optim.adam_update(param, grad, np.zeros((4, 2), np.float32), np.zeros((4, 2), np.float32), None,
                               lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decoupled=False, step=1)
    assert launches == []
    np.testing.assert_allclose(base[:, ::2], expected, rtol=1e-6)
    assert (base[:, 1::2] == 1).all()


def _train(cls, options, dtype, steps=3, seed=0):
    rng = np.random.default_rng(seed)
    params = [tgs.Tensor(rng.standard_normal(shape), dtype=dtype, requires_grad=True) for shape in ((3, 5), (7,))]
    opt = cls(params, lr=0.05, **options)
    for _ in range(steps):
        for p in params:
            p.grad = tgs.Tensor(rng.standard_normal(p.shape), dtype=dtype)
        opt.step()
    return [p.numpy() for p in params], [s for p in params for s in opt.state[p].values() if hasattr(s, "shape")]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls, options", [(optim.Adam, dict()), (optim.Adam, dict(weight_decay=0.1, amsgrad=True)),
                                          (optim.AdamW, dict()), (optim.AdamW, dict(weight_decay=0.3, amsgrad=True))])
def test_adam_reaches_the_kernel_through_the_registry(monkeypatch, cls, options, dtype):
    """The simulator's arrays are NumPy (device 'cpu'), so the registry is asked for the optim
    family and answers with the cuda module, as it does for CuPy arrays on a GPU."""
    with tgs.backend("numpy"):
        expected_params, expected_state = _train(cls, options, dtype)       # the reference
    asked = []
    monkeypatch.setattr(optimizers, "kernels", lambda family, device: asked.append(family) or cuda_optim)
    with _launch.recording_launches() as launches:
        params, state = _train(cls, options, dtype)
    assert set(asked) == {"optim"}
    assert [name for name, _ in launches] == ["_adam_step"] * (3 * 2)   # one launch per parameter per step
    for got, expected in zip(params + state, expected_params + expected_state):
        assert_matches(got, expected, dtype)
