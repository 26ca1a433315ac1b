"""Adam's one-kernel GPU update (kernels/cuda/optim.py) under the simulator: the same steps as
the optimiser's array code, for Adam and AdamW, with and without weight decay and amsgrad."""
import numpy as np
import pytest

import tinygrad_seq as tgs
from tinygrad_seq import optim
from tinygrad_seq.kernels.cuda import _launch
from tinygrad_seq.kernels.cuda.optim import adam_update

optimizers = __import__("tinygrad_seq.optim.optimizers", fromlist=["_fused_adam"])

CASES = [(optim.Adam, dict()), (optim.Adam, dict(weight_decay=0.1, amsgrad=True)),
         (optim.AdamW, dict()), (optim.AdamW, dict(weight_decay=0.3, amsgrad=True))]


def _run(cls, options, dtype, steps=3, seed=0):
    rng = np.random.default_rng(seed)
    params = [tgs.Tensor(rng.standard_normal(shape), dtype=dtype, requires_grad=True) for shape in ((3, 5), (7,))]
    opt = cls(params, lr=0.05, **options)
    for _ in range(steps):
        for p in params:
            p.grad = tgs.Tensor(rng.standard_normal(p.shape), dtype=dtype)
        opt.step()
    return [p.numpy() for p in params], [s for p in params for s in opt.state[p].values() if hasattr(s, "shape")]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls, options", CASES)
def test_fused_adam_takes_the_array_codes_steps(monkeypatch, cls, options, dtype):
    expected_params, expected_state = _run(cls, options, dtype)          # the array code (NumPy)
    monkeypatch.setattr(optimizers, "_fused_adam", lambda xp: adam_update)
    with _launch.recording_launches() as launches:
        params, state = _run(cls, options, dtype)
    assert [name for name, _ in launches] == ["_adam_step"] * (3 * 2)   # one launch per parameter per step
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for got, expected in zip(params + state, expected_params + expected_state):
        assert got.dtype == expected.dtype == dtype
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol)


def test_a_non_contiguous_parameter_is_left_to_the_array_code():
    p = np.ones((4, 4), dtype=np.float32)[:, ::2]
    others = [np.zeros_like(p) for _ in range(3)]
    assert not adam_update(p, *others, None, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                           decoupled=False, step=1)
    assert (p == 1).all()
