"""PyTorch code runs unchanged: idioms from PyTorch's beginner tutorials and the course notes,
each written ONCE as a function of the library module and run with `torch` and with
`tinygrad_seq`; the results (values, gradients, shapes, dtypes) must agree.

Weights are set from one NumPy generator through the idiom itself
(`with torch.no_grad(): p.copy_(...)`), so both libraries start from the same model."""
import numpy as np
import pytest
import torch

import tinygrad_seq

LIBS = {"torch": torch, "tinygrad_seq": tinygrad_seq}
IDIOMS = []


def idiom(fn):
    IDIOMS.append(fn)
    return fn


def data(lib, *shape, seed=0, scale=1.0):
    return lib.tensor(np.random.default_rng(seed).standard_normal(shape) * scale, dtype=lib.float32)


def set_weights(lib, model, seed=0):
    """Every parameter from one NumPy generator, in named_parameters order (the same in both)."""
    rng = np.random.default_rng(seed)
    with lib.no_grad():
        for _, p in model.named_parameters():
            p.copy_(lib.tensor(rng.standard_normal(tuple(p.shape)) * 0.4, dtype=p.dtype))
    return model


def plain(value):
    """Tensors (of either library) as NumPy arrays, recursively; dtypes as their names."""
    if isinstance(value, (torch.Tensor, tinygrad_seq.Tensor)):
        return value.detach().numpy() if isinstance(value, torch.Tensor) else value.numpy()
    if isinstance(value, torch.dtype):
        return str(value).replace("torch.", "")
    if isinstance(value, np.dtype):
        return str(value)
    if isinstance(value, torch.Size):
        return tuple(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value) if not hasattr(value, "_fields") else tuple(plain(v) for v in value)
    return value


def assert_same(ours, theirs, where="result"):
    if isinstance(theirs, dict):
        assert isinstance(ours, dict) and set(ours) == set(theirs), f"{where}: keys {set(ours)} vs {set(theirs)}"
        for k in theirs:
            assert_same(ours[k], theirs[k], f"{where}[{k!r}]")
    elif isinstance(theirs, (list, tuple)):
        assert isinstance(ours, (list, tuple)) and len(ours) == len(theirs), f"{where}: {ours!r} vs {theirs!r}"
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(theirs, np.ndarray):
        ours = np.asarray(ours)
        assert ours.shape == theirs.shape, f"{where}: shape {ours.shape} vs {theirs.shape}"
        assert ours.dtype.kind == theirs.dtype.kind, f"{where}: dtype {ours.dtype} vs {theirs.dtype}"
        np.testing.assert_allclose(ours, theirs, rtol=2e-4, atol=2e-5, err_msg=where)
    elif isinstance(theirs, float):
        assert ours == pytest.approx(theirs, rel=2e-4, abs=2e-5), f"{where}: {ours} vs {theirs}"
    else:
        assert ours == theirs, f"{where}: {ours!r} vs {theirs!r}"


# ---------------------------------------------------------------------------- the idioms
@idiom
def module_subclass_forward_backward(torch):
    nn = torch.nn

    class NeuralNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.flatten = nn.Flatten()
            self.linear_relu_stack = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))

        def forward(self, x):
            return self.linear_relu_stack(self.flatten(x))

    model = set_weights(torch, NeuralNetwork())
    logits = model(data(torch, 4, 3, 4))
    logits.sum().backward()
    return {"logits": logits, "names": [n for n, _ in model.named_parameters()],
            "grads": [p.grad for p in model.parameters()],
            "n_params": sum(p.numel() for p in model.parameters())}


@idiom
def dataset_subclass_and_dataloader_training_loop(torch):
    class Squares(torch.utils.data.Dataset):
        def __init__(self, n):
            self.x = np.linspace(-1, 1, n).astype(np.float32)

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return torch.tensor([self.x[i]]), torch.tensor([self.x[i] ** 2])

    loader = torch.utils.data.DataLoader(Squares(10), batch_size=4)
    model = set_weights(torch, torch.nn.Sequential(torch.nn.Linear(1, 6), torch.nn.Tanh(), torch.nn.Linear(6, 1)))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses, shapes = [], []
    for epoch in range(2):
        for xb, yb in loader:
            shapes.append(tuple(xb.shape))
            loss = torch.nn.functional.mse_loss(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return {"losses": losses, "shapes": shapes, "len": len(loader), "weights": list(model.parameters())}


@idiom
def tensordataset_drop_last(torch):
    X, y = data(torch, 10, 3), torch.arange(10)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=4, drop_last=True)
    batches = [(xb, yb) for xb, yb in loader]
    return {"len": len(loader), "batches": batches, "item0": torch.utils.data.TensorDataset(X, y)[3]}


@idiom
def dataloader_shuffle_with_generator(torch):
    X = torch.arange(12)
    g = torch.Generator()
    g.manual_seed(0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X), batch_size=5, shuffle=True, generator=g)
    epochs = [[b[0] for b in loader] for _ in range(2)]
    seen = [sorted(int(v) for batch in epoch for v in batch) for epoch in epochs]
    sizes = [[len(b) for b in epoch] for epoch in epochs]
    differs = [int(v) for b in epochs[0] for v in b] != [int(v) for b in epochs[1] for v in b]
    return {"seen": seen, "sizes": sizes, "new_order_each_epoch": differs, "dtype": epochs[0][0].dtype}


@idiom
def dataloader_collates_dicts_and_numbers(torch):
    class Records(torch.utils.data.Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return {"features": torch.ones(2) * i, "label": i % 2, "weight": 0.5 * i, "name": f"r{i}"}

    batch = next(iter(torch.utils.data.DataLoader(Records(), batch_size=3)))
    return {"features": batch["features"], "label": batch["label"], "label_dtype": batch["label"].dtype,
            "weight": batch["weight"], "weight_dtype": batch["weight"].dtype, "name": batch["name"]}


@idiom
def train_and_eval_modes_with_dropout(torch):
    model = set_weights(torch, torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5), torch.nn.Linear(4, 2)))
    model.eval()
    x = data(torch, 3, 4)
    out_eval = model(x)
    flags_eval = [m.training for m in model.modules()]
    model.train()
    torch.manual_seed(0)
    out_train = model(x)
    return {"eval": out_eval, "flags_eval": flags_eval, "flags_train": [m.training for m in model.modules()],
            "train_differs": bool((out_train != out_eval).any())}


@idiom
def no_grad_and_detach(torch):
    w = data(torch, 3).requires_grad_()
    with torch.no_grad():
        y = w * 2
    z = (w * 3).detach()
    with torch.set_grad_enabled(False):
        u = w + 1
    return {"y_requires_grad": y.requires_grad, "z_requires_grad": z.requires_grad, "u": u.requires_grad,
            "enabled": torch.is_grad_enabled(), "leaf": w.is_leaf, "w3": (w * 3).requires_grad}


@idiom
def optimizer_with_step_lr_scheduler(torch):
    model = set_weights(torch, torch.nn.Linear(3, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    x, y = data(torch, 8, 3, seed=1), data(torch, 8, 1, seed=2)
    lrs = []
    for _ in range(5):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        scheduler.step()
        lrs.append(opt.param_groups[0]["lr"])
    return {"lrs": lrs, "last": scheduler.get_last_lr(), "weight": model.weight, "bias": model.bias}


@idiom
def adam_regression_loop(torch):
    model = set_weights(torch, torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1)))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = data(torch, 16, 2, seed=3)
    y = (x[:, :1] * 2 - x[:, 1:]).detach()
    losses = []
    for _ in range(10):
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@idiom
def save_and_load_state_dict(torch):
    import os
    import tempfile
    model = set_weights(torch, torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.pt")
        torch.save(model.state_dict(), path)
        fresh = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
        fresh.load_state_dict(torch.load(path))
        torch.save({"epoch": 3, "tensors": [torch.ones(2), (torch.zeros(1), 1.5)]}, path)
        nested = torch.load(path)
    fresh.eval()
    model.eval()
    x = data(torch, 5, 3)
    return {"same": fresh(x), "orig": model(x), "keys": list(fresh.state_dict()), "nested": nested}


@idiom
def index_assignment(torch):
    x = torch.zeros(3, 4)
    x[0] = 1
    x[:, 1] = torch.tensor([5.0, 6.0, 7.0])
    x[x > 5] = -1
    x[2, 3] = 9
    x[[0, 1], [2, 3]] = torch.tensor([0.5, 0.25])
    return x


@idiom
def index_assignment_in_the_graph(torch):
    w = data(torch, 2, 3).requires_grad_()
    y = w * 1
    y[0] = y[0] * 2
    y[:, 2] = 0
    (y * data(torch, 2, 3, seed=5)).sum().backward()
    try:
        w[0, 0] = 1.0
        refused = False
    except RuntimeError:
        refused = True
    return {"y": y, "grad": w.grad, "leaf_assignment_refused": refused}


@idiom
def view_permute_cat_stack(torch):
    x = data(torch, 2, 3, 4).requires_grad_()
    a = x.view(6, 4)
    b = x.permute(2, 0, 1).reshape(4, -1)
    c = torch.cat([a, b.t()], dim=1)
    d = torch.stack([x[0], x[1]], dim=-1)
    e = x.transpose(1, 2).contiguous().view(2, -1)
    (c.sum() + (d * d).sum() + e[:, ::2].sum()).backward()
    return {"c": c, "d": d, "e": e, "shapes": [tuple(t.shape) for t in (a, b, c, d, e)], "grad": x.grad,
            "size": x.size(), "unsq": tuple(x.unsqueeze(1).shape), "squeezed": tuple(x[:1].squeeze(0).shape)}


@idiom
def max_with_indices_for_accuracy(torch):
    logits = data(torch, 6, 4, seed=7).requires_grad_()
    target = torch.tensor([0, 1, 2, 3, 0, 1])
    values, predicted = torch.max(logits, 1)
    correct = (predicted == target).sum().item()
    accuracy = (logits.argmax(dim=1) == target).float().mean()
    values.sum().backward()
    best = logits.max(dim=0)
    return {"values": values, "predicted": predicted, "correct": correct, "accuracy": accuracy,
            "grad": logits.grad, "best_values": best.values, "best_indices": best.indices,
            "min": logits.min(1, keepdim=True).indices}


@idiom
def topk_predictions(torch):
    probs = torch.softmax(data(torch, 3, 6, seed=8), dim=-1)
    top_p, top_class = probs.topk(2, dim=1)
    v, i = torch.topk(probs, k=3)
    return {"top_p": top_p, "top_class": top_class, "v": v, "i": i}


@idiom
def sort_with_indices(torch):
    x = data(torch, 2, 5, seed=9).requires_grad_()
    sorted_x, order = torch.sort(x, dim=1, descending=True)
    (sorted_x[:, 0] * 3 + sorted_x[:, -1]).sum().backward()
    return {"sorted": sorted_x, "order": order, "argsort": x.argsort(dim=1), "grad": x.grad,
            "median": x.median(dim=1), "kth": x.kthvalue(2, dim=1)}


@idiom
def cross_entropy_with_ignore_index(torch):
    logits = data(torch, 5, 4, seed=10).requires_grad_()
    target = torch.tensor([1, -100, 3, 0, -100])
    loss = torch.nn.functional.cross_entropy(logits, target, ignore_index=-100)
    loss.backward()
    criterion = torch.nn.CrossEntropyLoss(ignore_index=0)
    return {"loss": loss, "grad": logits.grad, "module": criterion(logits, torch.tensor([1, 0, 3, 0, 2]))}


@idiom
def clip_grad_norm(torch):
    model = set_weights(torch, torch.nn.Linear(4, 3))
    (model(data(torch, 2, 4)) ** 2).sum().backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5)
    after = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))
    return {"norm": norm, "norm_dtype": norm.dtype, "after": after, "grads": [p.grad for p in model.parameters()]}


@idiom
def causal_mask_with_masked_fill(torch):
    T = 4
    scores = data(torch, 2, T, T, seed=11).requires_grad_()
    mask = torch.triu(torch.ones(T, T), diagonal=1).bool()
    weights = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
    tril = torch.tril(torch.ones(T, T))
    wei = scores.masked_fill(tril == 0, float("-inf")).softmax(-1)
    (weights * data(torch, 2, T, T, seed=12)).sum().backward()
    return {"weights": weights, "wei": wei, "grad": scores.grad, "mask": mask}


@idiom
def manual_sgd_update_in_place(torch):
    w = data(torch, 3, seed=13).requires_grad_()
    b = torch.zeros(1, requires_grad=True)
    x = data(torch, 6, 3, seed=14)
    for _ in range(3):
        loss = ((x @ w + b) ** 2).mean()
        loss.backward()
        with torch.no_grad():
            w -= 0.1 * w.grad
            b.sub_(0.1 * b.grad)
            w.grad.zero_()
            b.grad.zero_()
    with torch.no_grad():
        w.clamp_(-0.5, 0.5)
        w.mul_(2).add_(1)
    return {"w": w, "b": b, "leaf": w.is_leaf}


@idiom
def factories_and_dtype_aliases(torch):
    return {"arange": torch.arange(5), "arange_dtype": torch.arange(5).dtype,
            "arange_float": torch.arange(0, 1, 0.25), "linspace": torch.linspace(0, 1, steps=5),
            "full": torch.full((2, 2), 7), "full_dtype": torch.full((2,), 7).dtype,
            "zeros_long": torch.zeros(2, dtype=torch.long), "ones": torch.ones(2, 3),
            "eye": torch.eye(3), "is_long": torch.tensor([1, 2]).dtype == torch.long,
            "float64": torch.tensor([1.5], dtype=torch.float64).dtype, "randn_shape": tuple(torch.randn(2, 5).shape),
            "randint_range": bool(((torch.randint(0, 3, (50,)) >= 0) & (torch.randint(0, 3, (50,)) < 3)).all())}


@idiom
def device_idioms(torch):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = torch.nn.Linear(2, 2).to(device)
    x = torch.ones(3, 2).to(device)
    return {"device": str(device) if not torch.cuda.is_available() else "cuda",
            "out_shape": tuple(model(x).shape), "x_device": str(x.device),
            "available_is_bool": isinstance(torch.cuda.is_available(), bool)}


@idiom
def embedding_lstm_tagger(torch):
    class Tagger(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 4)
            self.lstm = torch.nn.LSTM(4, 5, batch_first=True)
            self.out = torch.nn.Linear(5, 3)

        def forward(self, ids):
            h, (hn, cn) = self.lstm(self.emb(ids))
            return self.out(h), hn

    model = set_weights(torch, Tagger())
    ids = torch.tensor([[1, 2, 3], [4, 5, 0]])
    scores, hn = model(ids)
    loss = torch.nn.functional.cross_entropy(scores.reshape(-1, 3), torch.tensor([0, 1, 2, 2, 1, 0]))
    loss.backward()
    return {"scores": scores, "hn": hn, "loss": loss, "grads": [p.grad for p in model.parameters()]}


@idiom
def cnn_tutorial_net(torch):
    nn, F = torch.nn, torch.nn.functional

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 3, 3)
            self.pool = nn.MaxPool2d(2, 2)
            self.fc1 = nn.Linear(3 * 3 * 3, 5)

        def forward(self, x):
            x = self.pool(F.relu(self.conv1(x)))
            x = torch.flatten(x, 1)
            return self.fc1(x)

    net = set_weights(torch, Net())
    out = net(data(torch, 2, 1, 8, 8, seed=15))
    out.sum().backward()
    return {"out": out, "conv_grad": net.conv1.weight.grad, "fc_grad": net.fc1.weight.grad}


@idiom
def batchnorm_running_statistics(torch):
    bn = torch.nn.BatchNorm1d(3)
    x = data(torch, 8, 3, seed=16) * 2 + 1
    bn.train()
    y_train = bn(x)
    bn.eval()
    y_eval = bn(x)
    return {"train": y_train, "eval": y_eval, "mean": bn.running_mean, "var": bn.running_var,
            "tracked": bn.num_batches_tracked}


@idiom
def layer_dtype_argument(torch):
    lin = torch.nn.Linear(3, 2, dtype=torch.float64)
    emb = torch.nn.Embedding(4, 2, dtype=torch.float64)
    ln = torch.nn.LayerNorm(2, dtype=torch.float64)
    lstm = torch.nn.LSTM(2, 3, dtype=torch.float64)
    x = torch.randn(5, 1, 2, dtype=torch.float64)
    out, _ = lstm(x)
    return {"dtypes": [lin.weight.dtype, emb.weight.dtype, ln.weight.dtype, lstm.weight_ih_l0.dtype, out.dtype]}


@idiom
def multinomial_sampling(torch):
    probs = torch.tensor([[0.1, 0.0, 0.9], [0.5, 0.5, 0.0]])
    draws = torch.multinomial(probs, num_samples=2)
    with_replacement = torch.multinomial(probs[0], 20, replacement=True)
    return {"shape": tuple(draws.shape), "dtype": draws.dtype,
            "never_zero_weight": bool((draws[0] != 1).all() and (draws[1] != 2).all()),
            "distinct_rows": [len(set(row.tolist())) for row in draws],
            "range": bool(((with_replacement == 0) | (with_replacement == 2)).all())}


@idiom
def softmax_nll_equals_cross_entropy(torch):
    F = torch.nn.functional
    logits = data(torch, 4, 5, seed=17).requires_grad_()
    target = torch.tensor([4, 0, 2, 2])
    a = F.nll_loss(F.log_softmax(logits, dim=1), target)
    b = F.cross_entropy(logits, target)
    picked = -logits.log_softmax(-1).gather(1, target.unsqueeze(1)).mean()
    picked.backward()
    return {"a": a, "b": b, "picked": picked, "grad": logits.grad}


@idiom
def tensor_conversions(torch):
    x = data(torch, 2, 3, seed=18)
    return {"item": x[0, 0].item(), "tolist": x.round(decimals=2).tolist(), "numpy": x.numpy(),
            "long": x.long(), "int_dtype": x.int().dtype, "double": x.double().dtype,
            "bool": (x > 0).float(), "type_as": x.long().type_as(x).dtype, "floor": x.floor(),
            "clone_is_new": x.clone() is not x, "numel": x.numel(), "dim": x.dim()}


@idiom
def init_and_fill_under_no_grad(torch):
    layer = torch.nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.fill_(0.5)
        layer.bias.zero_()
        layer.weight[0, 0] = 2.0
    torch.nn.init.constant_(layer.bias, 0.1)
    x = torch.ones(1, 3)
    try:
        layer.weight.fill_(1.0)
        refused = False
    except RuntimeError:
        refused = True
    return {"out": layer(x), "refused_with_grad": refused}


@idiom
def gradient_accumulation_and_zero_grad(torch):
    w = data(torch, 3, seed=19).requires_grad_()
    for k in range(3):
        (w * (k + 1)).sum().backward()
    accumulated = w.grad.clone()
    w.grad = None
    (w ** 2).sum().backward()
    return {"accumulated": accumulated, "fresh": w.grad}


@idiom
def custom_autograd_function(torch):
    class LegendrePolynomial3(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input):
            ctx.save_for_backward(input)
            return 0.5 * (5 * input ** 3 - 3 * input)

        @staticmethod
        def backward(ctx, grad_output):
            input, = ctx.saved_tensors
            return grad_output * 1.5 * (5 * input ** 2 - 1)

    x = torch.linspace(-1, 1, 7)
    a = torch.full((), 0.3, requires_grad=True)
    b = torch.full((), -0.2, requires_grad=True)
    P3 = LegendrePolynomial3.apply
    y_pred = a + b * P3(x + b)
    loss = (y_pred - x).pow(2).sum()
    loss.backward()
    return {"y": y_pred, "loss": loss, "ga": a.grad, "gb": b.grad}


@idiom
def autograd_grad_leaves_dot_grad_alone(torch):
    x = data(torch, 4, seed=20).requires_grad_()
    w = data(torch, 4, seed=21).requires_grad_()
    h = (x * w).tanh()
    y = (h * h).sum()
    gx, gh = torch.autograd.grad(y, (x, h), retain_graph=True)
    y.backward()
    return {"gx": gx, "gh": gh, "x_grad_after_backward": x.grad, "w_grad": w.grad}


@idiom
def polynomial_fit_with_tensor_exponents(torch):
    import math
    x = torch.linspace(-math.pi, math.pi, 50)
    y = torch.sin(x)
    p = torch.tensor([1, 2, 3])
    xx = x.unsqueeze(-1).pow(p)
    model = set_weights(torch, torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Flatten(0, 1)))
    loss_fn = torch.nn.MSELoss(reduction="sum")
    for _ in range(20):
        loss = loss_fn(model(xx), y)
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for param in model.parameters():
                param -= 1e-4 * param.grad
    return {"xx_dtype": xx.dtype, "loss": loss, "weights": list(model.parameters())}


@pytest.mark.parametrize("fn", IDIOMS, ids=[f.__name__ for f in IDIOMS])
def test_idiom_gives_pytorchs_results(fn):
    theirs = plain(fn(torch))
    ours = plain(fn(tinygrad_seq))
    assert_same(ours, theirs)


def test_at_least_25_idioms():
    assert len(IDIOMS) >= 25
