"""`tgs train cnn` / `tgs train mlp` on the bundled 8x8 digits, `tgs eval` on their checkpoints
(accuracy and confusion matrix), and one-line errors for bad input."""
import json

import numpy as np
import pytest

from tinygrad_seq.checkpoint import load_checkpoint

from cli_helpers import assert_one_line_error, tgs



def test_default_cnn_reaches_97_percent(tmp_path_factory):
    """The issue's bar: the LeNet-style CNN, as `tgs train cnn` trains it by default, scores >= 97%."""
    out = tmp_path_factory.mktemp("runs") / "cnn"
    result = tgs("train", "cnn", "--out", out)
    assert result.exit_code == 0, result.output
    accuracy = float(result.stdout.split("test accuracy ")[1].split("%")[0]) / 100
    assert accuracy >= 0.97, result.stdout
    assert "epoch  20/20" in result.stderr and "dev acc" in result.stderr
    state = load_checkpoint(out)
    assert state["kind"] == "cnn" and state["config"]["batch_norm"] is True

    evaluation = tgs("eval", out, "--json")
    assert evaluation.exit_code == 0, evaluation.output
    record = json.loads(evaluation.stdout)
    assert record["kind"] == "cnn" and record["accuracy"] == pytest.approx(accuracy, abs=5e-5)
    confusion = np.array(record["confusion_matrix"])
    # rows are the true digits: they add up to the test set, the diagonal to the correct answers
    assert confusion.shape == (10, 10) and confusion.sum() == record["examples"]
    assert np.trace(confusion) == record["correct"]
    text = tgs("eval", out)
    assert "confusion matrix" in text.stdout and len(text.stdout.splitlines()) == 13


@pytest.mark.parametrize("options", [
    ("--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.9", "--no-batchnorm", "--dropout", "0.2"),
    ("--augment", "--shift", "1", "--channels", "8", "--hidden", "0"),
])
def test_cnn_variants_train(tmp_path, options):
    result = tgs("train", "cnn", "--epochs", 3, *options, "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert float(result.stdout.split("test accuracy ")[1].split("%")[0]) > 70  # chance is 10%


def test_mlp_trains_evaluates_and_refuses_to_sample(tmp_path):
    out = tmp_path / "mlp"
    result = tgs("train", "mlp", "--epochs", 8, "--hidden", "64,32", "--batchnorm", "--out", out)
    assert result.exit_code == 0, result.output
    assert float(result.stdout.split("test accuracy ")[1].split("%")[0]) > 90
    state = load_checkpoint(out)
    assert state["kind"] == "mlp" and state["config"]["hidden"] == [64, 32]
    assert tgs("eval", out).exit_code == 0
    assert_one_line_error(tgs("eval", out, tmp_path), "give no FILE")
    assert_one_line_error(tgs("sample", out), "cannot sample")


def test_same_seed_same_weights(tmp_path):
    for name in ("a", "b"):
        assert tgs("train", "mlp", "--epochs", 2, "--seed", 4, "--out", tmp_path / name).exit_code == 0
    a, b = load_checkpoint(tmp_path / "a")["model"], load_checkpoint(tmp_path / "b")["model"]
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("args, message", [
    (("cnn", "--epochs", 0), "--epochs must be a positive integer"),
    (("cnn", "--lr", -1), "--lr must be a positive number"),
    (("cnn", "--dropout", 1.5), "--dropout must be in [0, 1)"),
    (("cnn", "--channels", "8,x"), "--channels must be comma-separated positive integers"),
    (("cnn", "--channels", "4,4,4,4"), "halve"),
    (("cnn", "--kernel-size", 0), "--kernel-size must be a positive integer"),
    (("mlp", "--hidden", "0"), "--hidden must be comma-separated positive integers"),
    (("mlp", "--momentum", 1), "--momentum must be in [0, 1)"),
])
def test_bad_options_are_one_line_errors(tmp_path, args, message):
    assert_one_line_error(tgs("train", *args, "--out", tmp_path / "r"), message)
    assert not (tmp_path / "r" / "checkpoint.npz").exists()


def test_existing_runs_are_kept(tmp_path):
    out = tmp_path / "r"
    assert tgs("train", "mlp", "--epochs", 1, "--out", out).exit_code == 0
    before = (out / "checkpoint.npz").read_bytes()
    assert_one_line_error(tgs("train", "mlp", "--epochs", 1, "--out", out), "--overwrite")
    assert_one_line_error(tgs("train", "cnn", "--epochs", 1, "--out", out, "--overwrite"), "'mlp' checkpoint")
    assert (out / "checkpoint.npz").read_bytes() == before
    assert tgs("train", "mlp", "--epochs", 1, "--seed", 9, "--out", out, "--overwrite").exit_code == 0
    assert (out / "checkpoint.npz").read_bytes() != before
    (tmp_path / "file").write_text("x")
    assert_one_line_error(tgs("train", "mlp", "--out", tmp_path / "file"), "is a file")


def test_batchnorm_help_names_the_layers_it_follows():
    """`tgs train mlp --help` once said --batchnorm acted after each conv layer; an MLP has none."""
    def batchnorm_help(model):
        result = tgs("train", model, "--help")
        assert result.exit_code == 0, result.output
        text = " ".join(result.stdout.split())
        return text.split("--batchnorm / --no-batchnorm")[1].split("--augment")[0]
    assert "after each hidden Linear layer" in batchnorm_help("mlp") and "conv" not in batchnorm_help("mlp")
    assert "after each conv layer" in batchnorm_help("cnn")
