"""The two core classifiers run as scripts: a train/dev/test split, early stopping on the dev
loss (the best epoch's weights are restored), and a test accuracy well above chance."""
import re

from cli_helpers import run_example


def parse(out):
    """{split: (loss, accuracy, examples)}, the per-epoch dev losses, and the early-stopping line."""
    final = {name: (float(loss), float(acc), int(n)) for name, loss, acc, n in
             re.findall(r"^(train|dev|test)\s+loss ([\d.]+)\s+accuracy ([\d.]+)\s+\((\d+) examples\)", out, re.M)}
    dev_losses = [float(x) for x in re.findall(r"^epoch\s+\d+.*dev loss ([\d.]+)", out, re.M)]
    stop = re.search(r"not improved for (\d+) epochs: stopping, best epoch (\d+)", out)
    return final, dev_losses, stop


def check_split_and_early_stopping(out, patience):
    final, dev_losses, stop = parse(out)
    assert set(final) == {"train", "dev", "test"}
    sizes = {k: v[2] for k, v in final.items()}
    assert sizes["train"] > 3 * sizes["dev"] and abs(sizes["dev"] - sizes["test"]) <= 2
    assert stop is not None, "training should stop early with a small patience"
    best_epoch = int(stop.group(2))
    assert len(dev_losses) == best_epoch + patience  # stopped `patience` epochs after the best
    assert min(dev_losses) == dev_losses[best_epoch - 1]
    # the best epoch's weights were restored: the final dev loss is the best one seen
    assert abs(final["dev"][0] - min(dev_losses)) <= 2e-4
    return final


def test_logistic_regression_three_vs_eight():
    final = check_split_and_early_stopping(run_example("logistic_regression.py", "--patience", 1), patience=1)
    assert final["test"][1] > 0.93  # chance is about 0.5
    assert final["train"][0] < 0.2


def test_mlp_digits():
    final = check_split_and_early_stopping(run_example("mlp_digits.py", "--patience", 2), patience=2)
    assert final["test"][1] > 0.9  # chance is 0.1
    assert final["train"][1] > 0.95
