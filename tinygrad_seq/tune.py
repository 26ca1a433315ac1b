"""Hyper-parameter search for the `tgs train` kinds, on Optuna (`pip install ".[tune]"`).

    from tinygrad_seq import tune
    from tinygrad_seq.cli.tune import TRAIN_TRIALS   # trials run as `tgs train KIND` commands
    space = tune.parse_space(["lr=log:1e-4:1e-2", "hidden=choice:128,256,512", "dropout=float:0:0.5"])
    result = tune.search("charlm", space, "corpus.txt", runner=TRAIN_TRIALS, trials=24, steps=500,
                         workers=2, refine=True)
    print(tune.report_table(result.study))
    print(tune.best_command(result.study))

The course notes' recipe: search on the right scale (a learning rate on a log scale), coarse
first, then finer around the best region (`refine`: a second random search inside the range
of the best trials, recorded as its own study linked to the first), and stop hopeless runs
early (the median or successive-halving pruner, fed the validation metric at every evaluation).

A trial is an ordinary `tgs train KIND` run in `--out/trial-K`: its settings are turned into that
command's arguments and trained by the shared loop (tinygrad_seq.trainer.Trainer), to which the
trial adds one callback, `OptunaReporter`: after every evaluation it reports the validation
metric to Optuna and asks the loop to stop (status "pruned") when the pruner says so.  So every
trial can be resumed or sampled with the usual commands, and the best one's `tgs train` command
reproduces it.

The engine never imports the CLI, so the commands come from a *runner* given to `search`
(`runner=`; the CLI's is tinygrad_seq.cli.tune.TRAIN_TRIALS).  A runner has

    ref                       "module:attribute" naming the runner itself, stored in the study
                              so that worker processes and joining workers find it again
    command(kind)             the click command of `tgs train KIND` (its options are the space)
    run(kind, corpus, settings, out_dir, callback)
                              train one configuration in out_dir with `callback` among the
                              Trainer's callbacks; raises TrialFailed (one line) on an error and
                              KeyboardInterrupt when the run was interrupted

The study lives in a database: SQLite in the run directory by default, any SQLAlchemy URL, or
an Optuna journal file (`journal:PATH`).  Workers (processes here, or `tgs tune` started on
other machines with the same --study and --storage) share it.  A running trial stamps the time
into its attributes every `heartbeat` seconds (any storage can hold that, and a trial killed
before its first stamp still has its start time); before each trial a worker fails the running
trials silent for more than two heartbeats and queues each once more with the same parameters,
so restarting the command continues the study.  (Machines sharing a study need synchronised
clocks, as NTP gives.)  The kind, the space and the fixed settings are stored in the study, so
a worker joining it needs only its name and storage.
"""
import contextlib
import math
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field

# kind -> (metric reported at each evaluation, direction, the trial's value: the last or best report)
OBJECTIVES = {
    "charlm": ("val_loss", "minimize", "last"),
    "wordlm": ("val_loss", "minimize", "last"),
    "cnn": ("dev_accuracy", "maximize", "best"),
    "mlp": ("dev_accuracy", "maximize", "best"),
    "seq2seq": ("val_loss", "minimize", "last"),
    "tagger": ("val_loss", "minimize", "last"),
}
# options a trial sets itself (or that make no sense to search)
RESERVED = {"out", "resume", "overwrite", "val_file", "corpus"}
PARAM_KINDS = ("log", "float", "int", "choice")
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "halving", "none")
GRID_LIMIT = 10_000
ATTR = "tgs:"  # prefix of the study's user attributes written here


class TuneError(ValueError):
    """Bad input to the tuner; the message is one actionable line."""


# ---------------------------------------------------------------------------- the search space
@dataclass(frozen=True)
class Param:
    """One searched option: `name=log:LOW:HIGH[:N]`, `float:LOW:HIGH[:N]`, `int:LOW:HIGH`,
    `choice:A,B,C`.  N is the number of grid points (only the grid sampler reads it)."""

    name: str
    kind: str
    low: float = None
    high: float = None
    choices: tuple = ()
    points: int = None

    @classmethod
    def parse(cls, text):
        usage = ("give NAME=KIND:SPEC, e.g. lr=log:1e-4:1e-2, dropout=float:0:0.5, layers=int:1:3, "
                 "hidden=choice:128,256,512")
        name, eq, rest = str(text).partition("=")
        kind, colon, spec = rest.partition(":")
        name = name.strip().replace("-", "_").lstrip("_")
        if not eq or not colon or not name or not spec.strip():
            raise TuneError(f"--param {text!r} is malformed; {usage}")
        if kind not in PARAM_KINDS:
            raise TuneError(f"--param {text!r}: unknown kind {kind!r} (choose {', '.join(PARAM_KINDS)}); {usage}")
        if kind == "choice":
            choices = tuple(_scalar(part.strip()) for part in spec.split(",") if part.strip())
            if not choices or len(set(choices)) != len(choices):
                raise TuneError(f"--param {text!r}: give distinct comma-separated values after choice:")
            return cls(name, kind, choices=choices)
        parts = spec.split(":")
        if len(parts) not in (2, 3) or (kind == "int" and len(parts) != 2):
            raise TuneError(f"--param {text!r}: {kind} takes LOW:HIGH{'' if kind == 'int' else '[:POINTS]'}; {usage}")
        try:
            low, high = (int(p) if kind == "int" else float(p) for p in parts[:2])
            points = int(parts[2]) if len(parts) == 3 else None
        except ValueError:
            raise TuneError(f"--param {text!r}: LOW and HIGH must be {'integers' if kind == 'int' else 'numbers'}"
                            f"{' and POINTS an integer' if len(parts) == 3 else ''}") from None
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise TuneError(f"--param {text!r}: LOW must be below HIGH")
        if kind == "log" and low <= 0:
            raise TuneError(f"--param {text!r}: a log range must be positive")
        if points is not None and points < 2:
            raise TuneError(f"--param {text!r}: give at least 2 grid points")
        return cls(name, kind, low, high, points=points)

    def spec(self):
        """The text this was parsed from (normalised), e.g. 'lr=log:0.0001:0.01'."""
        if self.kind == "choice":
            return f"{self.name}=choice:" + ",".join(str(c) for c in self.choices)
        tail = f":{self.points}" if self.points else ""
        return f"{self.name}={self.kind}:{self.low!r}:{self.high!r}{tail}"

    def suggest(self, trial, integer=False):
        """Draw this parameter for an Optuna trial, on its declared scale."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int" or integer:
            return trial.suggest_int(self.name, int(math.ceil(self.low)), int(math.floor(self.high)),
                                     log=self.kind == "log")
        return trial.suggest_float(self.name, self.low, self.high, log=self.kind == "log")

    def grid(self, integer=False):
        """The values a grid search tries."""
        import numpy as np

        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1))
        if not self.points:
            raise TuneError(f"the grid sampler needs a number of points for {self.name}: "
                            f"{self.name}={self.kind}:{self.low:g}:{self.high:g}:5, say (or use choice:)")
        values = (np.geomspace if self.kind == "log" else np.linspace)(self.low, self.high, self.points)
        if integer:
            return sorted({int(round(v)) for v in values})
        return [float(v) for v in values]


def _scalar(text):
    """'128' -> 128, '1e-3' -> 0.001, 'true' -> True, anything else stays a string."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def parse_space(texts):
    """[Param] from `--param` strings; a name may appear once."""
    space = [Param.parse(t) if not isinstance(t, Param) else t for t in texts]
    seen = set()
    for p in space:
        if p.name in seen:
            raise TuneError(f"--param {p.name} is given twice")
        seen.add(p.name)
    return space


# ---------------------------------------------------------------------------- the training commands
def resolve_runner(runner):
    """A runner object from itself or its "module:attribute" reference (see the module doc)."""
    import importlib

    if not isinstance(runner, str):
        return runner
    module, colon, attr = runner.partition(":")
    if not colon:
        raise TuneError(f"the trial runner {runner!r} is not a module:attribute reference")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise TuneError(f"cannot load the trial runner {runner!r}: {exc}") from None


def train_command(runner, kind):
    """The click command of `tgs train KIND`, from the runner (TuneError for a kind not tuned)."""
    if kind not in OBJECTIVES:
        supported = ", ".join(OBJECTIVES)
        raise TuneError(f"tgs tune cannot search {kind!r}; it tunes {supported}")
    return resolve_runner(runner).command(kind)


def tunable_options(runner, kind):
    """{name: click parameter} that a search may set for `kind`."""
    return {p.name: p for p in train_command(runner, kind).params if p.name not in RESERVED}


def _is_integer_option(option):
    import click

    return isinstance(option.type, click.types.IntParamType)


def _is_numeric_option(option):
    import click

    return isinstance(option.type, (click.types.IntParamType, click.types.FloatParamType))


def check_space(runner, kind, space, fixed):
    """TuneError for a parameter `tgs train KIND` does not have, or a range its option cannot take."""
    options = tunable_options(runner, kind)
    known = ", ".join(sorted(options))
    for name in list(fixed) + [p.name for p in space]:
        if name not in options:
            raise TuneError(f"tgs train {kind} has no option --{name.replace('_', '-')}; searchable: {known}")
    for p in space:
        option = options[p.name]
        if p.name in fixed:
            raise TuneError(f"{p.name} is both searched (--param) and fixed; give it once")
        if p.kind != "choice" and not _is_numeric_option(option):
            raise TuneError(f"--{p.name.replace('_', '-')} takes {option.type.name} values; "
                            f"search it with {p.name}=choice:A,B")
        if p.kind == "float" and _is_integer_option(option):
            raise TuneError(f"--{p.name.replace('_', '-')} takes integers; use {p.name}=int:LOW:HIGH or log:LOW:HIGH")
        if p.kind == "choice" and not getattr(option, "is_flag", False):
            for value in p.choices:
                _check_value(option, value, f"--param {p.spec()}")
    for name, value in fixed.items():
        if not getattr(options[name], "is_flag", False):
            _check_value(options[name], value, f"--set {name.replace('_', '-')}={value}")


def _check_value(option, value, where):
    try:
        option.type.convert(str(value), option, None)
    except Exception:
        raise TuneError(f"{where}: {value!r} is not a valid --{option.name.replace('_', '-')}") from None


def train_argv(runner, kind, corpus, settings):
    """The `tgs train KIND` arguments for these settings ({option name: value})."""
    options = tunable_options(runner, kind) | {p.name: p for p in train_command(runner, kind).params
                                               if p.name == "out"}
    argv = [] if corpus is None else [str(corpus)]
    for name, value in settings.items():
        option = options[name]
        if getattr(option, "is_flag", False):
            on = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
            if on:
                argv.append(option.opts[0])
            elif option.secondary_opts:
                argv.append(option.secondary_opts[0])
            continue
        argv += [option.opts[0], repr(value) if isinstance(value, float) else str(value)]
    return argv


def format_command(runner, kind, corpus, settings):
    return " ".join(["tgs", "train", kind] + [shlex.quote(a) for a in train_argv(runner, kind, corpus, settings)])


class TrialFailed(Exception):
    """A trial's training stopped with an error (its one-line message); raised by a runner."""


class OptunaReporter:
    """The Trainer callback of one trial (tinygrad_seq.trainer's `callbacks`): after every
    evaluation it records the metrics, reports the objective's metric to the Optuna trial and,
    when the study's pruner says so, raises PruneRun, which ends the run with status "pruned"
    (keeping that evaluation's checkpoint, so the trial can be resumed to its full length)."""

    def __init__(self, trial, metric):
        self.trial, self.metric = trial, metric
        self.reports = []        # (step, metrics) at each evaluation
        self.pruned_at = None    # the step the pruner stopped the run at

    def on_evaluate(self, trainer, step, metrics):
        from tinygrad_seq.trainer import PruneRun

        # classifiers count their length in epochs (their --steps is --epochs), the others in steps
        step = int(metrics.get("epoch", step))
        self.reports.append((step, dict(metrics)))
        value = metrics.get(self.metric)
        if value is None or not math.isfinite(value):
            return False
        self.trial.report(float(value), step)
        self.trial.set_user_attr(ATTR + "steps", step)
        if self.trial.should_prune():
            self.pruned_at = step
            raise PruneRun(f"the study's pruner stopped trial {self.trial.number} ({self.metric} {value:.4f})")
        return False


def trial_value(kind, reports):
    """The objective of a finished run from its (step, metrics) reports: the last (LMs, seq2seq,
    tagger) or best (classifiers, whose checkpoint keeps the best epoch) reported metric."""
    metric, direction, which = OBJECTIVES[kind]
    values = [m[metric] for _, m in reports if metric in m]
    if not values:
        raise TrialFailed("the run reported no validation metric")
    if which == "last":
        return values[-1]
    return max(values) if direction == "maximize" else min(values)


# ---------------------------------------------------------------------------- storage and studies
def default_storage(out):
    return "sqlite:///" + os.path.abspath(os.path.join(out, "study.db"))


def open_storage(url):
    """An Optuna storage for `url`: `journal:PATH` (or a path ending .log/.journal) is a journal
    file, anything else an SQLAlchemy URL.  TuneError (one line) when it cannot be opened."""
    import optuna

    try:
        if url.startswith("journal:") or url.endswith((".log", ".journal")):
            try:
                from optuna.storages.journal import JournalFileBackend, JournalStorage
            except ImportError:  # optuna 3.x
                from optuna.storages import JournalFileStorage as JournalFileBackend, JournalStorage

            path = url[len("journal:"):] if url.startswith("journal:") else url
            if os.path.dirname(path) and not os.path.isdir(os.path.dirname(path)):
                raise TuneError(f"the folder of journal file {path} does not exist")
            return JournalStorage(JournalFileBackend(path))
        engine = {}
        if url.startswith("sqlite"):
            engine = {"connect_args": {"timeout": 120}}  # wait for the other workers' writes
        elif url.startswith(("postgresql", "mysql")):
            engine = {"connect_args": {"connect_timeout": 20}}  # an unreachable host fails, not hangs
        if url.startswith("sqlite:///"):
            folder = os.path.dirname(url[len("sqlite:///"):])
            if folder and not os.path.isdir(folder):
                raise TuneError(f"cannot open --storage {url}: the folder {folder} does not exist")
        _quiet_optuna()
        lock = url[len("sqlite:///"):] + ".lock" if url.startswith("sqlite:///") else None
        for attempt in range(5):
            try:
                with _file_lock(lock):  # workers starting together must not create the tables twice
                    return optuna.storages.RDBStorage(url, engine_kwargs=engine)
            except Exception as exc:
                # on a server database the same race shows up as a duplicate table or version row
                racing = ("already exists", "UNIQUE constraint", "duplicate", "locked")
                if attempt == 4 or not any(word in str(exc) for word in racing):
                    raise
                time.sleep(0.5 * (attempt + 1))
    except TuneError:
        raise
    except Exception as exc:  # a driver that is not installed, a refused connection, a bad URL
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TuneError(f"cannot open --storage {url}: {message}") from None


@contextlib.contextmanager
def _file_lock(path):
    """An exclusive lock on `path` (a no-op for None, or where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        fcntl = None
    if path is None or fcntl is None:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _quiet_optuna():
    import warnings

    import optuna

    # optuna logs a caught trial failure with its traceback; the worker prints one line instead
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")


@dataclass
class StudySpec:
    """What a study searches, stored in its user attributes so that any worker can join it."""

    kind: str
    space: list
    corpus: str = None
    fixed: dict = field(default_factory=dict)
    sampler: str = "tpe"
    pruner: str = "median"
    trials: int = 20
    startup_trials: int = 5
    out: str = None
    parent: str = None
    heartbeat: int = 30
    runner: str = None           # the trial runner's "module:attribute" (see the module doc)

    def attrs(self):
        return {"kind": self.kind, "space": [p.spec() for p in self.space], "corpus": self.corpus,
                "fixed": self.fixed, "sampler": self.sampler, "pruner": self.pruner, "trials": self.trials,
                "startup_trials": self.startup_trials, "out": self.out, "parent": self.parent,
                "heartbeat": self.heartbeat, "runner": self.runner}

    @classmethod
    def from_study(cls, study):
        a = {k[len(ATTR):]: v for k, v in study.user_attrs.items() if k.startswith(ATTR)}
        return cls(a["kind"], parse_space(a["space"]), a["corpus"], a["fixed"], a["sampler"], a["pruner"],
                   a["trials"], a["startup_trials"], a["out"], a.get("parent"), a.get("heartbeat", 30),
                   a.get("runner"))


def make_sampler(name, seed=None, startup_trials=5):
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials)
    # grid points are queued in the study itself (see open_study), so a random sampler only ever
    # fills in for them when the queue is empty, which the worker loop never lets happen
    return optuna.samplers.RandomSampler(seed=seed)


def _first_report(fixed):
    """The step of a trial's first evaluation when the study fixes --eval-every, else 1."""
    try:
        return max(1, int(fixed.get("eval_every", 1)))
    except (TypeError, ValueError):
        return 1


def make_pruner(name, startup_trials=5, first_report=1):
    """The study's pruner.  "halving" is successive halving with reduction factor 4 whose rungs
    are the evaluations 1, 4, 16, ... (`first_report` is the step of a trial's first
    evaluation): at each rung a trial goes on only if its metric is in the best quarter of the
    trials that reached that rung (the best one, while fewer than 4 have).  Its rungs start at
    the first evaluation rather than at Optuna's "auto" (1% of the first finished trial's
    steps), which would leave that first trial out of every comparison."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=0)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, int(first_report)), reduction_factor=4,
                                                      min_early_stopping_rate=0)
    return optuna.pruners.NopPruner()


def open_study(name, storage, spec=None, seed=None, wait=30.0):
    """Create study `name` from `spec` (queueing a grid's points), or load it; TuneError when
    an existing study searches another kind or space.  spec=None: join an existing study."""
    import optuna

    _quiet_optuna()
    created = False
    if spec is not None:
        direction = OBJECTIVES[spec.kind][1]
        try:
            study = optuna.create_study(study_name=name, storage=storage, direction=direction)
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            pass
    if created:
        if spec.sampler == "grid":
            import itertools

            options = tunable_options(spec.runner, spec.kind)
            axes = [p.grid(_is_integer_option(options[p.name])) for p in spec.space]
            total = math.prod(len(a) for a in axes)
            if total > GRID_LIMIT:
                raise TuneError(f"the grid has {total:,} points, more than {GRID_LIMIT:,}; use --sampler random")
            for values in itertools.product(*axes):
                study.enqueue_trial({p.name: v for p, v in zip(spec.space, values)}, user_attrs={ATTR + "grid": True})
            spec.trials = total
        for key, value in spec.attrs().items():
            study.set_user_attr(ATTR + key, value)
        study.set_user_attr(ATTR + "ready", True)  # last: joiners wait for it
    else:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            raise TuneError(f"there is no study {name!r} in this storage; start it with tgs tune KIND ... "
                            f"--study {name}") from None
        deadline = time.monotonic() + wait
        while not study.user_attrs.get(ATTR + "ready"):
            if ATTR + "kind" not in study.user_attrs and time.monotonic() > deadline:
                raise TuneError(f"study {name!r} was not made by tgs tune; choose another --study")
            time.sleep(0.2)
            study = optuna.load_study(study_name=name, storage=storage)
        stored = StudySpec.from_study(study)
        if spec is not None:
            if stored.kind != spec.kind:
                raise TuneError(f"study {name!r} tunes {stored.kind}, not {spec.kind}; choose another --study")
            if [p.spec() for p in stored.space] != [p.spec() for p in spec.space] or stored.fixed != spec.fixed:
                raise TuneError(f"study {name!r} searches {' '.join(p.spec() for p in stored.space)} with "
                                f"{stored.fixed or 'no fixed settings'}; give the same, or choose another --study")
            if spec.trials > stored.trials and stored.sampler != "grid":  # asking for more extends the study
                study.set_user_attr(ATTR + "trials", spec.trials)
    stored = StudySpec.from_study(study)
    study.sampler = make_sampler(stored.sampler, seed, stored.startup_trials)
    # trials report at multiples of --eval-every (of epochs for the classifiers, which have none)
    study.pruner = make_pruner(stored.pruner, stored.startup_trials, _first_report(stored.fixed))
    return study


def counts(study):
    """{state name: number of trials}, retried failures and grid spares left out."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get(ATTR + "retry_of") for t in trials}
    result = {s.name: 0 for s in TrialState}
    for t in trials:
        if t.number in retried or t.user_attrs.get(ATTR + "spare"):
            continue
        result[t.state.name] += 1
    return result


# ---------------------------------------------------------------------------- a worker
class Heartbeat:
    """Stamps the time into `trial`'s attributes now and every `interval` seconds until closed."""

    def __init__(self, trial, interval):
        import threading

        self.trial, self.interval = trial, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="tgs-tune-heartbeat", daemon=True)

    def _beat(self):
        while not self.stop.wait(self.interval):
            with contextlib.suppress(Exception):  # a storage hiccup must not kill the trial
                self.trial.set_user_attr(ATTR + "alive", time.time())

    def __enter__(self):
        self.trial.set_user_attr(ATTR + "alive", time.time())
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def fail_stale_trials(study, heartbeat):
    """Fail the running trials silent for more than two heartbeats (their worker was killed) and
    queue each once more with its parameters.  Returns the numbers failed here."""
    from optuna.trial import TrialState

    now, failed = time.time(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        last = t.user_attrs.get(ATTR + "alive") or t.datetime_start.timestamp()
        if now - last <= 2 * heartbeat:
            continue
        try:
            study.tell(t.number, state=TrialState.FAIL)
        except Exception:  # another worker failed it first, or it just finished
            continue
        failed.append(t.number)
        if t.user_attrs.get(ATTR + "retry_of") is None:  # a retry that dies too is not retried again
            attrs = {k: v for k, v in t.user_attrs.items() if k in (ATTR + "grid",)}
            # a trial killed before it drew its parameters still holds the ones queued for it
            params = t.params or t.system_attrs.get("fixed_params", {})
            study.enqueue_trial(params, user_attrs=dict(attrs, **{ATTR + "retry_of": t.number}))
    return failed


class _GridDone(Exception):
    """The grid's queue was emptied by another worker between the check and this trial."""


class _TrialStartLock:
    """Workers of one study on one machine start their trials one at a time.

    Optuna hands a queued (grid or retried) trial to a worker by reading that it is WAITING and
    then marking it RUNNING; on SQLite that read holds no lock (no SELECT ... FOR UPDATE), so two
    workers could both take the same trial and then collide in its run directory.  An exclusive
    lock file in the study's --out is held from before the trial is taken until its objective
    starts, which serializes only that moment."""

    def __init__(self, folder):
        os.makedirs(folder, exist_ok=True)
        self.path = os.path.join(folder, ".trial-start.lock")
        self.fd = None

    def acquire(self):
        import fcntl

        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self):
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


def _trials_left(study, spec):
    """Whether `study` still wants a trial: a grid while its queue holds a point, any other
    sampler until its trials (running ones included) reach spec.trials."""
    from optuna.trial import TrialState

    fail_stale_trials(study, spec.heartbeat)  # a killed worker's trial must not count as running
    if spec.sampler == "grid":
        return any(t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False))
    c = counts(study)
    return c["COMPLETE"] + c["PRUNED"] + c["FAIL"] + c["RUNNING"] < spec.trials


def work(study, echo=print):
    """Run trials of `study` until it holds its number of trials (grid: until its queue is empty).
    Returns the number of trials this worker ran."""
    import optuna

    spec = StudySpec.from_study(study)
    metric, direction, _ = OBJECTIVES[spec.kind]
    runner = resolve_runner(spec.runner)
    options = tunable_options(runner, spec.kind)
    ran = 0

    mine = []  # the number of the trial this worker runs now
    start_lock = _TrialStartLock(spec.out)

    def objective(trial):
        start_lock.release()  # this trial is ours now: the next worker may take one
        mine.append(trial.number)
        if spec.sampler == "grid" and not trial.user_attrs.get(ATTR + "grid"):
            trial.set_user_attr(ATTR + "spare", True)
            raise _GridDone()
        params = {p.name: p.suggest(trial, _is_integer_option(options[p.name])) for p in spec.space}
        settings = dict(spec.fixed, **params)
        out_dir = os.path.join(spec.out, f"trial-{trial.number}")
        trial.set_user_attr(ATTR + "out", out_dir)
        trial.set_user_attr(ATTR + "command", format_command(runner, spec.kind, spec.corpus, settings))
        reporter = OptunaReporter(trial, metric)
        try:
            with Heartbeat(trial, spec.heartbeat):
                runner.run(spec.kind, spec.corpus, settings, out_dir, reporter)
        except TrialFailed as exc:
            trial.set_user_attr(ATTR + "error", str(exc))
            raise
        except KeyboardInterrupt:  # queued again, so that running the command again finishes the study
            trial.set_user_attr(ATTR + "error", "interrupted")
            keep = {k: v for k, v in trial.user_attrs.items() if k == ATTR + "grid"}
            study.enqueue_trial(params, user_attrs=dict(keep, **{ATTR + "retry_of": trial.number}))
            raise
        if reporter.reports:
            trial.set_user_attr(ATTR + "steps", reporter.reports[-1][0])
        if reporter.pruned_at is not None:
            raise optuna.TrialPruned(f"pruned at step {reporter.pruned_at}")
        return trial_value(spec.kind, reporter.reports)

    while _trials_left(study, spec):
        mine.clear()
        start_lock.acquire()
        try:
            study.optimize(objective, n_trials=1, catch=(TrialFailed, _GridDone))
        finally:
            start_lock.release()
        ran += 1
        for t in study.get_trials(deepcopy=False):
            if t.number in mine and not t.user_attrs.get(ATTR + "spare"):
                echo(describe_trial(t, metric))
    return ran


def describe_trial(trial, metric):
    params = " ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
    seconds = (trial.datetime_complete - trial.datetime_start).total_seconds() \
        if trial.datetime_complete and trial.datetime_start else float("nan")
    if trial.state.name == "COMPLETE":
        what = f"{metric} {trial.value:.4f}"
    elif trial.state.name == "PRUNED":
        what = f"pruned at step {trial.user_attrs.get(ATTR + 'steps')}"
    else:
        what = "failed: " + trial.user_attrs.get(ATTR + "error", "see its train.log")
    return f"trial {trial.number}: {what}  ({params})  {seconds:.1f}s"


def _short(value):
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def thread_env(workers, cores=None):
    """The environment of one of `workers` trial processes: the cores split between them."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    each = str(max(1, cores // max(1, workers)))
    env = dict(os.environ)
    for var in ("TGS_CYTHON_THREADS", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "MKL_NUM_THREADS"):
        env[var] = each
    return env


def run_workers(name, storage_url, workers, seed=None):
    """Start `workers` processes on study `name`, wait for them; the exit status of the worst."""
    procs = []
    for index in range(workers):
        argv = [sys.executable, "-m", "tinygrad_seq.tune", "worker", name, storage_url,
                "" if seed is None else str(seed + index)]
        procs.append(subprocess.Popen(argv, env=thread_env(workers)))
    try:
        return max(p.wait() for p in procs)
    except KeyboardInterrupt:
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=60)  # they saw the Ctrl-C too and are saving their checkpoints
        raise


# ---------------------------------------------------------------------------- coarse to fine
def refine_space(space, trials, direction="minimize", fraction=0.25, margin=0.1):
    """A narrower space around the best `fraction` of the finished trials (at least 2): each
    numeric range becomes the range those trials span, widened by `margin` of the old range
    (on the declared scale) and kept inside it; a choice keeps the values they used."""
    finished = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None]
    if not finished:
        raise TuneError("no trial has finished, so there is no best region to refine")
    finished.sort(key=lambda t: t.value, reverse=direction == "maximize")
    best = finished[:max(2, math.ceil(fraction * len(finished)))]
    refined = []
    for p in space:
        values = [t.params[p.name] for t in best if p.name in t.params]
        if not values:
            refined.append(p)
            continue
        if p.kind == "choice":
            kept = tuple(c for c in p.choices if c in values)
            refined.append(Param(p.name, "choice", choices=kept))
            continue
        scale = math.log if p.kind == "log" else (lambda v: v)
        unscale = math.exp if p.kind == "log" else (lambda v: v)
        lo, hi = scale(p.low), scale(p.high)
        pad = margin * (hi - lo)
        new_lo = max(lo, scale(min(values)) - pad)
        new_hi = min(hi, scale(max(values)) + pad)
        low, high = unscale(new_lo), unscale(new_hi)
        if p.kind == "log":  # exp(log(x)) may step just outside the old range
            low, high = max(low, p.low), min(high, p.high)
        if p.kind == "int":
            low, high = int(math.ceil(low - 1e-9)), int(math.floor(high + 1e-9))  # still holds every best value
            if low == high:
                refined.append(Param(p.name, "choice", choices=(low,)))
                continue
        refined.append(Param(p.name, p.kind, low, high))
    return refined


# ---------------------------------------------------------------------------- reports
def report_rows(study):
    """One dict per trial: number, state, parameters, metric, steps, seconds."""
    spec = StudySpec.from_study(study)
    retried = {t.user_attrs.get(ATTR + "retry_of") for t in study.get_trials(deepcopy=False)}
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get(ATTR + "spare"):
            continue
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else None
        state = t.state.name.lower() + (" (retried)" if t.number in retried else "")
        rows.append({"trial": t.number, "state": state,
                     **{p.name: t.params.get(p.name) for p in spec.space},
                     "value": t.value, "steps": t.user_attrs.get(ATTR + "steps"), "seconds": seconds})
    return rows


def report_table(study):
    spec = StudySpec.from_study(study)
    metric = OBJECTIVES[spec.kind][0]
    header = ["trial", "state"] + [p.name for p in spec.space] + [metric, "steps", "time"]
    lines = []
    for r in report_rows(study):
        lines.append([str(r["trial"]), r["state"]] + [_short(r[p.name]) if r[p.name] is not None else "-"
                                                     for p in spec.space]
                     + ["-" if r["value"] is None else f"{r['value']:.4f}",
                        "-" if r["steps"] is None else str(r["steps"]),
                        "-" if r["seconds"] is None else f"{r['seconds']:.1f}s"])
    widths = [max(len(h), *(len(row[i]) for row in lines)) if lines else len(h) for i, h in enumerate(header)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in lines]
    return "\n".join(out)


def best_trial(study):
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return None
    return min(done, key=lambda t: t.value) if study.direction.name == "MINIMIZE" else max(done, key=lambda t: t.value)


def best_command(study, out=None):
    """The `tgs train` command that reproduces the best trial (in `out`, default OUT/best)."""
    spec = StudySpec.from_study(study)
    trial = best_trial(study)
    if trial is None:
        return None
    settings = dict(spec.fixed, **trial.params)
    settings["out"] = out or os.path.join(spec.out, "best")
    return format_command(spec.runner, spec.kind, spec.corpus, settings)


def plot_study(study, folder=None):
    """NAME-params.png (the metric against each parameter, log axes where declared) and
    NAME-history.png (each trial's value and the best so far); [] without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return []
    spec = StudySpec.from_study(study)
    metric, direction, _ = OBJECTIVES[spec.kind]
    folder = folder or spec.out
    os.makedirs(folder, exist_ok=True)
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    pruned = [t for t in study.get_trials(deepcopy=False)
              if t.state.name == "PRUNED" and t.intermediate_values]
    paths = []
    for suffix, figsize, draw in (("params", (4 * max(1, len(spec.space)), 3.6), _draw_parameters),
                                  ("history", (6, 3.6), _draw_history)):
        fig = Figure(figsize=figsize)
        FigureCanvasAgg(fig)
        draw(fig, study.study_name, spec, metric, direction, done, pruned)
        fig.tight_layout()
        paths.append(os.path.join(folder, f"{study.study_name}-{suffix}.png"))
        fig.savefig(paths[-1], dpi=90)
    return paths


def _last_report(trial):
    """A pruned trial's value: the last intermediate value it reported."""
    return trial.intermediate_values[max(trial.intermediate_values)]


def _draw_parameters(fig, name, spec, metric, direction, done, pruned):
    """One axis a searched parameter: each complete trial's metric, and each pruned trial's
    last report, against the parameter's value."""
    for i, p in enumerate(spec.space):
        ax = fig.add_subplot(1, max(1, len(spec.space)), i + 1)
        for group, style, label in ((done, "o", "complete"), (pruned, "x", "pruned (last report)")):
            xs = [t.params[p.name] for t in group if p.name in t.params]
            ys = [t.value if t.state.name == "COMPLETE" else _last_report(t) for t in group if p.name in t.params]
            if xs:
                if p.kind == "choice":
                    xs = [p.choices.index(x) for x in xs]
                ax.plot(xs, ys, style, label=label, alpha=0.8)
        _parameter_axis(ax, p)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if i == 0 and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(f"study {name}: {metric} against each parameter")


def _parameter_axis(ax, p):
    """The x axis of parameter `p`: its declared range (not just where the trials fell), log
    scale for a log parameter, one labelled tick a choice."""
    if p.kind == "log":
        from matplotlib.ticker import NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overprint each other
        ax.set_xlim(p.low / 1.1, p.high * 1.1)
    elif p.kind in ("float", "int"):
        ax.set_xlim(p.low - 0.05 * (p.high - p.low), p.high + 0.05 * (p.high - p.low))
    if p.kind == "choice":
        ax.set_xticks(range(len(p.choices)))
        ax.set_xticklabels([str(c) for c in p.choices])
    ax.set_xlabel(p.name + (" (log scale)" if p.kind == "log" else ""))


def _draw_history(fig, name, spec, metric, direction, done, pruned):
    """Each trial's value by trial number, the best so far as a step line, pruned trials' last reports."""
    ax = fig.add_subplot(1, 1, 1)
    if done:
        numbers = [t.number for t in done]
        values = [t.value for t in done]
        best, running = [], None
        for v in values:
            running = v if running is None else (min(running, v) if direction == "minimize" else max(running, v))
            best.append(running)
        ax.plot(numbers, values, "o", label="complete trial")
        ax.step(numbers, best, where="post", label="best so far")
    if pruned:
        ax.plot([t.number for t in pruned], [_last_report(t) for t in pruned], "x", label="pruned (last report)")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title(f"study {name}: optimisation history")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def report(study):
    """The text report: the table, counts, the best trial and its `tgs train` command."""
    spec = StudySpec.from_study(study)
    metric = OBJECTIVES[spec.kind][0]
    c = counts(study)
    lines = [f"study {study.study_name}: {spec.kind}, {spec.sampler} sampler, {spec.pruner} pruner; "
             f"{c['COMPLETE']} complete, {c['PRUNED']} pruned, {c['FAIL']} failed, {c['RUNNING']} running, "
             f"{c['WAITING']} waiting" + (f"; refines study {spec.parent}" if spec.parent else ""),
             report_table(study)]
    trial = best_trial(study)
    if trial is not None:
        lines.append(f"best: trial {trial.number}, {metric} {trial.value:.4f} "
                     f"({' '.join(f'{k}={_short(v)}' for k, v in trial.params.items())})")
        lines.append("reproduce it with:\n  " + best_command(study))
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the whole search
@dataclass
class SearchResult:
    study: object
    refined: object = None


def search(kind, space, corpus=None, *, runner, trials=20, sampler="tpe", pruner="median", steps=None,
           eval_every=None, fixed=None, study=None, storage=None, out=None, workers=1, refine=False, refine_trials=None,
           startup_trials=5, seed=None, heartbeat=30, echo=print):
    """Search `space` (Param list or `--param` strings) for `tgs train KIND`, each trial run by
    `runner` (an object or its "module:attribute"; see the module doc).  Returns a SearchResult
    with the study (and the refining study with refine=True)."""
    if sampler not in SAMPLERS:
        raise TuneError(f"unknown sampler {sampler!r}; choose {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise TuneError(f"unknown pruner {pruner!r}; choose {', '.join(PRUNERS)}")
    if trials < 1 or workers < 1:
        raise TuneError("--trials and --workers must be positive integers")
    space = parse_space(space)
    if not space:
        raise TuneError("give at least one --param to search, e.g. --param lr=log:1e-4:1e-2")
    fixed = dict(fixed or {})
    runner_ref = getattr(resolve_runner(runner), "ref", None)
    if not isinstance(runner_ref, str) or resolve_runner(runner_ref) is not resolve_runner(runner):
        raise TuneError("the trial runner needs a `ref` (\"module:attribute\") naming itself, for the workers")
    options = tunable_options(runner_ref, kind)
    for name, value in (("steps", steps), ("eval_every", eval_every)):
        if value is not None:
            target = name if name in options else {"steps": "epochs"}.get(name)
            if target not in options:
                raise TuneError(f"tgs train {kind} has no --{name.replace('_', '-')}")
            fixed[target] = value
    check_space(runner_ref, kind, space, fixed)
    name = study or f"{kind}"
    out = os.path.abspath(out or os.path.join("runs", f"tune-{name}"))
    corpus = os.path.abspath(corpus) if corpus is not None else None
    if corpus is not None and "corpus" not in {p.name for p in train_command(runner_ref, kind).params}:
        raise TuneError(f"tgs train {kind} takes no corpus argument")
    os.makedirs(out, exist_ok=True)
    storage = storage or default_storage(out)
    spec = StudySpec(kind, space, corpus, fixed, sampler, pruner, trials, startup_trials, out, heartbeat=heartbeat,
                     runner=runner_ref)
    result = SearchResult(_run_study(name, storage, spec, workers, seed, echo))
    if refine:
        coarse = result.study
        narrow = refine_space(space, coarse.get_trials(deepcopy=False), OBJECTIVES[kind][1])
        echo(f"refining around the best trials of {name}: " + " ".join(p.spec() for p in narrow))
        spec = StudySpec(kind, narrow, corpus, fixed, "random", pruner, refine_trials or trials, startup_trials,
                         os.path.join(out, "refine"), parent=name, heartbeat=heartbeat, runner=runner_ref)
        result.refined = _run_study(f"{name}-refine", storage, spec, workers, seed, echo)
        coarse.set_user_attr(ATTR + "refined_by", f"{name}-refine")
    return result


def _run_study(name, storage_url, spec, workers, seed, echo):
    storage = open_storage(storage_url)
    study = open_study(name, storage, spec, seed)
    echo(f"study {name} in {storage_url}: {StudySpec.from_study(study).trials} trials of {spec.kind}; "
         f"runs in {spec.out}")
    if workers == 1:
        work(study, echo)
    else:
        status = run_workers(name, storage_url, workers, seed)
        if status:
            raise TuneError(f"a worker stopped with exit status {status}; run the same command again to continue")
    return study


def load(name, storage_url):
    """The study `name` (for reports)."""
    return open_study(name, open_storage(storage_url), None)


def _worker_main(argv):
    name, storage_url, seed = argv
    study = open_study(name, open_storage(storage_url), None, int(seed) if seed else None)
    try:
        work(study, lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":  # the worker processes of run_workers
    if len(sys.argv) == 5 and sys.argv[1] == "worker":
        sys.exit(_worker_main(sys.argv[2:]))
    sys.exit("usage: python -m tinygrad_seq.tune worker STUDY STORAGE SEED")
