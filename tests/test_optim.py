"""Optimisers, LR schedules, gradient clipping and penalties against torch.optim / torch.nn.utils:
the same parameters fed the same gradients follow the same trajectory, and a state_dict round
trip continues it identically."""
import copy
import math

import numpy as np
import pytest
import torch

from tinygrad_seq import Tensor, nn, optim

RNG = np.random.default_rng(11)
SHAPES = [(3, 4), (4,)]
STEPS = 5
GRADS = [[RNG.standard_normal(s).astype(np.float32) for s in SHAPES] for _ in range(2 * STEPS)]
INIT = [RNG.standard_normal(s).astype(np.float32) for s in SHAPES]

CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, eps=1e-6)),
    ("RMSprop", dict(lr=0.01, momentum=0.5, weight_decay=0.05)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.3)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
]


def make_pair(name, kwargs):
    ours = [nn.Parameter(a.copy()) for a in INIT]
    theirs = [torch.nn.Parameter(torch.tensor(a.copy())) for a in INIT]
    return ours, getattr(optim, name)(ours, **kwargs), theirs, getattr(torch.optim, name)(theirs, **kwargs)


def run_steps(ours, opt, theirs, topt, grads):
    for step_grads in grads:
        for p, q, g in zip(ours, theirs, step_grads):
            p.grad = Tensor(g.copy())
            q.grad = torch.tensor(g.copy())
        opt.step()
        topt.step()
        for p, q in zip(ours, theirs):
            np.testing.assert_allclose(p.numpy(), q.detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,kwargs", CASES)
def test_trajectory_matches_torch(name, kwargs):
    ours, opt, theirs, topt = make_pair(name, kwargs)
    run_steps(ours, opt, theirs, topt, GRADS[:STEPS])
    assert not np.allclose(ours[0].numpy(), INIT[0])  # it moved


@pytest.mark.parametrize("name,kwargs", CASES)
def test_state_dict_round_trip_continues_identically(name, kwargs):
    ours, opt, theirs, topt = make_pair(name, kwargs)
    run_steps(ours, opt, theirs, topt, GRADS[:STEPS])
    saved = copy.deepcopy(opt.state_dict())
    # a fresh optimiser on copies of the current parameters, loaded from the saved state
    clones = [nn.Parameter(p.numpy().copy()) for p in ours]
    fresh = getattr(optim, name)(clones, **{**kwargs, "lr": 123.0})  # lr comes back from the state
    fresh.load_state_dict(saved)
    assert fresh.param_groups[0]["lr"] == kwargs["lr"]
    run_steps(clones, fresh, theirs, topt, GRADS[STEPS:])
    # and the original goes on identically too
    for step_grads in GRADS[STEPS:]:
        for p, g in zip(ours, step_grads):
            p.grad = Tensor(g.copy())
        opt.step()
    for p, c in zip(ours, clones):
        np.testing.assert_array_equal(p.numpy(), c.numpy())


def test_torch_state_dict_loads_into_ours():
    kwargs = dict(lr=0.01, betas=(0.8, 0.99))
    ours, opt, theirs, topt = make_pair("Adam", kwargs)
    run_steps(ours, opt, theirs, topt, GRADS[:STEPS])
    tsd = copy.deepcopy(topt.state_dict())
    as_numpy = {"state": {k: {n: (v.numpy() if isinstance(v, torch.Tensor) else v) for n, v in s.items()}
                          for k, s in tsd["state"].items()},
                "param_groups": tsd["param_groups"]}
    for saved in (as_numpy, tsd):  # NumPy arrays, or torch's own tensors as they are
        clones = [nn.Parameter(p.numpy().copy()) for p in ours]
        fresh = optim.Adam(clones, **kwargs)
        fresh.load_state_dict(saved)
        assert isinstance(fresh.state[clones[0]]["exp_avg"], np.ndarray)
        twins = [torch.nn.Parameter(q.detach().clone()) for q in theirs]
        tfresh = torch.optim.Adam(twins, **kwargs)
        tfresh.load_state_dict(copy.deepcopy(tsd))
        run_steps(clones, fresh, twins, tfresh, GRADS[STEPS:])


def test_param_groups_with_different_lrs_and_zero_grad():
    a, b = nn.Parameter(INIT[0].copy()), nn.Parameter(INIT[1].copy())
    ta, tb = (torch.nn.Parameter(torch.tensor(x.copy())) for x in INIT)
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1, momentum=0.9)
    topt = torch.optim.SGD([{"params": [ta]}, {"params": [tb], "lr": 0.5}], lr=0.1, momentum=0.9)
    run_steps([a, b], opt, [ta, tb], topt, GRADS[:3])
    opt.zero_grad()
    assert a.grad is None and b.grad is None
    a.grad = Tensor(np.ones_like(INIT[0]))
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(a.grad.numpy(), 0.0)


def test_invalid_arguments_are_errors():
    p = [nn.Parameter(INIT[0].copy())]
    with pytest.raises(ValueError, match="lr"):
        optim.SGD(p, lr=-1)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        optim.Adam(p, betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="empty"):
        optim.Adam([])
    with pytest.raises(TypeError, match="single Tensor"):
        optim.SGD(p[0], lr=0.1)


def test_params_without_grad_are_skipped():
    a, b = nn.Parameter(INIT[0].copy()), nn.Parameter(INIT[1].copy())
    opt = optim.Adam([a, b], lr=0.1)
    a.grad = Tensor(GRADS[0][0])
    opt.step()
    np.testing.assert_array_equal(b.numpy(), INIT[1])
    assert not np.allclose(a.numpy(), INIT[0])


# ---------------------------------------------------------------------------- schedules
def lrs(optimizer, scheduler, epochs):
    out = [optimizer.param_groups[0]["lr"]]
    for _ in range(epochs):
        optimizer.step()
        scheduler.step()
        out.append(optimizer.param_groups[0]["lr"])
    return out


@pytest.mark.parametrize("name,kwargs", [("StepLR", dict(step_size=3, gamma=0.5)),
                                         ("ExponentialLR", dict(gamma=0.9)),
                                         ("CosineAnnealingLR", dict(T_max=6, eta_min=0.01)),
                                         ("LambdaLR", dict(lr_lambda=lambda e: 1 / (1 + e)))])
def test_schedules_match_torch(name, kwargs):
    opt = optim.SGD([nn.Parameter(INIT[0].copy())], lr=0.3)
    topt = torch.optim.SGD([torch.nn.Parameter(torch.tensor(INIT[0]))], lr=0.3)
    ours = lrs(opt, getattr(optim.lr_scheduler, name)(opt, **kwargs), 8)
    theirs = lrs(topt, getattr(torch.optim.lr_scheduler, name)(topt, **kwargs), 8)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_inverse_time_decay_formula_and_resume():
    opt = optim.SGD([nn.Parameter(INIT[0].copy())], lr=0.5)
    schedule = optim.lr_scheduler.InverseTimeDecay(opt, decay_rate=0.25)
    got = lrs(opt, schedule, 6)
    np.testing.assert_allclose(got, [0.5 / (1 + 0.25 * e) for e in range(7)], rtol=1e-15)
    topt = torch.optim.SGD([torch.nn.Parameter(torch.tensor(INIT[0]))], lr=0.5)  # torch spells it LambdaLR
    theirs = lrs(topt, torch.optim.lr_scheduler.LambdaLR(topt, lambda e: 1 / (1 + 0.25 * e)), 6)
    np.testing.assert_allclose(got, theirs, rtol=1e-12)
    assert schedule.get_last_lr() == [got[-1]]
    # resume: a new scheduler from the saved state goes on from epoch 6
    state = schedule.state_dict()
    opt2 = optim.SGD([nn.Parameter(INIT[0].copy())], lr=0.5)
    opt2.load_state_dict(opt.state_dict())
    resumed = optim.lr_scheduler.InverseTimeDecay(opt2, decay_rate=0.25)
    resumed.load_state_dict(state)
    resumed.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.5 / (1 + 0.25 * 7))
    with pytest.raises(ValueError, match="decay_rate"):
        optim.lr_scheduler.InverseTimeDecay(opt, decay_rate=-1)


# ---------------------------------------------------------------------------- clipping, penalties
def grads_pair(scale=1.0):
    ours = [nn.Parameter(a.copy()) for a in INIT]
    theirs = [torch.nn.Parameter(torch.tensor(a.copy())) for a in INIT]
    for p, q, g in zip(ours, theirs, GRADS[0]):
        p.grad = Tensor(g * scale)
        q.grad = torch.tensor(g * scale)
    return ours, theirs


@pytest.mark.parametrize("max_norm,norm_type", [(1.0, 2.0), (100.0, 2.0), (0.5, 1.0), (0.3, math.inf), (2.0, 3.0)])
def test_clip_grad_norm_matches_torch(max_norm, norm_type):
    ours, theirs = grads_pair()
    total = nn.utils.clip_grad_norm_(ours, max_norm, norm_type=norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type=norm_type)
    assert float(total.item()) == pytest.approx(float(ttotal), rel=1e-5)
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("model", ["lstm", "sum"])
def test_clipping_scales_each_gradient_once_when_a_backward_shares_one_array(model):
    """An LSTM's backward returns one array as the gradient of both of its biases, Add its dy
    for both operands: each leaf must still get its own .grad, or clip_grad_norm_'s in-place
    scaling would reach one array twice (biases clipped by coef^2 in every clipped step)."""
    rng = np.random.default_rng(5)
    if model == "lstm":
        ours, theirs = nn.LSTM(3, 4), torch.nn.LSTM(3, 4)
        ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
        x = rng.standard_normal((5, 2, 3)).astype(np.float32)
        (ours(Tensor(x))[0] * 100).sum().backward()
        (theirs(torch.tensor(x))[0] * 100).sum().backward()
        ours, theirs = list(ours.parameters()), list(theirs.parameters())
    else:
        ours = [nn.Parameter(a.copy()) for a in INIT[:1] * 2]
        theirs = [torch.nn.Parameter(torch.tensor(a.copy())) for a in INIT[:1] * 2]
        ((ours[0] + ours[1]) * 100).sum().backward()
        ((theirs[0] + theirs[1]) * 100).sum().backward()
    assert len({id(p.grad.data) for p in ours}) == len(ours)
    total = nn.utils.clip_grad_norm_(ours, 1.0)
    ttotal = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    assert float(total.item()) == pytest.approx(float(ttotal), rel=1e-4)
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-4, atol=1e-7)


def test_clip_grad_norm_nonfinite_error():
    ours, _ = grads_pair()
    ours[0].grad.data[0, 0] = np.inf
    with pytest.raises(RuntimeError, match="error_if_nonfinite"):
        nn.utils.clip_grad_norm_(ours, 1.0, error_if_nonfinite=True)


def test_clip_grad_value_matches_torch():
    ours, theirs = grads_pair()
    nn.utils.clip_grad_value_(ours, 0.5)
    torch.nn.utils.clip_grad_value_(theirs, 0.5)
    for p, q in zip(ours, theirs):
        np.testing.assert_array_equal(p.grad.numpy(), q.grad.numpy())
        assert np.abs(p.grad.numpy()).max() <= 0.5


def test_l1_and_l2_penalties_and_their_gradients():
    params = [nn.Parameter(a.copy()) for a in INIT]
    l1 = nn.utils.l1_penalty(params)
    assert l1.item() == pytest.approx(sum(np.abs(a).sum() for a in INIT), rel=1e-6)
    (0.1 * l1).backward()
    for p, a in zip(params, INIT):
        np.testing.assert_allclose(p.grad.numpy(), 0.1 * np.sign(a), rtol=1e-6)
    params = [nn.Parameter(a.copy()) for a in INIT]
    (0.5 * nn.utils.l2_penalty(params)).backward()
    for p, a in zip(params, INIT):
        np.testing.assert_allclose(p.grad.numpy(), a, rtol=1e-6)


def test_sgd_weight_decay_equals_l2_penalty_in_the_loss():
    wd = 0.2
    a = [nn.Parameter(x.copy()) for x in INIT]
    b = [nn.Parameter(x.copy()) for x in INIT]
    opt_a, opt_b = optim.SGD(a, lr=0.1, weight_decay=wd), optim.SGD(b, lr=0.1)
    for step_grads in GRADS[:3]:
        for p, g in zip(a, step_grads):
            p.grad = Tensor(g.copy())
        opt_a.step()
        opt_b.zero_grad()
        (wd / 2 * nn.utils.l2_penalty(b)).backward()
        for p, g in zip(b, step_grads):
            p.grad = p.grad + Tensor(g.copy())
        opt_b.step()
    for p, q in zip(a, b):
        np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name,kwargs", [("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
                                         ("RMSprop", dict(lr=0.01, centered=True, momentum=0.3)),
                                         ("AdamW", dict(lr=0.01, betas=(0.8, 0.99), amsgrad=True))])
def test_state_survives_a_checkpoint_file(tmp_path, name, kwargs):
    """Through save_checkpoint's JSON header: integer keys become strings, tuples lists."""
    from tinygrad_seq.checkpoint import load_checkpoint, save_checkpoint
    model = nn.Linear(4, 3)
    opt = getattr(optim, name)(model.parameters(), **kwargs)
    schedule = optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    x = Tensor(RNG.standard_normal((6, 4)).astype(np.float32))

    def train(m, o, s, steps):
        for _ in range(steps):
            o.zero_grad()
            (m(x) ** 2).mean().backward()
            o.step()
            s.step()

    train(model, opt, schedule, 3)
    save_checkpoint(tmp_path / "ckpt.npz", {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                            "schedule": schedule.state_dict()})
    state = load_checkpoint(tmp_path / "ckpt.npz")
    clone = nn.Linear(4, 3)
    clone.load_state_dict(state["model"])
    opt2 = getattr(optim, name)(clone.parameters(), **kwargs)
    schedule2 = optim.lr_scheduler.StepLR(opt2, step_size=2, gamma=0.5)  # built first, then both loaded
    opt2.load_state_dict(state["optimizer"])
    schedule2.load_state_dict(state["schedule"])
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    train(model, opt, schedule, 3)
    train(clone, opt2, schedule2, 3)
    for (k, a), (_, b) in zip(model.state_dict().items(), clone.state_dict().items()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)
