"""`tgs train seq2seq`, `tgs translate`, `tgs train tagger`, and `tgs sample` / `tgs eval` on
their checkpoints: happy paths on tiny settings and one-line errors."""
import json

import pytest

from tinygrad_seq.checkpoint import load_checkpoint

from cli_helpers import assert_one_line_error, tgs


@pytest.fixture(scope="module")
def dates_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "dates"
    result = tgs("train", "seq2seq", "--steps", 25, "--train-size", 300, "--test-size", 20, "--embed", 8,
                 "--hidden", 12, "--attention", "general", "--out", out)
    assert result.exit_code == 0, result.output
    return out, result


@pytest.fixture(scope="module")
def tagger_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tagger"
    result = tgs("train", "tagger", "--steps", 15, "--train-verses", 200, "--test-verses", 50, "--embed", 8,
                 "--hidden", 8, "--out", out)
    assert result.exit_code == 0, result.output
    return out, result


def test_train_seq2seq_reports_and_saves(dates_run):
    out, result = dates_run
    assert "exact match on 20 held-out dates" in result.stderr and "step 25/25" in result.stderr
    # validated on 30 dev pairs set aside from the 300 generated for training, never on the test dates
    assert "30 dev, 20 held-out dates" in result.stderr and "dev exact match" in result.stderr
    state = load_checkpoint(out)
    assert state["train"]["data"] == {"train_size": 300, "test_size": 20, "dev_size": 30}
    assert state["kind"] == "seq2seq" and state["model_config"]["attention"] == "general"
    assert (out / "attention.png").exists() or "attention maps" not in result.stderr


def test_translate_sample_and_eval(dates_run, tmp_path):
    out, _ = dates_run
    result = tgs("translate", out, "3rd of March 2021", "12/25/99", "--beam", 2)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all(set(line) <= set("0123456789-") for line in lines)
    a = tgs("sample", out, "--prime", "Tue 14 Jun 1988", "--top-k", 3, "--seed", 5)
    b = tgs("sample", out, "--prime", "Tue 14 Jun 1988", "--top-k", 3, "--seed", 5)
    assert a.exit_code == 0 and a.stdout == b.stdout
    evaluation = tgs("eval", out, "--json")
    record = json.loads(evaluation.stdout)
    assert record["kind"] == "seq2seq" and 0 <= record["exact_match"] <= 1 and record["examples"] == 1000
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("3rd of March 2021\t2021-03-03\n12/25/99\t1999-12-25\n")
    assert json.loads(tgs("eval", out, pairs, "--json").stdout)["examples"] == 2


def test_seq2seq_errors(dates_run, tmp_path):
    out, _ = dates_run
    assert_one_line_error(tgs("translate", out, "3rd of März 2021"), "not in the model's vocabulary")
    assert_one_line_error(tgs("sample", out), "--prime")
    assert_one_line_error(tgs("train", "seq2seq", "--hidden", 0, "--out", tmp_path / "x"), "--hidden")
    assert_one_line_error(tgs("train", "seq2seq", "--dropout", 1.5, "--out", tmp_path / "x"), "--dropout")
    assert_one_line_error(tgs("train", "seq2seq", "--out", out), "already holds a checkpoint")
    bad = tmp_path / "bad.tsv"
    bad.write_text("no tab here\n")
    assert_one_line_error(tgs("eval", out, bad), "no tab")


def test_train_tagger_sample_and_eval(tagger_run):
    out, result = tagger_run
    assert "held-out: token accuracy" in result.stderr and "lexicon baseline" in result.stderr
    assert "on 180 verses" in result.stderr and "20 dev, 50 held-out verses" in result.stderr
    saved = load_checkpoint(out)["train"]["test_scores"]
    tagged = tgs("sample", out, "--prime", "and moses went up unto the lord")
    assert tagged.exit_code == 0 and tagged.stdout.split()[0] in ("and", "[and]")
    record = json.loads(tgs("eval", out, "--json").stdout)
    assert record["kind"] == "tagger" and record["f1"] == pytest.approx(saved["f1"])
    assert record["accuracy"] == pytest.approx(saved["accuracy"]) and record["tokens"] == saved["tokens"]


def test_translate_needs_a_seq2seq_checkpoint(tagger_run, tmp_path):
    out, _ = tagger_run
    assert_one_line_error(tgs("translate", out, "12/25/99"), "needs a seq2seq checkpoint")
    assert_one_line_error(tgs("eval", out, tmp_path / "file.txt"), "without FILE")
    assert_one_line_error(tgs("train", "tagger", "--train-verses", 0, "--out", tmp_path / "t"), "--train-verses")
