"""`tgs tune` and tinygrad_seq.tune: grid search by two workers, log-scale sampling, coarse-to-fine,
studies shared by processes, a killed worker, pruning, and the one-line errors."""
import contextlib
import json
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

optuna = pytest.importorskip("optuna", reason="tgs tune needs the optional optuna extra")

from tinygrad_seq import tune  # noqa: E402
from tinygrad_seq.text.corpus import bundled_corpus  # noqa: E402

from cli_helpers import assert_one_line_error, tgs  # noqa: E402

TGS = [sys.executable, "-m", "tinygrad_seq.cli.main"]
# a tiny charlm: a trial of 20-60 steps takes about a second
TINY = ["--set", "embed=8", "--set", "seq-len=16", "--set", "batch-size=4", "--set", "backend=numpy"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text(bundled_corpus()[:20000])
    return path


def run_tgs(*args, cwd=None, **kwargs):
    return subprocess.run(TGS + [str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=600,
                          **kwargs)


def trials_of(name, storage):
    return tune.load(name, storage).get_trials()


# ---------------------------------------------------------------------------- grid, workers, report, refine
@pytest.mark.slow
def test_grid_by_two_workers_reports_the_best_and_its_command_reproduces_it(tmp_path, corpus):
    out = tmp_path / "tune"
    result = run_tgs("tune", "charlm", corpus, *TINY, "--sampler", "grid", "--param", "lr=log:0.002:0.02:2",
                     "--param", "hidden=choice:16,32", "--steps", 20, "--eval-every", 10, "--study", "grid",
                     "--workers", 2, "--out", out, "--refine", "--refine-trials", 2)
    assert result.returncode == 0, result.stderr
    storage = tune.default_storage(out)
    # (a worker that found the queue emptied under it leaves a "spare" failed trial, hidden in reports)
    trials = [t for t in trials_of("grid", storage) if not t.user_attrs.get("tgs:spare")]
    assert len(trials) == 4 and all(t.state.name == "COMPLETE" for t in trials)
    assert {(round(t.params["lr"], 6), t.params["hidden"]) for t in trials} == \
        {(0.002, 16), (0.002, 32), (0.02, 16), (0.02, 32)}
    for t in trials:  # each trial is an ordinary run directory, trained to the last step
        assert os.path.exists(out / f"trial-{t.number}" / "checkpoint.npz")
        assert t.user_attrs["tgs:steps"] == 20

    report = tgs("tune", "--report", "grid", "--out", out)
    assert report.exit_code == 0, report.output
    table = [line for line in report.stdout.splitlines() if re.match(r"\| \d", line)]
    assert len(table) == 4 + 2  # the grid, then its refine study's two trials
    best = min(trials, key=lambda t: t.value)
    assert f"best: trial {best.number}, val_loss {best.value:.4f}" in report.stdout
    assert os.path.exists(out / "grid-params.png") and os.path.exists(out / "grid-history.png")

    command = report.stdout.split("reproduce it with:\n")[1].splitlines()[0].split()
    assert command[:3] == ["tgs", "train", "charlm"]
    rerun = tgs(*command[1:-1], tmp_path / "best")  # same command, its own --out
    assert rerun.exit_code == 0, rerun.output
    loss = float(re.search(r"done: 20 steps, val loss ([0-9.]+)", rerun.stderr).group(1))
    assert loss == pytest.approx(best.value, abs=2e-4)

    # coarse to fine: the refine study searches a narrower lr range holding the best lr
    refined = tune.load("grid-refine", storage)
    spec = tune.StudySpec.from_study(refined)
    assert spec.parent == "grid" and spec.sampler == "random"
    lr = next(p for p in spec.space if p.name == "lr")
    assert 0.002 <= lr.low <= best.params["lr"] <= lr.high <= 0.02 and lr.high / lr.low < 10
    assert len([t for t in refined.get_trials() if t.state.name == "COMPLETE"]) == 2


# ---------------------------------------------------------------------------- sampling on the declared scale
def test_random_search_samples_log_parameters_log_uniformly():
    from scipy import stats

    lr = tune.Param.parse("lr=log:1e-4:1e-2")
    hidden = tune.Param.parse("hidden=log:16:512")
    study = optuna.create_study(sampler=tune.make_sampler("random", seed=0))
    lrs, hiddens = [], []
    for _ in range(2000):
        trial = study.ask()
        lrs.append(lr.suggest(trial))
        hiddens.append(hidden.suggest(trial, integer=True))
        study.tell(trial, 0.0)
    lrs = np.array(lrs)
    assert lrs.min() >= 1e-4 and lrs.max() <= 1e-2
    # log10(lr) is uniform on [-4, -2]; lr itself is far from uniform on [1e-4, 1e-2]
    assert stats.kstest(np.log10(lrs), stats.uniform(loc=-4, scale=2).cdf).pvalue > 0.01
    assert stats.kstest(lrs, stats.uniform(loc=1e-4, scale=1e-2 - 1e-4).cdf).pvalue < 1e-10
    # a log int range: as many draws below the geometric middle (~90) as above it
    assert all(isinstance(h, int) and 16 <= h <= 512 for h in hiddens)
    assert 0.45 < np.mean(np.array(hiddens) < math.sqrt(16 * 512)) < 0.55


def test_refine_narrows_every_range_around_the_best_trials():
    space = tune.parse_space(["lr=log:1e-5:1e-1", "dropout=float:0:0.5", "layers=int:1:4",
                              "model=choice:lstm,gru,rnn"])
    dists = {"lr": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True),
             "dropout": optuna.distributions.FloatDistribution(0, 0.5),
             "layers": optuna.distributions.IntDistribution(1, 4),
             "model": optuna.distributions.CategoricalDistribution(["lstm", "gru", "rnn"])}
    rows = [(1e-3, 0.1, 2, "lstm", 1.0), (2e-3, 0.15, 2, "gru", 1.1), (1e-5, 0.5, 4, "rnn", 3.0),
            (9e-2, 0.0, 1, "rnn", 2.9), (1e-4, 0.4, 4, "rnn", 2.5), (5e-2, 0.3, 1, "lstm", 2.0),
            (3e-5, 0.45, 3, "rnn", 2.7), (2e-2, 0.05, 1, "gru", 2.2)]
    trials = [optuna.trial.create_trial(params=dict(lr=a, dropout=b, layers=c, model=d), distributions=dists,
                                        value=v) for a, b, c, d, v in rows]
    narrow = {p.name: p for p in tune.refine_space(space, trials, "minimize")}
    assert 1e-5 < narrow["lr"].low <= 1e-3 and 2e-3 <= narrow["lr"].high < 1e-1
    assert math.log(narrow["lr"].high / narrow["lr"].low) < 0.5 * math.log(1e4)
    assert 0 <= narrow["dropout"].low <= 0.1 and 0.15 <= narrow["dropout"].high < 0.5
    assert narrow["layers"].kind == "choice" and narrow["layers"].choices == (2,)
    assert narrow["model"].choices == ("lstm", "gru")
    # maximising picks the other end
    wide = {p.name: p for p in tune.refine_space(space, trials, "maximize")}
    assert wide["model"].choices == ("rnn",) and wide["lr"].low < 1e-4


# ---------------------------------------------------------------------------- shared studies, killed workers
@pytest.mark.slow
def test_two_processes_share_one_study_without_duplicates(tmp_path, corpus):
    storage = "sqlite:///" + str(tmp_path / "shared.db")
    args = ["tune", "charlm", corpus, *TINY, "--sampler", "grid", "--param", "lr=choice:0.003,0.01",
            "--param", "hidden=choice:16,32", "--steps", 20, "--eval-every", 10, "--study", "shared",
            "--storage", storage, "--out", tmp_path / "runs"]
    procs = [subprocess.Popen(TGS + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    trials = [t for t in trials_of("shared", storage) if not t.user_attrs.get("tgs:spare")]
    assert len(trials) == 4 and all(t.state.name == "COMPLETE" for t in trials)
    assert len({(t.params["lr"], t.params["hidden"]) for t in trials}) == 4
    ran = [len(re.findall(r"^trial \d+: val_loss", err, re.M)) for _, err in outputs]
    assert sum(ran) == 4 and min(ran) >= 1  # both did some of the work


@pytest.mark.slow
def test_a_worker_killed_mid_trial_leaves_a_study_that_continues(tmp_path, corpus):
    storage = "sqlite:///" + str(tmp_path / "kill.db")
    args = [str(a) for a in ["tune", "charlm", corpus, *TINY, "--set", "hidden=16", "--sampler", "grid",
                             "--param", "lr=choice:0.003,0.01", "--steps", 200, "--eval-every", 100,
                             "--study", "kill", "--storage", storage, "--out", tmp_path / "runs", "--heartbeat", 1]]
    victim = subprocess.Popen(TGS + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    running = None
    while running is None and time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.1)
        with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(tmp_path / "kill.db")) as db:
            row = db.execute("SELECT number FROM trials WHERE state = 'RUNNING'").fetchone()
            running = None if row is None else row[0]
        if running is not None and not os.path.exists(tmp_path / "runs" / f"trial-{running}" / "train.log"):
            running = None  # kill it once it trains
    assert running is not None, "the first worker never started a trial"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    time.sleep(2.5)  # past the grace period of two missed heartbeats

    again = run_tgs(*args)
    assert again.returncode == 0, again.stderr
    trials = trials_of("kill", storage)
    killed = next(t for t in trials if t.number == running)
    assert killed.state.name == "FAIL"
    retry = [t for t in trials if t.user_attrs.get("tgs:retry_of") == killed.number]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE" and retry[0].params == killed.params
    done = {t.params["lr"] for t in trials if t.state.name == "COMPLETE"}
    assert done == {0.003, 0.01} and not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    assert "1 failed" not in tgs("tune", "--report", "kill", "--storage", storage).output  # retried, not lost


# ---------------------------------------------------------------------------- pruning
def test_median_pruner_stops_a_bad_learning_rate_early(tmp_path, corpus):
    storage = "journal:" + str(tmp_path / "study.journal")  # the journal file works as storage too
    result = run_tgs("tune", "charlm", corpus, *TINY, "--set", "hidden=32", "--sampler", "grid",
                     "--param", "lr=choice:0.01,1e-7", "--pruner", "median", "--startup-trials", 1,
                     "--steps", 60, "--eval-every", 10, "--study", "prune", "--storage", storage,
                     "--out", tmp_path / "runs")
    assert result.returncode == 0, result.stderr
    trials = {t.params["lr"]: t for t in trials_of("prune", storage)}
    good, bad = trials[0.01], trials[1e-7]
    assert good.state.name == "COMPLETE" and good.user_attrs["tgs:steps"] == 60
    assert bad.state.name == "PRUNED" and bad.user_attrs["tgs:steps"] < 60
    assert f"trial {bad.number}: pruned at step" in result.stderr
    # its run directory stopped where it was pruned, with a checkpoint to resume from
    metrics = (tmp_path / "runs" / f"trial-{bad.number}" / "metrics.jsonl").read_text()
    assert max(int(m) for m in re.findall(r'"step": (\d+)', metrics)) < 60
    assert os.path.exists(tmp_path / "runs" / f"trial-{bad.number}" / "checkpoint.npz")
    resumed = tgs("train", "charlm", "--resume", "--out", tmp_path / "runs" / f"trial-{bad.number}")
    assert resumed.exit_code == 0 and "done: 60 steps" in resumed.stderr, resumed.output


def test_successive_halving_stops_a_bad_learning_rate_at_its_first_rung(tmp_path, corpus):
    """Rungs at evaluations 1, 4, 16 (steps 10, 40, 160): the good lr, run first, passes its rungs
    alone; the bad one meets it at step 10, is not the best of the two there, and stops."""
    storage = "sqlite:///" + str(tmp_path / "study.db")
    result = run_tgs("tune", "charlm", corpus, *TINY, "--set", "hidden=32", "--sampler", "grid",
                     "--param", "lr=choice:0.01,1e-7", "--pruner", "halving", "--steps", 60, "--eval-every", 10,
                     "--study", "halving", "--storage", storage, "--out", tmp_path / "runs")
    assert result.returncode == 0, result.stderr
    trials = {t.params["lr"]: t for t in trials_of("halving", storage)}
    good, bad = trials[0.01], trials[1e-7]
    assert good.state.name == "COMPLETE" and good.user_attrs["tgs:steps"] == 60
    assert {k for k in good.system_attrs if k.startswith("completed_rung_")} == {"completed_rung_0",
                                                                                 "completed_rung_1"}
    assert bad.state.name == "PRUNED" and bad.user_attrs["tgs:steps"] == 10 and max(bad.intermediate_values) == 10
    assert bad.intermediate_values[10] > good.intermediate_values[10]
    assert f"trial {bad.number}: pruned at step" in result.stderr
    study = tune.load("halving", storage)
    assert isinstance(study.pruner, optuna.pruners.SuccessiveHalvingPruner)


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("args, fragments", [
    (["--param", "colour=choice:1,2"], ["no option --colour", "searchable:"]),
    (["--param", "lr=log:1e-2"], ["--param 'lr=log:1e-2'", "LOW:HIGH"]),
    (["--param", "lr"], ["malformed"]),
    (["--param", "lr=cubic:1:2"], ["unknown kind 'cubic'"]),
    (["--param", "lr=log:-1:2"], ["must be positive"]),
    (["--param", "hidden=float:16:64"], ["takes integers"]),
    (["--param", "model=choice:lstm,cnn"], ["'cnn' is not a valid --model"]),
    (["--param", "lr=log:1e-4:1e-2", "--sampler", "grid"], ["needs a number of points"]),
    (["--param", "lr=log:1e-4:1e-2", "--storage", "sqlite:////no/such/folder/s.db"], ["cannot open --storage"]),
    (["--param", "lr=log:1e-4:1e-2", "--storage", "nosuchdb://host/x"], ["cannot open --storage"]),
    (["--param", "lr=log:1e-4:1e-2", "--set", "hidden"], ["--set 'hidden' is malformed"]),
    (["--param", "lr=log:1e-4:1e-2", "--set", "hidden=many"], ["--set hidden=many", "not a valid --hidden"]),
    ([], ["give at least one --param"]),
])
def test_bad_input_is_one_line(tmp_path, corpus, args, fragments):
    result = tgs("tune", "charlm", corpus, "--out", tmp_path / "t", *args)
    assert_one_line_error(result, *fragments)


def test_a_study_of_another_kind_is_refused(tmp_path, corpus):
    storage = "sqlite:///" + str(tmp_path / "s.db")
    spec = tune.StudySpec("charlm", tune.parse_space(["lr=log:1e-4:1e-2"]), str(corpus), out=str(tmp_path))
    tune.open_study("mine", tune.open_storage(storage), spec)
    result = tgs("tune", "wordlm", corpus, "--param", "lr=log:1e-4:1e-2", "--study", "mine", "--storage", storage)
    assert_one_line_error(result, "study 'mine' tunes charlm, not wordlm")
    result = tgs("tune", "charlm", corpus, "--param", "lr=log:1e-3:1e-2", "--study", "mine", "--storage", storage)
    assert_one_line_error(result, "study 'mine' searches lr=log:0.0001:0.01")
    assert_one_line_error(tgs("tune", "--report", "other", "--storage", storage), "no study 'other'")
    assert_one_line_error(tgs("tune", "ngram", "--param", "n=int:2:5"), "cannot search 'ngram'")


def test_classifiers_are_tuned_on_dev_accuracy_maximised(tmp_path):
    result = tgs("tune", "mlp", "--param", "lr=log:1e-3:1e-2", "--param", "hidden=choice:16,32", "--steps", 2,
                 "--trials", 3, "--sampler", "random", "--seed", 1, "--study", "mlp", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    study = tune.load("mlp", tune.default_storage(tmp_path))
    done = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    assert len(done) == 3 and all(0 < t.value <= 1 and t.user_attrs["tgs:steps"] == 2 for t in done)
    best = max(done, key=lambda t: t.value)
    assert f"best: trial {best.number}, dev_accuracy {best.value:.4f}" in result.stdout
    assert "tgs train mlp --epochs 2 --lr " in result.stdout


@pytest.mark.parametrize("kind, args", [
    ("seq2seq", ["--set", "train-size=200", "--set", "test-size=20", "--set", "hidden=8", "--set", "embed=8"]),
    ("tagger", ["--set", "train-verses=40", "--set", "test-verses=10", "--set", "embed=8", "--set", "layers=1"]),
])
def test_seq2seq_and_tagger_report_their_validation_loss_at_every_evaluation(tmp_path, kind, args):
    result = tgs("tune", kind, *args, "--param", "lr=choice:0.003,0.01", "--sampler", "grid", "--steps", 4,
                 "--eval-every", 2, "--pruner", "none", "--study", kind, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    study = tune.load(kind, tune.default_storage(tmp_path))
    assert study.direction.name == "MINIMIZE"
    done = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    assert len(done) == 2
    for t in done:
        # reported to the pruner at each evaluation, the objective is the last one, as the run logged it
        assert sorted(t.intermediate_values) == [2, 4]
        logged = [json.loads(line) for line in open(os.path.join(t.user_attrs["tgs:out"], "metrics.jsonl"))]
        val_losses = [r["val_loss"] for r in logged if "val_loss" in r]
        assert t.value == pytest.approx(val_losses[-1]) and t.value == t.intermediate_values[4] > 0
    assert f"best: trial {min(done, key=lambda t: t.value).number}, val_loss " in result.stdout


class RecordingRunner:
    """A trial runner that trains nothing: it records which trial directories it ran and reports
    a validation loss made from the learning rate."""

    def __init__(self):
        self.ran = []

    def command(self, kind):
        import click

        @click.command()
        @click.option("--lr", type=float, default=0.001)
        @click.option("--out")
        def train(lr, out):
            """A stand-in for `tgs train charlm`."""

        return train

    def run(self, kind, corpus, settings, out_dir, reporter):
        self.ran.append(os.path.basename(out_dir))
        reporter.on_evaluate(None, 1, {"val_loss": abs(math.log10(settings["lr"]) + 2.5)})


RECORDING_RUNNER = RecordingRunner()


def test_two_workers_on_one_machine_never_take_the_same_queued_trial(tmp_path, monkeypatch):
    # Optuna takes a queued trial by reading WAITING, then writing RUNNING; SQLite cannot lock
    # that read, so here the read and the write are pulled apart on purpose: without the
    # trial-start lock both workers would read the same waiting trial and run it twice.
    import threading

    from optuna.study import Study
    from optuna.trial import TrialState

    def unlocked_pop(study):
        waiting = study._storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.WAITING,))
        time.sleep(0.2)  # the other worker reads now
        if not waiting:
            return None
        study._storage.set_trial_state_values(waiting[0]._trial_id, state=TrialState.RUNNING)
        return waiting[0]._trial_id

    monkeypatch.setattr(Study, "_pop_waiting_trial_id", unlocked_pop)
    monkeypatch.setattr(RECORDING_RUNNER, "ran", [])
    storage_url = "sqlite:///" + str(tmp_path / "race.db")
    spec = tune.StudySpec("charlm", tune.parse_space(["lr=choice:0.001,0.002,0.004,0.008"]), sampler="grid",
                          trials=4, out=str(tmp_path / "runs"), runner="test_tune:RECORDING_RUNNER")
    tune.open_study("race", tune.open_storage(storage_url), spec)
    workers = [threading.Thread(target=tune.work, args=(tune.load("race", storage_url),),
                                kwargs={"echo": lambda line: None}) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    ran = RECORDING_RUNNER.ran
    assert len(ran) == len(set(ran)) == 4, ran
    done = [t for t in trials_of("race", storage_url) if t.state.name == "COMPLETE"]
    assert sorted(t.params["lr"] for t in done) == [0.001, 0.002, 0.004, 0.008]


def test_the_library_does_not_import_the_cli():
    # the trial runner (which knows the `tgs train` commands) is handed in; the engine names no CLI module
    code = ("import sys, tinygrad_seq.tune; "
            "print(sorted(m for m in sys.modules if m.startswith('tinygrad_seq.cli')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr
    with pytest.raises(tune.TuneError, match="cannot load the trial runner"):
        tune.resolve_runner("no_such_module_here:RUNNER")


def test_workers_split_the_cores_between_them():
    env = tune.thread_env(2, cores=16)
    assert all(env[v] == "8" for v in ("TGS_CYTHON_THREADS", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS"))
    assert tune.thread_env(4, cores=2)["TGS_CYTHON_THREADS"] == "1"  # never zero threads
