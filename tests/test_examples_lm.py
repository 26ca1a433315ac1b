"""Smoke runs of the language examples as scripts (small settings), each checked on its result."""
import re

from cli_helpers import run_example


def test_rnn_charlm_from_scratch_learns():
    out = run_example("rnn_charlm.py", "--steps", 60, "--hidden", 32)
    first, last, uniform = map(float, re.search(r"first loss ([\d.]+), last loss ([\d.]+) \(uniform guess: ([\d.]+)",
                                                out).groups())
    assert last < first - 0.8 and last < uniform - 0.8
    assert "--- sample ---" in out


def test_compare_cells_reports_each_cell():
    out = run_example("compare_cells.py", "--steps", 15, "--hidden", 32)
    rows = dict(re.findall(r"^(rnn|gru|lstm)\s+([\d.]+)\s+[\d.]+$", out, re.M))
    assert set(rows) == {"rnn", "gru", "lstm"}
    assert all(float(v) < 3.8 for v in rows.values())  # below the uniform guess over ~70 characters


def test_testament_classifier_beats_the_majority_class():
    out = run_example("testament_classifier.py", "--steps", 120)
    accuracy, majority = map(float, re.search(r"held-out accuracy ([\d.]+) .* baseline ([\d.]+)\)", out).groups())
    assert accuracy > majority + 0.03


def test_ngram_loss_falls_with_the_order():
    out = run_example("ngram_sampling.py", "--max-n", 4, "--chars", 100000)
    losses = [float(x) for x in re.findall(r"n=\d: ([\d.]+) nats/char", out)]
    assert len(losses) == 4 and losses == sorted(losses, reverse=True)


def test_embedding_neighbours():
    out = run_example("embedding_neighbours.py", "--words", 30000, "--epochs", 2, "--dim", 24)
    first, last = map(float, re.search(r"loss ([\d.]+) -> ([\d.]+)", out).groups())
    assert last < first
    assert re.search(r"^god\s+\w+ \(0\.\d\d\)", out, re.M)
