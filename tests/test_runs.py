"""Issue 19: no lost runs, no silent garbage.  One regression test per item of the issue (signals
and concurrency through real processes), and every `tgs train` kind resuming bit-for-bit."""
import gzip
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from tinygrad_seq.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tinygrad_seq.trainer import PruneRun, RunDirectoryError, RunLock, json_safe, safe_exp
from tinygrad_seq.training import LMTrainer, TrainConfig, split_corpus

from cli_helpers import corpus  # noqa: F401 (a fixture)
from cli_helpers import TEXT, TINY, assert_one_line_error, tgs, tgs_process, train_tiny_charlm

POSIX = pytest.mark.skipif(sys.platform == "win32", reason="signals to a child process need POSIX")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, corpus):
    return train_tiny_charlm(tmp_path_factory, corpus, steps=4, eval_every=2)


def _wait_for(condition, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the process ended early: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.05)


def _signal_while_training(args, out, signum):
    """Start `tgs ARGS --out OUT`, send `signum` a few steps after it took the run's lock; (process, stderr)."""
    with tgs_process(*args, "--out", out) as proc:
        _wait_for(lambda: (out / ".lock").exists(), proc)
        time.sleep(1.5)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    return proc, err


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------- 1, 8: ngram
def test_ngram_refuses_to_overwrite_any_checkpoint_and_rejects_non_finite_k(tmp_path, corpus, run_dir):
    before = (run_dir / "checkpoint.npz").read_bytes()
    assert_one_line_error(tgs("train", "ngram", corpus, "--out", run_dir), "already holds a checkpoint", "--overwrite")
    assert (run_dir / "checkpoint.npz").read_bytes() == before  # the trained charlm is still there
    out = tmp_path / "ng"
    assert tgs("train", "ngram", corpus, "--n", 2, "--out", out).exit_code == 0
    assert tgs("train", "ngram", corpus, "--n", 3, "--out", out, "--overwrite").exit_code == 0
    assert load_checkpoint(out)["ngram"]["n"] == 3
    for bad in ("nan", "inf", "-1"):
        assert_one_line_error(tgs("train", "ngram", corpus, "--k", bad, "--out", tmp_path / bad), "--k must be")
        assert not (tmp_path / bad).exists()


# ---------------------------------------------------------------------------- 2: the lock
@POSIX
def test_a_second_run_into_the_same_out_is_refused_while_the_first_runs(tmp_path, corpus):
    out = tmp_path / "run"
    with tgs_process("train", "charlm", corpus, *TINY, "--steps", 100000, "--eval-every", 50000, "--out", out) as first:
        _wait_for(lambda: (out / ".lock").exists(), first)
        owner = json.loads((out / ".lock").read_text())
        assert owner["pid"] == first.pid and owner["host"] == socket.gethostname()
        for extra in ([], ["--overwrite"]):
            second = tgs("train", "charlm", corpus, *TINY, "--steps", 4, "--out", out, *extra)
            assert_one_line_error(second, "in use by another run", f"pid {first.pid}")
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err
    assert not (out / ".lock").exists()  # released at the end
    records = _metrics(out)
    assert records and all(r["step"] <= load_checkpoint(out)["train"]["step"] for r in records)


def test_stale_and_foreign_locks(tmp_path, corpus):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    result = tgs("train", "charlm", corpus, *TINY, "--steps", 2, "--eval-every", 2, "--out", out)
    assert result.exit_code == 0, result.output
    assert f"removed a stale lock of pid {dead.pid}" in result.stderr and not (out / ".lock").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / ".lock").write_text(json.dumps({"pid": 1, "host": "some-other-machine"}))
    assert_one_line_error(tgs("train", "charlm", corpus, *TINY, "--out", other), "host some-other-machine",
                          str(other / ".lock"))
    with RunLock(tmp_path / "mine"):
        with pytest.raises(RunDirectoryError, match="already in use by this process"):
            RunLock(tmp_path / "mine").acquire()


def _without_hard_links(monkeypatch):
    """os.link fails as on a file system without hard links (FAT, some FUSE and network mounts)."""
    def no_links(src, dst, *args, **kwargs):
        raise PermissionError(1, "Operation not permitted", src)
    monkeypatch.setattr(os, "link", no_links)


def test_the_lock_never_appears_empty(tmp_path, monkeypatch):
    # a run starting at the moment another took the lock must read its owner, not an empty file
    # it would take for a stale lock and replace (the test above once read one)
    folder = tmp_path / "run"
    lock_path = folder / ".lock"
    writes = []
    real_dump = json.dump

    def dump_while_watching(obj, f, *args, **kwargs):
        writes.append(lock_path.exists())
        return real_dump(obj, f, *args, **kwargs)

    monkeypatch.setattr(json, "dump", dump_while_watching)
    with RunLock(folder):
        assert writes == [False]    # the owner was written before the lock existed
        assert json.loads(lock_path.read_text())["pid"] == os.getpid()
        assert sorted(os.listdir(folder)) == [".lock"]    # the private copy is gone
        with pytest.raises(RunDirectoryError, match="already in use by this process"):
            RunLock(folder).acquire()
        assert sorted(os.listdir(folder)) == [".lock"]
    assert os.listdir(folder) == []


@pytest.mark.parametrize("hard_links", [True, False])
def test_two_runs_that_found_the_same_stale_lock_do_not_both_take_it(tmp_path, monkeypatch, hard_links):
    # run B read the stale lock; before B removes it, run A (here: a live child process) has
    # replaced it with its own.  B must leave A's lock in place and refuse.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = {"pid": dead.pid, "host": socket.gethostname()}
    folder = tmp_path / "run"
    folder.mkdir()
    if not hard_links:
        _without_hard_links(monkeypatch)
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as live:
        try:
            a_lock = {"pid": live.pid, "host": socket.gethostname(), "started": time.time()}
            (folder / ".lock").write_text(json.dumps(a_lock))
            b = RunLock(folder)
            reads = iter([stale])     # B's first read saw the stale lock; later ones see the file
            monkeypatch.setattr(b, "_owner", lambda: next(reads, None) or RunLock._read(b.path))
            with pytest.raises(RunDirectoryError, match=f"in use by another run \\(pid {live.pid}"):
                b.acquire()
            assert json.loads((folder / ".lock").read_text()) == a_lock
            assert sorted(os.listdir(folder)) == [".lock"]
        finally:
            live.kill()


def test_the_lock_on_a_file_system_without_hard_links(tmp_path, monkeypatch):
    _without_hard_links(monkeypatch)
    folder = tmp_path / "run"
    with RunLock(folder):
        assert json.loads((folder / ".lock").read_text())["pid"] == os.getpid()
        assert sorted(os.listdir(folder)) == [".lock"]
        with pytest.raises(RunDirectoryError, match="already in use by this process"):
            RunLock(folder).acquire()
    assert os.listdir(folder) == []


# ---------------------------------------------------------------------------- 3: the NaN guard on the weights
def test_weights_that_become_non_finite_after_the_step_are_never_saved(tmp_path):
    train, val = split_corpus(TEXT)
    config = TrainConfig(hidden=16, embed=8, seq_len=12, batch_size=4, steps=4, eval_every=2, out=str(tmp_path / "r"))
    trainer = LMTrainer.from_texts(config, train, val)
    trainer.train(echo=lambda line: None, progress=False)
    good = (tmp_path / "r" / "checkpoint.npz").read_bytes()
    resumed = LMTrainer.from_checkpoint(load_checkpoint(tmp_path / "r"), train, val, steps=8)
    real_step = resumed.optimizer.step

    def overflowing_step():  # the loss and the gradient are finite; only the update overflows
        real_step()
        resumed.params[0].data[0, 0] = np.inf
    resumed.optimizer.step = overflowing_step
    result = resumed.train(echo=lambda line: None, progress=False)
    assert result.status == "diverged" and result.exit_code == 1
    assert "weights became nan or inf" in result.message and "last good checkpoint (step 4)" in result.message
    assert (tmp_path / "r" / "checkpoint.npz").read_bytes() == good
    assert _metrics(tmp_path / "r")[-1]["event"] == "diverged"


# ---------------------------------------------------------------------------- 4: numbers
def test_eval_reports_overflowing_perplexity_as_inf_and_nan_as_null(tmp_path, corpus, run_dir):
    assert safe_exp(1000.0) == float("inf") and safe_exp(1.0) == pytest.approx(np.e)
    assert json_safe({"a": float("nan"), "b": [float("inf"), -np.inf], "c": np.float32(0.5)}) == \
        {"a": None, "b": ["inf", "-inf"], "c": 0.5}
    state = load_checkpoint(run_dir)
    head = [k for k in state["model"] if k.endswith("weight") and state["model"][k].shape[0] == 
            state["model_config"]["vocab_size"]][-1]
    state["model"][head] = state["model"][head] * 1e5  # confident and wrong: thousands of nats per char
    save_checkpoint(tmp_path / "huge.npz", state)
    result = tgs("eval", tmp_path / "huge.npz", corpus, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["nats_per_char"] > 709 and report["perplexity"] == "inf"
    assert "inf" in tgs("eval", tmp_path / "huge.npz", corpus).stdout
    state["model"][head] = state["model"][head] * np.nan
    save_checkpoint(tmp_path / "nan.npz", state)
    result = tgs("eval", tmp_path / "nan.npz", corpus, "--json")
    assert result.exit_code == 0 and "NaN" not in result.stdout
    assert json.loads(result.stdout)["nats_per_char"] is None
    assert_one_line_error(tgs("sample", tmp_path / "nan.npz", "--length", 5), "not finite", "diverged")


# ---------------------------------------------------------------------------- 5, 10: signals
@POSIX
def test_sigterm_saves_a_checkpoint_and_exits_143(tmp_path, corpus):
    out = tmp_path / "run"
    proc, err = _signal_while_training(["train", "charlm", corpus, *TINY, "--steps", 100000, "--eval-every", 50000],
                                       out, signal.SIGTERM)
    assert proc.returncode == 143, err
    assert "Terminated: terminated at step" in err and "Traceback" not in err
    assert load_checkpoint(out)["train"]["step"] > 0
    assert _metrics(out)[-1]["event"] == "terminated"


@POSIX
def test_ctrl_c_stops_seq2seq_with_exit_130_and_a_resumable_checkpoint(tmp_path):
    out = tmp_path / "dates"
    proc, err = _signal_while_training(["train", "seq2seq", "--steps", 100000, "--eval-every", 50000, "--train-size",
                                        200, "--test-size", 10, "--embed", 4, "--hidden", 4], out, signal.SIGINT)
    assert proc.returncode == 130, err
    assert "Interrupted: interrupted at step" in err
    step = load_checkpoint(out)["train"]["step"]
    resumed = tgs("train", "seq2seq", "--out", out, "--resume", "--steps", step + 2)
    assert resumed.exit_code == 0, resumed.output
    assert f"Resuming at step {step}" in resumed.stderr and load_checkpoint(out)["train"]["step"] == step + 2


# ---------------------------------------------------------------------------- 6, 12: corpora
def test_truncated_and_corrupt_gzip_and_too_short_validation_are_one_line(tmp_path, corpus):
    packed = gzip.compress(TEXT.encode())
    (tmp_path / "cut.txt.gz").write_bytes(packed[:len(packed) // 2])
    assert_one_line_error(tgs("train", "charlm", tmp_path / "cut.txt.gz", "--out", tmp_path / "r"),
                          "cut.txt.gz", "truncated gzip", "again")
    (tmp_path / "bad.txt.gz").write_bytes(packed[:10] + b"\xff" * 50 + packed[60:])
    assert_one_line_error(tgs("train", "charlm", tmp_path / "bad.txt.gz", "--out", tmp_path / "r"),
                          "bad.txt.gz", "not a valid gzip file")
    (tmp_path / "notgz.txt.gz").write_text("plain text")
    assert_one_line_error(tgs("train", "ngram", tmp_path / "notgz.txt.gz", "--out", tmp_path / "r"),
                          "not a valid gzip file")
    (tmp_path / "one.txt").write_text("x")
    assert_one_line_error(tgs("train", "charlm", corpus, *TINY, "--val", tmp_path / "one.txt", "--out", tmp_path / "r"),
                          "one.txt", "validation text has 1 token", "--val FILE")
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------- 7: malformed checkpoints
def _rewrite_header(source, target, edit):
    """Copy checkpoint `source` to `target` with its JSON header passed through `edit`."""
    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    import io
    header = json.loads(np.load(io.BytesIO(members["__header__.npy"])).tobytes().decode())
    header = edit(header)
    text = header if isinstance(header, str) else json.dumps(header)  # a str: raw JSON
    buffer = io.BytesIO()
    np.save(buffer, np.frombuffer(text.encode(), dtype=np.uint8))
    members["__header__.npy"] = buffer.getvalue()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return target


def _edit_state(fn):
    def edit(header):
        fn(header["state"])
        return header
    return edit


def _nest(depth):
    tree = 0
    for _ in range(depth):
        tree = [tree]
    return tree


MALFORMED = {
    "header is a list": lambda h: [h],
    "version is a string": lambda h: dict(h, version="1"),
    "no state": lambda h: {k: v for k, v in h.items() if k != "state"},
    "deep nesting": lambda h: dict(h, state=dict(h["state"], junk=_nest(200))),
    "nesting past the parser": lambda h: json.dumps(h)[:-1] + ', "junk": ' + "[" * 100000 + "]" * 100000 + "}",
    "step is abc": _edit_state(lambda s: s["train"].update(step="abc")),
    "negative step": _edit_state(lambda s: s["train"].update(step=-3)),
    "short vocabulary": _edit_state(lambda s: s["vocab"].update(symbols=s["vocab"]["symbols"][:3])),
    "missing model": _edit_state(lambda s: s.pop("model")),
    "model config is a list": _edit_state(lambda s: s.update(model_config=[1, 2])),
    "unknown array": _edit_state(lambda s: s["train"].update(carry={"__array__": "state/nowhere"})),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_checkpoints_are_one_checkpoint_error(tmp_path, run_dir, corpus, case):
    bad = _rewrite_header(run_dir / "checkpoint.npz", tmp_path / "bad.npz", MALFORMED[case])
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.npz").write_bytes(bad.read_bytes())
    commands = [("train", "charlm", corpus, "--out", run, "--resume", "--steps", 8)]
    if "step" not in case:  # the step matters only to a resumed run
        commands += [("sample", bad, "--length", 3), ("eval", bad, corpus)]
    for args in commands:
        result = tgs(*args)
        assert_one_line_error(result, "bad.npz" if "train" not in args else "checkpoint.npz")
        assert "malformed" in result.stderr or "corrupt" in result.stderr or "not a tinygrad_seq" in result.stderr


def test_wrong_shapes_npy_files_and_wrong_optimizer_state(tmp_path, run_dir, corpus):
    state = load_checkpoint(run_dir)
    first = next(iter(state["train"]["optimizer"]["state"]))
    name = next(k for k, v in state["train"]["optimizer"]["state"][first].items() if hasattr(v, "shape"))
    state["train"]["optimizer"]["state"][first][name] = np.zeros((2, 2), dtype=np.float32)
    run = tmp_path / "opt"
    save_checkpoint(run / "checkpoint.npz", state)
    assert_one_line_error(tgs("train", "charlm", corpus, "--out", run, "--resume", "--steps", 8),
                          "malformed", "optimiser")
    state = load_checkpoint(run_dir)
    weight = next(iter(state["model"]))
    state["model"][weight] = np.zeros((1, 1), dtype=np.float32)
    save_checkpoint(tmp_path / "shape.npz", state)
    assert_one_line_error(tgs("sample", tmp_path / "shape.npz"), "shape.npz", "has shape (1, 1)")
    np.save(tmp_path / "weights.npy", np.zeros(3))
    assert_one_line_error(tgs("sample", tmp_path / "weights.npy"), "weights.npy", "corrupt")
    with pytest.raises(CheckpointError, match="weights.npy"):
        load_checkpoint(tmp_path / "weights.npy")


def test_only_the_members_the_header_names_are_read(tmp_path, run_dir, monkeypatch):
    import tinygrad_seq.checkpoint as checkpoint

    crafted = tmp_path / "crafted.npz"
    crafted.write_bytes((run_dir / "checkpoint.npz").read_bytes())
    huge = np.lib.format.header_data_from_array_1_0(np.zeros(1))
    huge["shape"] = (2 ** 28,)  # 2 GiB of float64, a few KB compressed
    with zipfile.ZipFile(crafted, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("unreferenced.npy", "w", force_zip64=True) as member:
            import io
            head = io.BytesIO()
            np.lib.format.write_array_header_1_0(head, huge)
            member.write(head.getvalue())
            block = bytes(2 ** 20)
            for _ in range(64):  # 64 MiB of zeros (the header says more: it is never read)
                member.write(block)
    assert crafted.stat().st_size < 2 ** 20
    opened = []
    real_open = zipfile.ZipFile.open

    def spy(self, name, *args, **kwargs):
        opened.append(getattr(name, "filename", name))
        return real_open(self, name, *args, **kwargs)
    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    state = load_checkpoint(crafted)
    assert state["kind"] == "charlm" and "unreferenced.npy" not in opened and "__header__.npy" in opened
    # a member the header does name is bounded before a byte of it is read
    monkeypatch.setattr(checkpoint, "MAX_MEMBER_BYTES", 100)
    opened.clear()
    with pytest.raises(CheckpointError, match="more than the 100 a checkpoint member may hold"):
        load_checkpoint(crafted)
    assert opened == ["__header__.npy"]


# ---------------------------------------------------------------------------- 9: SIGKILL during a save
@POSIX
def test_sigkill_during_a_save_leaves_no_temporaries_after_the_next_run(tmp_path, corpus):
    out = tmp_path / "run"
    assert tgs("train", "charlm", corpus, *TINY, "--steps", 2, "--eval-every", 2, "--out", out).exit_code == 0
    script = ("import os, sys, time\n"
              "from tinygrad_seq import checkpoint\n"
              "def hang(fd):\n"
              "    print('saving', flush=True)\n"
              "    time.sleep(600)\n"
              "os.fsync = hang\n"
              f"checkpoint.save_checkpoint({str(out)!r}, {{'kind': 'charlm', 'big': __import__('numpy').zeros(10**6)}})\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "saving"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    leftovers = [name for name in os.listdir(out) if name.startswith(".tmp-")]
    assert leftovers and (out / leftovers[0]).stat().st_size > 10 ** 6
    assert load_checkpoint(out)["train"]["step"] == 2  # the real checkpoint is untouched
    resumed = tgs("train", "charlm", "--out", out, "--resume", "--steps", 4)
    assert resumed.exit_code == 0, resumed.output
    assert not [name for name in os.listdir(out) if name.startswith(".tmp-")]


# ---------------------------------------------------------------------------- 11: sampling
@POSIX
def test_sample_streams_and_ctrl_c_keeps_the_text(run_dir):
    with tgs_process("sample", run_dir, "--length", 10 ** 9, "--seed", 1, "--prime", "And ") as proc:
        received = proc.stdout.read(40)  # arrives long before the sample could finish
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    assert received.startswith("And ") and len(received) == 40
    assert proc.returncode == 130 and "Interrupted" in err and "Traceback" not in err


def test_streamed_sample_equals_the_one_shot_sample(run_dir):
    from tinygrad_seq.models.charlm import generate, stream_generate
    from tinygrad_seq.training import load_lm

    model, vocab = load_lm(load_checkpoint(run_dir))
    whole = generate(model, vocab, "And ", 30, temperature=0.9, top_k=5, rng=np.random.default_rng(3))
    for chunk in (1, 7):
        pieces = list(stream_generate(model, vocab, "And ", 30, temperature=0.9, top_k=5, chunk=chunk,
                                      rng=np.random.default_rng(3)))
        assert "".join(pieces) == whole and len(pieces) == -(-30 // chunk)
    a = tgs("sample", run_dir, "--prime", "And ", "--length", 25, "--seed", 2)
    assert a.exit_code == 0 and a.stdout == tgs("sample", run_dir, "--prime", "And ", "--length", 25, "--seed", 2).stdout


def test_conflicting_and_bad_sample_options_name_the_options(run_dir):
    assert_one_line_error(tgs("sample", run_dir, "--beam", 2, "--top-k", 3), "--beam and --top-k")
    assert_one_line_error(tgs("sample", run_dir, "--beam", 2, "--temperature", 0.5), "--beam and --temperature")
    assert_one_line_error(tgs("sample", run_dir, "--seed", -1), "--seed must be a non-negative integer")
    assert tgs("sample", run_dir, "--beam", 2, "--length", 5).exit_code == 0


# ---------------------------------------------------------------------------- 13, 14: files and settings
def test_checkpoints_honour_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "c.npz", {"kind": "x", "w": np.zeros(2)})
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
        os.umask(0o077)
        path = save_checkpoint(tmp_path / "d.npz", {"kind": "x"})
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    finally:
        os.umask(previous)


def test_resume_keeps_the_checkpoints_settings_and_babysitting_changes_them(tmp_path, corpus):
    out = tmp_path / "run"
    assert tgs("train", "charlm", corpus, *TINY, "--steps", 3, "--eval-every", 3, "--backend", "numpy",
               "--out", out).exit_code == 0
    assert tgs("train", "charlm", "--out", out, "--resume", "--steps", 6).exit_code == 0
    config = load_checkpoint(out)["train"]["config"]
    assert config["eval_every"] == 3 and config["backend"] == "numpy" and config["device"] == "cpu"
    assert [r["step"] for r in _metrics(out) if "val_loss" in r] == [3, 6]
    changed = tgs("train", "charlm", "--out", out, "--resume", "--steps", 8, "--lr", 0.5, "--clip", 1,
                  "--eval-every", 1, "--dropout", 0.1)
    assert changed.exit_code == 0, changed.output
    assert "lr 0.002 -> 0.5" in changed.stderr
    state = load_checkpoint(out)
    config = state["train"]["config"]
    assert (config["lr"], config["clip"], config["eval_every"], config["dropout"]) == (0.5, 1, 1, 0.1)
    assert all(group["lr"] == 0.5 for group in state["train"]["optimizer"]["param_groups"])
    event = [r for r in _metrics(out) if r.get("event") == "settings"][-1]
    assert event["step"] == 6 and event["changed"]["lr"] == [0.002, 0.5] and event["changed"]["dropout"] == [0.0, 0.1]
    assert [r["step"] for r in _metrics(out) if "val_loss" in r][-2:] == [7, 8]
    for option in (("--hidden", 32), ("--seq-len", 5), ("--model", "gru"), ("--seed", 4)):
        assert_one_line_error(tgs("train", "charlm", "--out", out, "--resume", *option), "cannot change " + option[0])


# ---------------------------------------------------------------------------- the loop's extension points
def test_callbacks_prune_and_gradient_hook_and_silent_ranks(tmp_path):
    train, val = split_corpus(TEXT)
    seen = []

    class Pruner:
        def on_evaluate(self, trainer, step, metrics):
            seen.append((step, sorted(metrics)))
            return step >= 4

    config = TrainConfig(hidden=16, embed=8, seq_len=12, batch_size=4, steps=20, eval_every=2, out=str(tmp_path / "a"))
    result = LMTrainer.from_texts(config, train, val, callbacks=[Pruner()]).train(echo=lambda line: None,
                                                                                  progress=False)
    assert result.status == "pruned" and result.step == 4 and result.exit_code == 0
    assert seen == [(2, ["val_bits_per_char", "val_loss"]), (4, ["val_bits_per_char", "val_loss"])]
    assert load_checkpoint(tmp_path / "a")["train"]["step"] == 4

    def raising(trainer, step, metrics):
        raise PruneRun("the trial is hopeless")
    config = TrainConfig(hidden=16, embed=8, seq_len=12, batch_size=4, steps=20, eval_every=2, out=str(tmp_path / "b"))
    result = LMTrainer.from_texts(config, train, val, callbacks=[raising]).train(echo=lambda line: None,
                                                                                 progress=False)
    assert result.status == "pruned" and "hopeless" in result.message

    calls = []

    def zero_gradients(params):  # runs after backward, before clipping and the update
        calls.append(len(params))
        for p in params:
            p.grad.data[...] = 0
    config = TrainConfig(hidden=16, embed=8, seq_len=12, batch_size=4, steps=3, eval_every=3, out=str(tmp_path / "c"))
    trainer = LMTrainer.from_texts(config, train, val, reduce_gradients=zero_gradients, is_main_process=False)
    before = [p.numpy().copy() for p in trainer.params]
    printed = []
    assert trainer.train(echo=printed.append, progress=False).status == "done"
    assert calls == [len(before)] * 3 and printed == []
    assert all(np.array_equal(a, p.numpy()) for a, p in zip(before, trainer.params))
    assert not (tmp_path / "c").exists()  # only the main process writes


# ---------------------------------------------------------------------------- every kind: resume, metrics, plots
KINDS = {
    "charlm": ["charlm", "CORPUS", *TINY, "--steps", 8, "--eval-every", 4, "--dropout", 0.2],
    "wordlm": ["wordlm", "CORPUS", "--hidden", 8, "--embed", 4, "--seq-len", 5, "--batch-size", 2, "--steps", 8,
               "--eval-every", 4, "--min-count", 1],
    "cnn": ["cnn", "--epochs", 2, "--channels", "2,4", "--hidden", 8, "--batch-size", 128, "--dropout", 0.2],
    "mlp": ["mlp", "--epochs", 2, "--hidden", 8, "--batch-size", 128, "--augment"],
    "seq2seq": ["seq2seq", "--steps", 8, "--eval-every", 4, "--train-size", 100, "--test-size", 10, "--embed", 4,
                "--hidden", 4],
    "tagger": ["tagger", "--steps", 8, "--eval-every", 4, "--train-verses", 60, "--test-verses", 10, "--embed", 4,
               "--hidden", 4, "--layers", 1],
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_resumes_bit_for_bit_and_writes_metrics_and_plots(tmp_path, corpus, kind, monkeypatch):
    if kind in ("cnn", "mlp"):
        pytest.importorskip("sklearn", reason="the digits come with scikit-learn")
    from tinygrad_seq.trainer import Trainer

    args = [str(corpus) if a == "CORPUS" else a for a in KINDS[kind]]
    straight = tgs("train", *args, "--out", tmp_path / "a")
    assert straight.exit_code == 0, straight.output
    total = load_checkpoint(tmp_path / "a")["train"]["step"]
    real_step = Trainer.train_step

    def ctrl_c_half_way(self):
        loss = real_step(self)
        if self.step == total // 2 + 1:  # not at an evaluation: the interruption saves
            os.kill(os.getpid(), signal.SIGINT)
        return loss
    monkeypatch.setattr(Trainer, "train_step", ctrl_c_half_way)
    stopped = tgs("train", *args, "--out", tmp_path / "b")
    assert stopped.exit_code == 130, stopped.output
    assert load_checkpoint(tmp_path / "b")["train"]["step"] == total // 2 + 1
    monkeypatch.setattr(Trainer, "train_step", real_step)
    assert_one_line_error(tgs("train", *args, "--out", tmp_path / "b"), "already holds a checkpoint")
    resumed = tgs("train", kind, "--out", tmp_path / "b", "--resume")
    assert resumed.exit_code == 0, resumed.output
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert b["train"]["step"] == total
    for part in ("model",) + (("train",) if kind in ("cnn", "mlp") else ()):
        weights_a = a[part] if part == "model" else a["train"]["model"]
        weights_b = b[part] if part == "model" else b["train"]["model"]
        for name in weights_a:
            np.testing.assert_array_equal(weights_a[name], weights_b[name], err_msg=f"{kind} {part} {name}")
    records = _metrics(tmp_path / "b")
    assert any("loss" in r for r in records) and any(a_metric in r for r in records
                                                     for a_metric in ("val_loss", "dev_accuracy"))
    assert [r["event"] for r in records if "event" in r] == ["interrupted"]
    if kind == "seq2seq":
        assert (tmp_path / "b" / "attention.png").exists() or not _has_matplotlib()
    if _has_matplotlib():
        assert (tmp_path / "b" / "loss.png").stat().st_size > 1000


def _has_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
