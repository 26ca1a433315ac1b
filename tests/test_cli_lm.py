"""`tgs train charlm|wordlm|ngram`, `tgs sample`, `tgs eval`: the happy paths, and every bad
input of the issue ending in one "Error:" line and a non-zero exit, never a traceback."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tinygrad_seq.checkpoint import load_checkpoint
from tinygrad_seq.cli import kinds

from cli_helpers import corpus  # noqa: F401 (a fixture)
from cli_helpers import TEXT, TINY, assert_one_line_error, tgs, tgs_command, tgs_process, train_tiny_charlm


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, corpus):
    return train_tiny_charlm(tmp_path_factory, corpus, steps=8, eval_every=4)


# ---------------------------------------------------------------------------- happy paths
def test_train_charlm_writes_a_run(run_dir):
    assert {"checkpoint.npz", "metrics.jsonl"} <= set(os.listdir(run_dir))
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val_loss" in r] == [4, 8]
    assert all(r["chars_per_s"] > 0 for r in records if "loss" in r)
    state = load_checkpoint(run_dir)
    assert state["kind"] == "charlm" and state["train"]["step"] == 8


def test_train_output_shows_progress_validation_and_samples(tmp_path, corpus):
    result = tgs("train", "charlm", corpus, *TINY, "--steps", 4, "--eval-every", 2, "--out", tmp_path / "r",
                 "--model", "gru", "--layers", 2, "--dropout", 0.1, "--backend", "numpy")
    assert result.exit_code == 0, result.output
    err = result.stderr
    assert "GRU (2 layers, hidden 16" in err and "step 4/4 [" in err and "chars/s" in err and "ETA" in err
    assert "validation loss" in err and "bits/char" in err and "--- sample ---" in err
    assert "done: 4 steps" in err


def test_sample_is_seeded_and_supports_beam_and_greedy(run_dir):
    a = tgs("sample", run_dir, "--prime", "And the ", "--length", 40, "--seed", 3)
    b = tgs("sample", run_dir / "checkpoint.npz", "--prime", "And the ", "--length", 40, "--seed", 3)
    assert a.exit_code == 0 and a.stdout == b.stdout
    assert a.stdout.startswith("And the ") and len(a.stdout.rstrip("\n")) >= 40
    beam = tgs("sample", run_dir, "--prime", "God", "--length", 10, "--beam", 3)
    greedy = tgs("sample", run_dir, "--prime", "God", "--length", 10, "--temperature", 0)
    top1 = tgs("sample", run_dir, "--prime", "God", "--length", 10, "--top-k", 1, "--seed", 9)
    assert beam.exit_code == greedy.exit_code == top1.exit_code == 0
    assert greedy.stdout == top1.stdout  # top-1 sampling is greedy decoding
    assert beam.stdout.startswith("God")


def test_eval_reports_nats_and_bits(run_dir, corpus):
    result = tgs("eval", run_dir, corpus, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["kind"] == "charlm" and report["chars"] == len(TEXT) - 1
    assert report["bits_per_char"] == pytest.approx(report["nats_per_char"] / np.log(2))
    plain = tgs("eval", run_dir, corpus)
    assert "nats_per_char:" in plain.stdout and "bits_per_char:" in plain.stdout


def test_resume_through_the_cli_is_bit_for_bit(tmp_path, corpus):
    common = [*TINY, "--steps", 8, "--eval-every", 2, "--dropout", 0.3, "--layers", 2]
    assert tgs("train", "charlm", corpus, *common, "--out", tmp_path / "a").exit_code == 0
    half = [a if a != 8 else 4 for a in common]
    assert tgs("train", "charlm", corpus, *half, "--out", tmp_path / "b").exit_code == 0
    # a setting that shapes the model cannot change on resume (it used to be ignored silently)
    assert_one_line_error(tgs("train", "charlm", "--out", tmp_path / "b", "--resume", "--steps", 8, "--hidden", 99),
                          "cannot change --hidden")
    resumed = tgs("train", "charlm", "--out", tmp_path / "b", "--resume", "--steps", 8)
    assert resumed.exit_code == 0, resumed.output
    assert "Resuming at step 4" in resumed.stderr
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    for name in a["model"]:
        np.testing.assert_array_equal(a["model"][name], b["model"][name])


def test_train_charlm_transformer(tmp_path, corpus):
    out = tmp_path / "trf"
    result = tgs("train", "charlm", corpus, "--model", "transformer", "--layers", 1, "--heads", 2, "--embed", 16,
                 "--seq-len", 12, "--batch-size", 4, "--steps", 6, "--eval-every", 3, "--out", out)
    assert result.exit_code == 0, result.output
    assert "TRANSFORMER (1 block, width 16, 2 heads, context 12" in result.stderr
    state = load_checkpoint(out)
    assert state["model_config"]["model"] == "transformer" and state["model_config"]["block_size"] == 12
    sampled = tgs("sample", out, "--prime", "And the", "--length", 20, "--beam", 2)
    assert sampled.exit_code == 0 and sampled.stdout.startswith("And the")
    assert_one_line_error(tgs("train", "charlm", corpus, "--model", "transformer", "--embed", 10, "--heads", 4,
                              "--out", tmp_path / "bad"), "multiple of heads")


def test_bundled_corpus_without_argument(tmp_path):
    result = tgs("train", "charlm", "--steps", 2, "--eval-every", 2, "--hidden", 8, "--embed", 4,
                 "--seq-len", 8, "--batch-size", 2, "--out", tmp_path / "kjv")
    assert result.exit_code == 0, result.output
    assert "the bundled King James Bible" in result.stderr and "vocabulary 73" in result.stderr


def test_wordlm_and_ngram(tmp_path, corpus):
    word = tgs("train", "wordlm", corpus, "--hidden", 16, "--embed", 8, "--seq-len", 6, "--batch-size", 4,
               "--steps", 4, "--eval-every", 4, "--min-count", 1, "--out", tmp_path / "w")
    assert word.exit_code == 0, word.output
    report = json.loads(tgs("eval", tmp_path / "w", corpus, "--json").stdout)
    assert report["kind"] == "wordlm" and {"nats_per_word", "perplexity", "words", "nats_per_char"} <= set(report)
    assert tgs("sample", tmp_path / "w", "--prime", "And the", "--length", 5, "--seed", 1).exit_code == 0

    ngram = tgs("train", "ngram", corpus, "--n", 4, "--out", tmp_path / "n", "--length", 30)
    assert ngram.exit_code == 0, ngram.output
    assert "validation:" in ngram.stderr and len(ngram.stdout.strip()) > 0
    first = tgs("sample", tmp_path / "n", "--prime", "And ", "--length", 30, "--seed", 4)
    second = tgs("sample", tmp_path / "n", "--prime", "And ", "--length", 30, "--seed", 4)
    assert first.exit_code == 0 and first.stdout == second.stdout and first.stdout.startswith("And ")
    report = json.loads(tgs("eval", tmp_path / "n", corpus, "--json").stdout)
    assert report["kind"] == "ngram" and report["nats_per_char"] < 1.0


@pytest.mark.parametrize("level, n, smoothing, with_val", [("char", 4, "interpolation", False),
                                                       ("word", 3, "backoff", True)])
def test_ngram_counts_the_memory_mapped_cache_as_the_in_memory_path(tmp_path, corpus, monkeypatch,
                                                                       level, n, smoothing, with_val):
    """`tgs train ngram` fits the corpus cache's memory-mapped ids, and its counts and its
    validation figure are those of the whole text encoded and counted in memory."""
    from tinygrad_seq.text.corpus import read_text
    from tinygrad_seq.text.corpus_cache import ByteProgress
    from tinygrad_seq.text.ngram import NGramLM
    from tinygrad_seq.text.vocab import CharVocab, WordVocab
    from tinygrad_seq.training import split_corpus

    val_file = tmp_path / "val.txt"
    val_file.write_text("And God created the earth; and the deep was void.\n" * 3)
    monkeypatch.setattr(ByteProgress, "QUIET_SECONDS", 0)  # show the progress lines of this small text
    fitted = []
    fit = NGramLM.fit
    monkeypatch.setattr(NGramLM, "fit", lambda self, ids, **kw: fitted.append(type(ids)) or fit(self, ids, **kw))
    args = ["--n", n, "--level", level, "--smoothing", smoothing, "--out", tmp_path / "n", "--length", 5]
    result = tgs("train", "ngram", corpus, *args, *(["--val", val_file] if with_val else []))
    assert result.exit_code == 0, result.output
    assert fitted == [np.memmap] and any((tmp_path / "n" / "corpus-cache").glob("*.ids"))
    assert "validating: " in result.stderr and f"M {level}s" in result.stderr
    monkeypatch.setattr(NGramLM, "fit", fit)

    text = read_text(corpus)
    train_text, val_text = split_corpus(text, read_text(val_file) if with_val else None)
    vocab = CharVocab.from_text(text + val_text) if level == "char" else WordVocab.from_text(train_text)
    train_ids, val_ids = vocab.encode(train_text), vocab.encode(val_text)
    model = NGramLM(n, len(vocab), smoothing=smoothing).fit(train_ids, chunk_tokens=train_ids.size)
    saved = load_checkpoint(tmp_path / "n")["ngram"]
    for m in range(n):
        np.testing.assert_array_equal(np.asarray(saved["grams"][m]).reshape(-1, m + 1), model.state_dict()["grams"][m])
        np.testing.assert_array_equal(np.asarray(saved["counts"][m]).reshape(-1), model.state_dict()["counts"][m])
    per = -model.log_prob(val_ids, context=train_ids[-(n - 1):], chunk_tokens=val_ids.size) / val_ids.size
    unit = "char" if level == "char" else "word"
    assert f"validation: {per:.4f} nats/{unit} ({per / np.log(2):.3f} bits/{unit})" in result.stderr
    # `tgs eval` streams FILE through a temporary id file: the in-memory figures
    evaluated = tgs("eval", tmp_path / "n", val_file, "--json")
    assert "evaluating: " in evaluated.stderr
    report = json.loads(evaluated.stdout)
    val_ids = vocab.encode(read_text(val_file))
    nats = -model.log_prob(val_ids, chunk_tokens=val_ids.size)
    assert report["chars"] == len(read_text(val_file))
    assert report["nats_per_char"] == pytest.approx(nats / report["chars"], rel=1e-12)
    assert report["perplexity"] == pytest.approx(np.exp(nats / val_ids.size), rel=1e-12)


def test_kinds_registry_is_open():
    assert {"charlm", "wordlm", "ngram"} <= set(kinds.registered())
    handler = kinds.register("toy-kind", evaluate=lambda state, file, path: {"accuracy": 0.5})
    assert kinds.lookup("toy-kind") is handler
    with pytest.raises(ValueError, match="unknown checkpoint kind 'nope'"):
        kinds.lookup("nope")


# ---------------------------------------------------------------------------- bad input
def test_missing_empty_short_undecodable_and_directory_corpora(tmp_path):
    out = ["--out", tmp_path / "never"]
    assert_one_line_error(tgs("train", "charlm", tmp_path / "missing.txt", *out), "no such file")
    (tmp_path / "empty.txt").write_text("")
    assert_one_line_error(tgs("train", "charlm", tmp_path / "empty.txt", *out), "is empty")
    (tmp_path / "short.txt").write_text("abcdefgh")
    assert_one_line_error(tgs("train", "charlm", tmp_path / "short.txt", "--seq-len", 12, *out),
                          "fewer than seq-len + 1")
    (tmp_path / "latin1.txt").write_bytes("Genèse".encode("latin-1") * 20)
    assert_one_line_error(tgs("train", "charlm", tmp_path / "latin1.txt", *out), "not valid utf-8", "0xe8")
    assert_one_line_error(tgs("train", "charlm", tmp_path, *out), "is a directory")
    assert_one_line_error(tgs("train", "ngram", tmp_path, *out), "is a directory")
    assert_one_line_error(tgs("train", "charlm", tmp_path / "short.txt", "--val", tmp_path, *out), "--val", "directory")
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("option, value, message", [
    ("--hidden", 0, "hidden must be a positive integer"), ("--layers", -1, "layers must be a positive integer"),
    ("--embed", -4, "embed must be a positive integer"), ("--seq-len", 0, "seq-len must be a positive integer"),
    ("--batch-size", -3, "batch-size must be a positive integer"), ("--steps", 0, "steps must be a positive"),
    ("--eval-every", 0, "eval-every must be a positive"), ("--lr", 0, "lr must be a positive number"),
    ("--lr", -0.1, "lr must be a positive number"), ("--clip", -1, "clip must be >= 0"),
    ("--dropout", 1.5, "dropout must be in [0, 1)"),
])
def test_nonsensical_hyper_parameters(tmp_path, corpus, option, value, message):
    assert_one_line_error(tgs("train", "charlm", corpus, option, value, "--out", tmp_path / "r"), message)


@pytest.mark.parametrize("option, value, message", [
    ("--max-vocab", 2, "max-vocab must be at least 3"), ("--min-count", 0, "min-count must be a positive integer"),
])
def test_nonsensical_word_vocabulary_limits(tmp_path, corpus, option, value, message):
    assert_one_line_error(tgs("train", "wordlm", corpus, option, value, "--out", tmp_path / "r"), message)
    assert not (tmp_path / "r" / "corpus-cache").exists()  # refused before any pass over the corpus


@pytest.mark.parametrize("option, value, message", [
    ("--length", 0, "--length must be at least 1"), ("--top-k", 0, "--top-k must be at least 1"),
    ("--beam", 0, "--beam must be at least 1"), ("--temperature", -1, "--temperature must be a number >= 0"),
])
def test_nonsensical_sampling_options(run_dir, option, value, message):
    assert_one_line_error(tgs("sample", run_dir, option, value), message)


def test_prime_outside_the_vocabulary(run_dir):
    assert_one_line_error(tgs("sample", run_dir, "--prime", "Zebra €"), "--prime", "not in the model's vocabulary",
                          "'Z'", "'€'")


def test_corrupt_foreign_and_missing_checkpoints(tmp_path, corpus):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "checkpoint.npz").write_bytes(b"this is not a zip file")
    for args in (("sample", bad), ("eval", bad, corpus), ("train", "charlm", corpus, "--out", bad, "--resume")):
        assert_one_line_error(tgs(*args), "corrupt")
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.zeros(3))
    assert_one_line_error(tgs("sample", foreign), "not a tinygrad_seq checkpoint")
    assert_one_line_error(tgs("eval", tmp_path / "nothing-here", corpus), "no checkpoint at")
    (tmp_path / "empty-run").mkdir()
    assert_one_line_error(tgs("sample", tmp_path / "empty-run"), "without a checkpoint.npz")
    assert tgs("train", "ngram", corpus, "--out", tmp_path / "ng").exit_code == 0
    assert_one_line_error(tgs("train", "charlm", corpus, "--out", tmp_path / "ng", "--resume"),
                          "holds a 'ngram' model")
    assert_one_line_error(tgs("sample", tmp_path / "ng", "--beam", 2), "--beam is for neural language models")


def test_eval_needs_a_file_and_runs_are_not_overwritten(run_dir, corpus):
    assert_one_line_error(tgs("eval", run_dir), "give the text FILE")
    before = (run_dir / "checkpoint.npz").read_bytes()
    assert_one_line_error(tgs("train", "charlm", corpus, "--out", run_dir), "already holds a checkpoint", "--resume")
    assert (run_dir / "checkpoint.npz").read_bytes() == before


def test_unavailable_device(tmp_path, corpus, run_dir):
    from tinygrad_seq.device import cupy_or_none

    if cupy_or_none() is not None:
        pytest.skip("a GPU is available here")
    assert_one_line_error(tgs("train", "charlm", corpus, "--device", "cuda", "--out", tmp_path / "r"),
                          "--device cuda is not available")
    assert_one_line_error(tgs("sample", run_dir, "--device", "cuda"), "--device cuda is not available")


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, corpus, monkeypatch):
    from tinygrad_seq.training import LMTrainer

    real_step = LMTrainer.train_step

    def nan_at_step_3(self):
        if self.step == 2:
            raise FloatingPointError("loss became nan")
        return real_step(self)

    monkeypatch.setattr(LMTrainer, "train_step", nan_at_step_3)
    out = tmp_path / "r"
    result = tgs("train", "charlm", corpus, *TINY, "--steps", 6, "--eval-every", 2, "--out", out)
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and "at step 3" in last and "the last good checkpoint (step 2) is kept" in last
    assert "Traceback" not in result.output
    assert load_checkpoint(out)["train"]["step"] == 2


def test_a_diverging_run_never_saves_non_finite_weights(tmp_path, corpus):
    # lr 1e38: the first update makes the weights overflow; the guard on the weights stops it there
    result = tgs("train", "charlm", corpus, *TINY, "--lr", 1e38, "--clip", 0, "--steps", 50, "--eval-every", 1,
                 "--out", tmp_path / "r")
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and "weights became nan or inf" in last and "at step 1" in last
    assert "no checkpoint had been written yet" in last
    assert "Traceback" not in result.output and "Warning" not in result.output
    assert not (tmp_path / "r" / "checkpoint.npz").exists()


# ---------------------------------------------------------------------------- a real process
def test_real_process_errors_are_one_line(tmp_path):
    for args, fragment in ((["train", "charlm", str(tmp_path / "missing.txt")], "no such file"),
                           (["sample", str(tmp_path)], "without a checkpoint.npz")):
        proc = subprocess.run(tgs_command() + args, capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0
        assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and fragment in proc.stderr
        assert "Traceback" not in proc.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT delivery to a child needs POSIX")
def test_real_process_ctrl_c_saves_and_resumes(tmp_path, corpus):
    out = tmp_path / "run"
    with tgs_process("train", "charlm", corpus, *TINY, "--steps", 100000, "--eval-every", 50000, "--out", out) as proc:
        header = proc.stderr.readline()  # printed just before the first step
        assert "run directory" in header, header
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Interrupted: interrupted at step" in err and "Traceback" not in err
    step = load_checkpoint(out)["train"]["step"]
    assert step > 0
    resumed = tgs("train", "charlm", "--out", out, "--resume", "--steps", step + 2)
    assert resumed.exit_code == 0 and f"Resuming at step {step}" in resumed.stderr
