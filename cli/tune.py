"""`tgs tune`: hyper-parameter search over any `tgs train` kind, on Optuna (the library is
tinygrad_seq.tune).  Every bad input ends in one "Error: ..." line and a non-zero exit.

TRAIN_TRIALS is the library's trial runner: a trial is the `tgs train KIND` command invoked in
this process, with the tuner's callback handed to the run's Trainer through the click context
(runs.CALLBACKS)."""
import contextlib
import importlib
import os

import click

from .kinds import fail, fail_unless_positive


class TrainCommandTrials:
    """Runs tinygrad_seq.tune's trials as `tgs train KIND` commands (see that module's doc)."""

    ref = "tinygrad_seq.cli.tune:TRAIN_TRIALS"

    def command(self, kind):
        from .main import TRAIN_COMMANDS

        module, attr = TRAIN_COMMANDS[kind].split(":")
        return getattr(importlib.import_module(f"{__package__}.{module}"), attr)

    def run(self, kind, corpus, settings, out_dir, callback):
        """`tgs train KIND` with `settings` in out_dir, its output in out_dir/train.log and
        `callback` among its Trainer's callbacks."""
        from tinygrad_seq.tune import TrialFailed, format_command, train_argv

        from .runs import CALLBACKS

        command = self.command(kind)
        settings = dict(settings, out=out_dir)
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "train.log"), "a") as log, \
                contextlib.redirect_stderr(log), contextlib.redirect_stdout(log):
            print("$ " + format_command(self, kind, corpus, settings), flush=True)
            try:
                with command.make_context(f"tgs train {kind}", train_argv(self, kind, corpus, settings)) as ctx:
                    ctx.meta[CALLBACKS] = [callback]
                    command.invoke(ctx)
            except click.exceptions.Exit as exc:
                if exc.exit_code in (130, 143):  # Ctrl-C or SIGTERM: the run saved its checkpoint
                    raise KeyboardInterrupt from None
                if exc.exit_code:
                    log.flush()
                    raise TrialFailed(_last_error(log.name) or f"training stopped with exit status "
                                      f"{exc.exit_code}; see {log.name}") from None
            except click.ClickException as exc:
                print("Error: " + exc.format_message())
                raise TrialFailed(exc.format_message()) from None


def _last_error(log_path):
    """The last 'Error: ...' line the training command wrote (a divergence, say), without 'Error: '."""
    with open(log_path) as f:
        errors = [line.strip() for line in f if line.startswith("Error: ")]
    return errors[-1][len("Error: "):] if errors else None


TRAIN_TRIALS = TrainCommandTrials()


def _settings(pairs):
    """--set NAME=VALUE pairs -> {name: value} (values stay text: the training command parses them)."""
    fixed = {}
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not eq or not name.strip():
            fail(f"--set {pair!r} is malformed; give NAME=VALUE, e.g. --set hidden=64")
        fixed[name.strip().replace("-", "_").lstrip("_")] = value.strip()
    return fixed


@click.command()
@click.argument("kind", required=False)
@click.argument("corpus", required=False, type=click.Path())
@click.option("--param", "params", multiple=True, metavar="NAME=KIND:SPEC",
              help="A searched option: lr=log:1e-4:1e-2, dropout=float:0:0.5, layers=int:1:3, "
                   "hidden=choice:128,256,512 (log/float take :POINTS for the grid sampler). Repeat.")
@click.option("--set", "fixed", multiple=True, metavar="NAME=VALUE",
              help="A fixed `tgs train` option for every trial, e.g. --set model=gru. Repeat.")
@click.option("--trials", type=int, default=20, show_default=True,
              help="Trials in the study in all (the grid sampler runs the whole grid).")
@click.option("--steps", type=int, default=None, help="Training steps of each trial (epochs for cnn/mlp).")
@click.option("--eval-every", type=int, default=None,
              help="Steps between validations, which the pruner sees.")
@click.option("--sampler", type=click.Choice(["tpe", "random", "grid"]), default="tpe", show_default=True)
@click.option("--pruner", type=click.Choice(["median", "halving", "none"]), default="median", show_default=True)
@click.option("--startup-trials", type=int, default=5, show_default=True,
              help="Trials finished before TPE models the space and the median pruner prunes.")
@click.option("--study", default=None, help="Study name (default: KIND).")
@click.option("--storage", default=None,
              help="sqlite:///FILE, any SQLAlchemy URL, or journal:FILE (default: study.db in --out).")
@click.option("--out", type=click.Path(), default=None, help="Folder of the trial runs (default runs/tune-STUDY).")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Trial processes on this machine (they split its cores).")
@click.option("--refine", is_flag=True, help="Then a finer random search around the best trials (study STUDY-refine).")
@click.option("--refine-trials", type=int, default=None, help="Trials of the --refine study (default: --trials).")
@click.option("--seed", type=int, default=None, help="Seed of the sampler (default: fresh randomness).")
@click.option("--heartbeat", type=int, default=30, show_default=True,
              help="Seconds between a running trial's heartbeats; a trial silent for twice that is failed and retried.")
@click.option("--report", "report_name", default=None, metavar="STUDY",
              help="Print the report of STUDY (table, best `tgs train` command) and write its plots; no training.")
def tune(kind, corpus, params, fixed, trials, steps, eval_every, sampler, pruner, startup_trials, study, storage,
         out, workers, refine, refine_trials, seed, heartbeat, report_name):
    """Search hyper-parameters of `tgs train KIND` (charlm, wordlm, cnn, mlp, seq2seq, tagger).

    \b
    tgs tune charlm corpus.txt --trials 40 --steps 500 --param lr=log:1e-4:1e-2 \\
        --param hidden=choice:128,256,512 --param dropout=float:0:0.5 --workers 2
    tgs tune --report charlm                  # table, best command, plots
    tgs tune charlm --study s --storage postgresql://host/db ...   # same on every machine
    """
    from tinygrad_seq import tune as library

    try:
        if report_name is not None:
            _report(library, report_name, storage, out)
            return
        if kind is None:
            fail("give the KIND to tune (charlm, wordlm, cnn, mlp, seq2seq, tagger), or --report STUDY")
        fail_unless_positive(trials=trials, workers=workers, heartbeat=heartbeat, startup_trials=startup_trials,
                             steps=steps, eval_every=eval_every, refine_trials=refine_trials)
        if not params:
            fail("give at least one --param to search, e.g. --param lr=log:1e-4:1e-2")
        if corpus is not None and not os.path.isfile(corpus):
            fail(f"corpus {corpus} is not a file")
        echo = lambda line: click.echo(line, err=True)  # noqa: E731
        result = library.search(kind, list(params), corpus, runner=TRAIN_TRIALS, trials=trials, sampler=sampler,
                                pruner=pruner, steps=steps, eval_every=eval_every, fixed=_settings(fixed), study=study,
                                storage=storage, out=out, workers=workers, refine=refine,
                                refine_trials=refine_trials, startup_trials=startup_trials, seed=seed,
                                heartbeat=heartbeat, echo=echo)
        for found in (result.study, result.refined):
            if found is not None:
                _print_report(library, found)
    except library.TuneError as exc:
        fail(exc)


def _report(library, name, storage, out):
    storage = storage or library.default_storage(out or os.path.join("runs", f"tune-{name}"))
    if storage.startswith("sqlite:///") and not os.path.exists(storage[len("sqlite:///"):]):
        fail(f"no study database at {storage[len('sqlite:///'):]}; give --storage (or --out) of the study {name!r}")
    study = library.load(name, storage)
    _print_report(library, study, out)
    child = study.user_attrs.get(library.ATTR + "refined_by")
    if child:
        _print_report(library, library.load(child, storage), out and os.path.join(out, "refine"))


def _print_report(library, study, folder=None):
    click.echo(library.report(study))
    pictures = library.plot_study(study, folder)
    if pictures:
        click.echo("plots: " + ", ".join(pictures))
