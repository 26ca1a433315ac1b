"""Losses and activations of nn.functional against PyTorch (forward and input gradient, float32)
and against finite differences (tinygrad_seq.gradcheck, float64)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from tinygrad_seq import Tensor, gradcheck, nn
from tinygrad_seq.nn import functional as F

RNG = np.random.default_rng(7)


def against_torch(ours_fn, theirs_fn, x, tol=1e-5):
    """Forward value and d(sum(out * w))/dx agree with PyTorch in float32."""
    x = np.asarray(x, np.float32)
    ours_x = Tensor(x, requires_grad=True)
    theirs_x = torch.tensor(x, requires_grad=True)
    ours, theirs = ours_fn(ours_x), theirs_fn(theirs_x)
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=tol, atol=tol)
    w = RNG.standard_normal(tuple(theirs.shape)).astype(np.float32)
    (ours * Tensor(w)).sum().backward()
    (theirs * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(ours_x.grad.numpy(), theirs_x.grad.numpy(), rtol=tol, atol=tol)


LOGITS = RNG.standard_normal((5, 4))
TARGETS = np.array([0, 3, 1, 3, 2])
TARGETS_IGNORED = np.array([0, -100, 1, 3, 2])
CLASS_WEIGHT = np.array([0.5, 2.0, 1.0, 1.5])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_integer_targets(reduction, ignore, weighted):
    target = TARGETS_IGNORED if ignore else TARGETS
    kw = dict(reduction=reduction)
    ours_kw, theirs_kw = dict(kw), dict(kw)
    if weighted:
        ours_kw["weight"] = Tensor(CLASS_WEIGHT.astype(np.float32))
        theirs_kw["weight"] = torch.tensor(CLASS_WEIGHT, dtype=torch.float32)
    against_torch(lambda x: F.cross_entropy(x, Tensor(target), **ours_kw),
                  lambda x: TF.cross_entropy(x, torch.tensor(target), **theirs_kw), LOGITS)
    gk = dict(kw)
    if weighted:
        gk["weight"] = Tensor(CLASS_WEIGHT)
    assert gradcheck(lambda x: F.cross_entropy(x, Tensor(target), **gk), [LOGITS])


@pytest.mark.parametrize("target", [[0, 4, 1], [0, -1, 1], [0, -100, 9]], ids=str)
def test_cross_entropy_rejects_a_target_out_of_range(target):
    """Both the all-rows-count path and the masked one name the bad target (an ignored -100 is no error)."""
    with pytest.raises(IndexError, match=f"target {[t for t in target if t != -100 and not 0 <= t < 4][0]} is out of range"):
        F.cross_entropy(Tensor(LOGITS[:3]), Tensor(np.array(target)))


def test_cross_entropy_custom_ignore_index_and_module():
    target = np.array([0, 2, 2, 3, 1])
    against_torch(lambda x: F.cross_entropy(x, Tensor(target), ignore_index=2),
                  lambda x: TF.cross_entropy(x, torch.tensor(target), ignore_index=2), LOGITS)
    against_torch(lambda x: nn.CrossEntropyLoss(ignore_index=2)(x, Tensor(target)),
                  lambda x: torch.nn.CrossEntropyLoss(ignore_index=2)(x, torch.tensor(target)), LOGITS)


def test_cross_entropy_spatial_and_probability_targets():
    logits = RNG.standard_normal((2, 3, 4))
    target = RNG.integers(0, 3, (2, 4))
    against_torch(lambda x: F.cross_entropy(x, Tensor(target)),
                  lambda x: TF.cross_entropy(x, torch.tensor(target)), logits)
    against_torch(lambda x: F.cross_entropy(x, Tensor(target), reduction="none"),
                  lambda x: TF.cross_entropy(x, torch.tensor(target), reduction="none"), logits)
    probs = np.random.default_rng(0).dirichlet(np.ones(4), size=5).astype(np.float32)
    against_torch(lambda x: F.cross_entropy(x, Tensor(probs)),
                  lambda x: TF.cross_entropy(x, torch.tensor(probs)), LOGITS)
    assert gradcheck(lambda x: F.cross_entropy(x, Tensor(probs, dtype=np.float64)), [LOGITS])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_label_smoothing(reduction, ignore, weighted):
    target = TARGETS_IGNORED if ignore else TARGETS
    ours_kw = dict(reduction=reduction, label_smoothing=0.2)
    theirs_kw = dict(ours_kw)
    if weighted:
        ours_kw["weight"] = Tensor(CLASS_WEIGHT.astype(np.float32))
        theirs_kw["weight"] = torch.tensor(CLASS_WEIGHT, dtype=torch.float32)
    against_torch(lambda x: F.cross_entropy(x, Tensor(target), **ours_kw),
                  lambda x: TF.cross_entropy(x, torch.tensor(target), **theirs_kw), LOGITS)
    assert gradcheck(lambda x: F.cross_entropy(x, Tensor(target), reduction=reduction, label_smoothing=0.2),
                     [LOGITS])


def test_cross_entropy_smoothing_and_weights_in_every_layout():
    w = CLASS_WEIGHT.astype(np.float32)
    probs = np.random.default_rng(0).dirichlet(np.ones(4), size=5).astype(np.float32)
    for kw in (dict(label_smoothing=0.2), dict(weight=w), dict(weight=w, label_smoothing=0.3, reduction="sum")):
        ours_kw = {k: Tensor(v) if k == "weight" else v for k, v in kw.items()}
        theirs_kw = {k: torch.tensor(v) if k == "weight" else v for k, v in kw.items()}
        against_torch(lambda x: F.cross_entropy(x, Tensor(probs), **ours_kw),
                      lambda x: TF.cross_entropy(x, torch.tensor(probs), **theirs_kw), LOGITS)
    spatial = RNG.standard_normal((2, 4, 3))
    target = np.array([[0, -100, 3], [1, 2, -100]])
    for reduction in ("mean", "none"):
        against_torch(
            lambda x: F.cross_entropy(x, Tensor(target), weight=Tensor(w), label_smoothing=0.2, reduction=reduction),
            lambda x: TF.cross_entropy(x, torch.tensor(target), weight=torch.tensor(w), label_smoothing=0.2,
                                       reduction=reduction), spatial)
    single = LOGITS[0]  # one example: (C,) logits and a 0-d target
    against_torch(lambda x: F.cross_entropy(x, Tensor(np.array(2)), weight=Tensor(w), label_smoothing=0.1),
                  lambda x: TF.cross_entropy(x, torch.tensor(2), weight=torch.tensor(w), label_smoothing=0.1), single)
    assert gradcheck(lambda x: F.cross_entropy(x, Tensor(target), weight=Tensor(CLASS_WEIGHT), label_smoothing=0.2),
                     [spatial])


def test_cross_entropy_all_ignored_mean_is_nan_like_torch():
    x = Tensor(LOGITS.astype(np.float32))
    target = Tensor(np.full(5, -100))
    with np.errstate(invalid="ignore", divide="ignore"):
        assert np.isnan(F.cross_entropy(x, target).item())
        assert np.isnan(F.cross_entropy(x, target, label_smoothing=0.1).item())
    assert F.cross_entropy(x, target, reduction="sum").item() == 0.0
    with pytest.raises(ValueError, match="label_smoothing"):
        F.cross_entropy(x, Tensor(TARGETS), label_smoothing=1.5)


def test_nll_loss_matches_torch():
    logp = np.log(np.random.default_rng(1).dirichlet(np.ones(4), size=5))
    against_torch(lambda x: F.nll_loss(x, Tensor(TARGETS_IGNORED)),
                  lambda x: TF.nll_loss(x, torch.tensor(TARGETS_IGNORED)), logp)
    assert gradcheck(lambda x: F.nll_loss(x, Tensor(TARGETS), reduction="sum"), [logp])


def test_cross_entropy_rejects_float_class_indices_and_bad_reduction():
    with pytest.raises(TypeError, match="integer"):
        F.nll_loss(Tensor(LOGITS), np.array([0.0, 1.0, 1.0, 0.0, 2.0]))
    with pytest.raises(ValueError, match="reduction"):
        F.mse_loss(Tensor(LOGITS), Tensor(LOGITS), reduction="avg")


PROBS = RNG.uniform(0.05, 0.95, (3, 4))
BINARY = (RNG.random((3, 4)) > 0.5).astype(np.float64)
SOFT = RNG.random((3, 4))
ELEMENT_WEIGHT = RNG.uniform(0.5, 2.0, (3, 4))
POS_WEIGHT = np.array([0.5, 1.0, 2.0, 3.0])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_binary_cross_entropy(reduction, weighted):
    for target in (BINARY, SOFT):
        t32 = target.astype(np.float32)
        w = ELEMENT_WEIGHT.astype(np.float32) if weighted else None
        against_torch(
            lambda x: F.binary_cross_entropy(x, Tensor(t32), weight=None if w is None else Tensor(w),
                                             reduction=reduction),
            lambda x: TF.binary_cross_entropy(x, torch.tensor(t32), weight=None if w is None else torch.tensor(w),
                                              reduction=reduction), PROBS, tol=1e-4)
        assert gradcheck(lambda x: F.binary_cross_entropy(
            x, Tensor(target, dtype=np.float64), reduction=reduction,
            weight=Tensor(ELEMENT_WEIGHT, dtype=np.float64) if weighted else None), [PROBS])


def test_binary_cross_entropy_clamps_log_at_minus_100_like_torch():
    p = np.array([0.0, 1.0, 0.5], np.float32)
    t = np.array([1.0, 0.0, 1.0], np.float32)
    ours = F.binary_cross_entropy(Tensor(p), Tensor(t), reduction="none").numpy()
    theirs = TF.binary_cross_entropy(torch.tensor(p), torch.tensor(t), reduction="none").numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    assert ours[0] == 100.0


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("pos_weighted", [False, True])
def test_binary_cross_entropy_with_logits(reduction, weighted, pos_weighted):
    logits = RNG.standard_normal((3, 4)) * 3
    w = ELEMENT_WEIGHT.astype(np.float32) if weighted else None
    pw = POS_WEIGHT.astype(np.float32) if pos_weighted else None
    for target in (BINARY, SOFT):
        t32 = target.astype(np.float32)
        against_torch(
            lambda x: F.binary_cross_entropy_with_logits(
                x, Tensor(t32), weight=None if w is None else Tensor(w), reduction=reduction,
                pos_weight=None if pw is None else Tensor(pw)),
            lambda x: TF.binary_cross_entropy_with_logits(
                x, torch.tensor(t32), weight=None if w is None else torch.tensor(w), reduction=reduction,
                pos_weight=None if pw is None else torch.tensor(pw)), logits)
        assert gradcheck(lambda x: F.binary_cross_entropy_with_logits(
            x, Tensor(target, dtype=np.float64), reduction=reduction,
            weight=Tensor(ELEMENT_WEIGHT, dtype=np.float64) if weighted else None,
            pos_weight=Tensor(POS_WEIGHT, dtype=np.float64) if pos_weighted else None), [logits])


def test_bce_with_logits_is_stable_for_large_logits():
    z = np.array([-200.0, -30.0, 30.0, 200.0], np.float32)
    t = np.array([1.0, 0.0, 1.0, 0.0], np.float32)
    ours = F.binary_cross_entropy_with_logits(Tensor(z), Tensor(t), reduction="none").numpy()
    theirs = TF.binary_cross_entropy_with_logits(torch.tensor(z), torch.tensor(t), reduction="none").numpy()
    assert np.isfinite(ours).all()
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)  # torch uses log1p for the tiny ones


@pytest.mark.parametrize("name", ["mse_loss", "l1_loss"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_regression_losses(name, reduction):
    x, y = RNG.standard_normal((3, 4)), RNG.standard_normal((3, 4))
    y32 = y.astype(np.float32)
    against_torch(lambda a: getattr(F, name)(a, Tensor(y32), reduction=reduction),
                  lambda a: getattr(TF, name)(a, torch.tensor(y32), reduction=reduction), x)
    assert gradcheck(lambda a: getattr(F, name)(a, Tensor(y, dtype=np.float64), reduction=reduction), [x])


def test_loss_modules_match_functional():
    x, y = Tensor(RNG.standard_normal((3, 4))), Tensor(RNG.standard_normal((3, 4)))
    p = Tensor(PROBS)
    t = Tensor(BINARY)
    pairs = [(nn.MSELoss(reduction="sum")(x, y), F.mse_loss(x, y, reduction="sum")),
             (nn.L1Loss()(x, y), F.l1_loss(x, y)),
             (nn.BCELoss()(p, t), F.binary_cross_entropy(p, t)),
             (nn.BCEWithLogitsLoss(pos_weight=Tensor(POS_WEIGHT))(x, t),
              F.binary_cross_entropy_with_logits(x, t, pos_weight=Tensor(POS_WEIGHT))),
             (nn.NLLLoss()(F.log_softmax(Tensor(LOGITS)), Tensor(TARGETS)),
              F.cross_entropy(Tensor(LOGITS), Tensor(TARGETS)))]
    for module_value, functional_value in pairs:
        np.testing.assert_allclose(module_value.numpy(), functional_value.numpy(), rtol=1e-6)


# ---------------------------------------------------------------------------- activations
X = RNG.standard_normal((3, 5)) * 2


@pytest.mark.parametrize("ours,theirs", [
    (F.relu, TF.relu),
    (lambda x: F.leaky_relu(x, 0.1), lambda x: TF.leaky_relu(x, 0.1)),
    (F.tanh, torch.tanh),
    (F.sigmoid, torch.sigmoid),
    (F.gelu, TF.gelu),
    (lambda x: F.gelu(x, approximate="tanh"), lambda x: TF.gelu(x, approximate="tanh")),
    (lambda x: F.softmax(x, dim=-1), lambda x: TF.softmax(x, dim=-1)),
    (lambda x: F.softmax(x, dim=0), lambda x: TF.softmax(x, dim=0)),
    (lambda x: F.log_softmax(x, dim=-1), lambda x: TF.log_softmax(x, dim=-1)),
    (lambda x: F.log_softmax(x, dim=0), lambda x: TF.log_softmax(x, dim=0)),
])
def test_activations_match_torch_and_gradcheck(ours, theirs):
    against_torch(ours, theirs, X)
    assert gradcheck(ours, [X])


def test_softmax_is_stable_for_large_logits():
    x = np.array([[1000.0, 1001.0, 999.0]], np.float32)
    np.testing.assert_allclose(F.softmax(Tensor(x)).numpy(), TF.softmax(torch.tensor(x), -1).numpy(), rtol=1e-6)
    np.testing.assert_allclose(F.log_softmax(Tensor(x)).numpy(), TF.log_softmax(torch.tensor(x), -1).numpy(),
                               rtol=1e-6)
