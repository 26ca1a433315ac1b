"""tinygrad_seq.Value vs micrograd 0.1.0 on micrograd's own demo, in one process.

The demo (micrograd/demo.ipynb): an MLP 2-16-16-1 on 100 points of make_moons(noise=0.1),
max-margin loss mean_i relu(1 - y_i * score_i) + 1e-4 * sum_p p^2, accuracy, then one
full-batch SGD step with lr = 1 - 0.9 k / 100.  Both engines start from the same weights
(micrograd's, copied) and train in lock step; every step asserts that their losses agree to
1e-9, so both compute the same function.  Steps are timed alternately, and the median is
reported.  PyTorch (float64, whole batch as tensors) runs the same step as a reference point.

    python bench/bench_scalar_mlp.py [--steps 15]

micrograd is a bench-only extra: pip install micrograd==0.1.0
"""
import argparse
import random
import statistics
import sys
import time

import numpy as np
from sklearn.datasets import make_moons

from tinygrad_seq.scalar_nn import MLP
from tinygrad_seq.value import Value

ALPHA = 1e-4  # L2 regularization strength of the demo


def micrograd_step(model, X, y, lr, MgValue):
    """The demo's loss() and update, verbatim apart from the learning rate argument."""
    inputs = [list(map(MgValue, xrow)) for xrow in X]
    scores = list(map(model, inputs))
    losses = [(1 + -yi * scorei).relu() for yi, scorei in zip(y, scores)]
    data_loss = sum(losses) * (1.0 / len(losses))
    reg_loss = ALPHA * sum((p * p for p in model.parameters()))
    total_loss = data_loss + reg_loss
    accuracy = sum((yi > 0) == (scorei.data > 0) for yi, scorei in zip(y, scores)) / len(y)
    model.zero_grad()
    total_loss.backward()
    for p in model.parameters():
        p.data -= lr * p.grad
    return total_loss.data, accuracy


def tinygrad_seq_step(model, X, y, lr):
    """The same function; the sums are fused n-ary nodes (Value.sum, Value.dot)."""
    inputs = [list(map(Value, xrow)) for xrow in X]
    scores = list(map(model, inputs))
    losses = [(1 + -yi * scorei).relu() for yi, scorei in zip(y, scores)]
    data_loss = Value.sum(losses) * (1.0 / len(losses))
    params = model.parameters()
    reg_loss = ALPHA * Value.dot(params, params)
    total_loss = data_loss + reg_loss
    accuracy = sum((yi > 0) == (scorei.data > 0) for yi, scorei in zip(y, scores)) / len(y)
    model.zero_grad()
    total_loss.backward()
    for p in params:
        p.data -= lr * p.grad
    return total_loss.data, accuracy


def torch_reference(mg_model, X, y):
    """The same step in PyTorch float64 on whole-batch tensors (a step function and its weights)."""
    import torch

    layers = []
    for layer in mg_model.layers:
        W = torch.tensor([[w.data for w in n.w] for n in layer.neurons], dtype=torch.float64, requires_grad=True)
        b = torch.tensor([n.b.data for n in layer.neurons], dtype=torch.float64, requires_grad=True)
        layers.append((W, b, layer.neurons[0].nonlin))
    Xt = torch.tensor(X, dtype=torch.float64)
    yt = torch.tensor(y, dtype=torch.float64)
    params = [t for W, b, _ in layers for t in (W, b)]

    def step(lr):
        h = Xt
        for W, b, nonlin in layers:
            h = h @ W.T + b
            h = torch.relu(h) if nonlin else h
        scores = h[:, 0]
        total_loss = torch.relu(1 - yt * scores).mean() + ALPHA * sum((p * p).sum() for p in params)
        accuracy = ((yt > 0) == (scores > 0)).double().mean().item()
        for p in params:
            p.grad = None
        total_loss.backward()
        with torch.no_grad():
            for p in params:
                p -= lr * p.grad
        return total_loss.item(), accuracy

    return step


def copy_weights(src, dst):
    for p_src, p_dst in zip(src.parameters(), dst.parameters(), strict=True):
        p_dst.data = float(p_src.data)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=15, help="training steps timed per engine")
    parser.add_argument("--seed", type=int, default=1337)
    args = parser.parse_args(argv)
    try:
        from micrograd.engine import Value as MgValue
        from micrograd.nn import MLP as MgMLP
    except ImportError:
        sys.exit("micrograd is not installed (bench-only extra): pip install micrograd==0.1.0")

    random.seed(args.seed)
    np.random.seed(args.seed)
    X, y = make_moons(n_samples=100, noise=0.1, random_state=args.seed)
    X = X.tolist()
    y = (y * 2 - 1).tolist()  # labels -1 / +1, as in the demo

    mg_model = MgMLP(2, [16, 16, 1])
    our_model = MLP(2, [16, 16, 1])
    copy_weights(mg_model, our_model)
    try:
        torch_step = torch_reference(mg_model, X, y)
    except ImportError:
        torch_step = None

    times = {"micrograd": [], "tinygrad_seq": [], "torch": []}
    for k in range(args.steps):
        lr = 1.0 - 0.9 * k / 100
        t0 = time.perf_counter()
        mg_loss, mg_acc = micrograd_step(mg_model, X, y, lr, MgValue)
        t1 = time.perf_counter()
        our_loss, our_acc = tinygrad_seq_step(our_model, X, y, lr)
        t2 = time.perf_counter()
        times["micrograd"].append(t1 - t0)
        times["tinygrad_seq"].append(t2 - t1)
        assert abs(mg_loss - our_loss) <= 1e-9, f"step {k}: losses differ: micrograd {mg_loss!r} vs ours {our_loss!r}"
        assert mg_acc == our_acc, f"step {k}: accuracies differ: {mg_acc} vs {our_acc}"
        if torch_step is not None:
            t3 = time.perf_counter()
            torch_loss, _ = torch_step(lr)
            times["torch"].append(time.perf_counter() - t3)
            assert abs(torch_loss - our_loss) <= 1e-9, f"step {k}: torch loss {torch_loss!r} vs ours {our_loss!r}"
        print(f"step {k:2d}  loss {our_loss:.6f}  accuracy {our_acc:.0%}  (micrograd loss {mg_loss:.6f})")

    ms = {name: 1e3 * statistics.median(t) for name, t in times.items() if t}
    print(f"\nMLP 2-16-16-1, 100 make_moons points, full batch; median of {args.steps} steps")
    print(f"  micrograd 0.1.0     {ms['micrograd']:8.2f} ms/step")
    print(f"  tinygrad_seq.Value  {ms['tinygrad_seq']:8.2f} ms/step   "
          f"{ms['micrograd'] / ms['tinygrad_seq']:.1f}x faster than micrograd")
    if "torch" in ms:
        print(f"  torch (float64, batched tensors, reference) {ms['torch']:.2f} ms/step   "
              f"tinygrad_seq.Value / torch = {ms['tinygrad_seq'] / ms['torch']:.1f}x")
    return ms


if __name__ == "__main__":
    main()
