"""`tgs sample CKPT`: text from a trained model (any kind that registered a sampler, see kinds.py).

The text is printed as it is generated (flushed piece by piece), so a long sample shows at
once and Ctrl-C keeps what was printed (exit code 130)."""
import click

from . import kinds

# what a kind's handler raises for a state that is not what it expects (a malformed checkpoint)
MALFORMED = (KeyError, TypeError, IndexError, AttributeError, RecursionError)


def load_for_command(ckpt):
    """(state, handler) for CKPT (a run directory or a checkpoint file), or a one-line error."""
    import os

    from tinygrad_seq.checkpoint import CheckpointError, load_checkpoint

    if os.path.isdir(ckpt) and not os.path.exists(os.path.join(ckpt, "checkpoint.npz")):
        raise click.ClickException(f"{ckpt} is a directory without a checkpoint.npz; give a run directory "
                                   "from `tgs train ... --out` or a checkpoint file")
    try:
        state = load_checkpoint(ckpt)
    except CheckpointError as exc:
        raise click.ClickException(str(exc))
    if not isinstance(state, dict) or not isinstance(state.get("kind"), str):
        raise click.ClickException(f"{ckpt} is a tinygrad_seq checkpoint without a model kind; it cannot be used here")
    try:
        handler = kinds.lookup(state["kind"])
    except ValueError as exc:
        raise click.ClickException(str(exc))
    return state, handler


def checkpoint_file(ckpt):
    from tinygrad_seq.checkpoint import resolve_path

    return resolve_path(ckpt)


def malformed(ckpt, exc):
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return click.ClickException(f"{checkpoint_file(ckpt)} is a malformed checkpoint ({type(exc).__name__}: {reason}); "
                                "retrain or point at another checkpoint")


def _check(name, value, low, inclusive=True):
    if value is not None and (value < low if inclusive else value <= low):
        raise click.ClickException(f"{name} must be {'at least' if inclusive else 'more than'} {low}, got {value}")


@click.command()
@click.argument("ckpt", type=click.Path())
@click.option("--prime", default="", help="Text to start from (its characters must be in the vocabulary).")
@click.option("--length", type=int, default=500, show_default=True, help="Tokens (characters or words) to generate.")
@click.option("--temperature", type=float, default=1.0, show_default=True,
              help="Softmax temperature: <1 safer, >1 wilder, 0 = greedy.")
@click.option("--top-k", type=int, default=None, help="Sample only among the K most likely tokens.")
@click.option("--beam", type=int, default=None, help="Beam search of width W instead of sampling.")
@click.option("--seed", type=int, default=None, help="Random seed (the same seed gives the same text).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where the model runs (cuda needs a GPU and CuPy).")
def sample(ckpt, prime, length, temperature, top_k, beam, seed, device):
    """Generate text from the model in CKPT (a run directory or a checkpoint file)."""
    import math

    from tinygrad_seq.checkpoint import all_finite

    ctx = click.get_current_context()
    _check("--length", length, 1)
    _check("--top-k", top_k, 1)
    _check("--beam", beam, 1)
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise click.ClickException(f"--temperature must be a number >= 0, got {temperature}")
    kinds.check_decoding_options(beam, top_k, temperature, seed, temperature_given=ctx.get_parameter_source(
        "temperature") == click.core.ParameterSource.COMMANDLINE)
    if device == "cuda":
        from tinygrad_seq.device import cupy_or_none, cupy_unavailable_reason

        if cupy_or_none() is None:
            raise click.ClickException(f"--device cuda is not available here ({cupy_unavailable_reason()})")
    state, handler = load_for_command(ckpt)
    if handler.sample is None:
        raise click.ClickException(f"{ckpt} holds a {handler.description}, which `tgs sample` cannot sample from")
    weights = state.get("model")
    if isinstance(weights, dict) and not all_finite(weights):
        raise click.ClickException(f"{checkpoint_file(ckpt)} holds weights that are not finite (NaN or inf): the run "
                                   "diverged before it was saved; retrain with a lower --lr")
    options = kinds.SampleOptions(prime=prime, length=length, temperature=temperature, top_k=top_k, beam=beam, seed=seed,
                                  device=device, path=checkpoint_file(ckpt))
    try:
        text = handler.sample(state, options)
        if isinstance(text, str):
            click.echo(text)
            return
        try:
            for piece in text:
                click.echo(piece, nl=False)  # click flushes after every echo
        except KeyboardInterrupt:
            click.echo("")
            click.echo("Interrupted: the text above is what was generated before Ctrl-C.", err=True)
            ctx.exit(130)
        click.echo("")
    except ValueError as exc:
        raise click.ClickException(f"--prime: {exc}" if prime and "vocabulary" in str(exc) else str(exc))
    except MALFORMED as exc:
        raise malformed(ckpt, exc)
