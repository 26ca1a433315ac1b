"""What every `tgs train` command shares around the library's Trainer: the run directory
(refuse an existing run unless --resume or --overwrite), the options a resumed run may change
(--steps, --eval-every, --lr, --clip, --dropout, --backend, --device: babysitting a run) and the
ones it may not (anything that shapes the model or its data), and the exit code of the result.
"""
import os

import click

from .kinds import fail

# what `--resume` may change; every other option is fixed by the checkpoint
RESUME_CHANGEABLE = ("steps", "eval_every", "lr", "clip", "dropout", "backend", "device")
NOT_SETTINGS = ("out", "resume", "overwrite", "val_file", "corpus")
# click context meta key: Trainer callbacks that an in-process caller of a `tgs train` command
# (`tgs tune`, reporting to Optuna) adds to the run; see Trainer's `callbacks`
CALLBACKS = "tinygrad_seq.cli.runs.callbacks"


def checkpoint_of(out):
    if os.path.exists(out) and not os.path.isdir(out):
        fail(f"--out {out} is a file; give a directory for the run")
    return os.path.join(out, "checkpoint.npz")


def open_run(out, kinds, resume, overwrite=False):
    """The checkpoint state to resume (None for a fresh run), after the checks: --out is not a
    file; a fresh run does not replace a checkpoint without --overwrite; --resume needs one of
    `kinds` that holds a training state."""
    from tinygrad_seq.checkpoint import CheckpointError, load_checkpoint
    from tinygrad_seq.trainer import RunDirectoryError, RunLock

    path = checkpoint_of(out)
    try:
        RunLock(out).check_free()
    except RunDirectoryError as exc:
        fail(exc)
    if resume and overwrite:
        fail("--resume continues the run in --out and --overwrite replaces it; give only one")
    if not resume:
        if os.path.exists(path) and not overwrite:
            fail(f"{out} already holds a checkpoint; pass --resume to continue it, --overwrite to replace it, "
                 "or choose another --out")
        if os.path.exists(path):
            try:
                held = load_checkpoint(path).get("kind")
            except CheckpointError:
                held = None
            if held not in (None,) + tuple(kinds):
                fail(f"{out} holds a {held!r} checkpoint, not a {kinds[0]!r} one; choose another --out")
        return None
    try:
        state = load_checkpoint(path)
    except CheckpointError as exc:
        fail(f"cannot resume: {exc}")
    if state.get("kind") not in kinds or not isinstance(state.get("train"), dict) or "config" not in state["train"]:
        fail(f"cannot resume: {path} holds a {state.get('kind')!r} model, not a {kinds[0]!r} run "
             "(or one saved without its training state)")
    return state


def given(name):
    """True when option `name` was typed on the command line (not a default)."""
    ctx = click.get_current_context()
    return ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE


def resume_changes(saved, options, changeable=RESUME_CHANGEABLE):
    """The settings to change in a resumed run: the options typed on the command line that
    differ from the checkpoint's `saved` config.  A typed option that would change a fixed
    setting (the model's shape, its data) is an error naming it."""
    changes, fixed = {}, []
    for name, value in options.items():
        if name in NOT_SETTINGS or not given(name) or name not in saved:
            continue
        if saved[name] == value or (isinstance(saved[name], list) and tuple(saved[name]) == value):
            continue
        if name in changeable:
            changes[name] = value
        else:
            fixed.append(name)
    if fixed:
        names = ", ".join("--" + n.replace("_", "-") for n in fixed)
        fail(f"cannot change {names} when resuming: the checkpoint fixes the model's shape and data "
             f"(only {', '.join('--' + n.replace('_', '-') for n in changeable)} can change); "
             "start a new run with another --out")
    return changes


def run(trainer, echo=None):
    """trainer.train() with the context's CALLBACKS added, then the result's last line and exit
    code (0 done or pruned, 1 diverged, 130 interrupted, 143 terminated)."""
    from tinygrad_seq.trainer import RunDirectoryError

    echo = echo or (lambda line: click.echo(line, err=True))
    trainer.callbacks.extend(click.get_current_context().meta.get(CALLBACKS, ()))
    try:
        result = trainer.train(echo=echo)
    except RunDirectoryError as exc:
        fail(exc)
    if result.status in ("done", "pruned"):
        echo(result.message)
        return result
    prefix = {"interrupted": "Interrupted: ", "terminated": "Terminated: "}.get(result.status, "Error: ")
    echo(prefix + result.message)
    click.get_current_context().exit(result.exit_code)
