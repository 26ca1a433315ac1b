"""What every `tgs train` command shares around the library's Trainer: the run directory
(refuse an existing run unless --resume or --overwrite), the options a resumed run may change
(--steps, --eval-every, --lr, --clip, --dropout, --backend, --device: babysitting a run) and the
ones it may not (anything that shapes the model or its data), and the exit code of the result.

Under an MPI launcher (`mpiexec -n N tgs train ...`, `srun`) every rank runs the command
(`on_every_rank`): one model trained data-parallel by the library's Trainer, rank 0 alone
printing (`echo`); an error on any rank ends the whole job with its message instead of leaving
the others waiting for it.
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

    from tinygrad_seq import distributed as dist

    path = checkpoint_of(out)
    try:
        # only rank 0 takes the lock; on another rank the lock may already be rank 0's own
        if dist.is_main_process():
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


def on_every_rank(out, body, *args):
    """body(*args) as a command run by every rank of an MPI job (or by the one process): joins
    the launcher's process group first; a ClickException or unexpected error on one rank
    aborts the job with its message (a fresh run that failed before its first checkpoint
    leaves no --out directory behind)."""
    from tinygrad_seq import distributed as dist

    try:
        dist.init_from_environment()
    except dist.DistributedError as exc:
        fail(exc)
    out_existed = os.path.exists(out)
    try:
        return body(*args)
    except click.exceptions.Exit:  # an agreed end (done, interrupted, diverged): every rank exits alike
        raise
    except click.ClickException as exc:
        if not out_existed and dist.is_main_process():
            remove_unstarted_run(out)
        if dist.get_world_size() > 1:
            dist.abort(exc.format_message())
        raise
    except Exception as exc:
        if dist.get_world_size() > 1 and not os.environ.get("TGS_DEBUG"):
            message = str(exc).splitlines()[0] if str(exc) else ""
            dist.abort(f"{type(exc).__name__}: {message}; ending the other ranks of the job")
        raise


def remove_unstarted_run(out):
    """Delete `out` of a fresh run that failed before writing its first checkpoint (what it
    holds then is only that run's own: its lock, logs, corpus cache)."""
    import shutil

    if os.path.isdir(out) and not os.path.exists(os.path.join(out, "checkpoint.npz")):
        shutil.rmtree(out, ignore_errors=True)


def echo(text, err=True):
    """click.echo from rank 0 only (every process when not under MPI)."""
    from tinygrad_seq import distributed as dist

    if dist.is_main_process():
        click.echo(text, err=err)


def run(trainer, echo=echo):
    """trainer.train() with the context's CALLBACKS added, then the result's last line and exit
    code (0 done or pruned, 1 diverged, 130 interrupted, 143 terminated)."""
    from tinygrad_seq.trainer import RunDirectoryError

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
