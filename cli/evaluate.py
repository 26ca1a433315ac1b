"""`tgs eval CKPT [FILE] [--json]`: evaluate any checkpoint kind (see kinds.py).

Language models print nats/char and bits/char on FILE; other kinds report what their
handler returns (e.g. accuracy and a confusion matrix for classifiers).  --json is always
valid JSON: a NaN becomes null and an infinity the string "inf"."""
import json

import click

from . import kinds
from .sample import MALFORMED, load_for_command, malformed


@click.command()
@click.argument("ckpt", type=click.Path())
@click.argument("file", required=False, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (nats_per_char, bits_per_char, chars, ...).")
def evaluate(ckpt, file, as_json):
    """Evaluate the model in CKPT (a run directory or checkpoint file) on FILE."""
    from tinygrad_seq.checkpoint import resolve_path
    from tinygrad_seq.trainer import json_safe

    state, handler = load_for_command(ckpt)
    if handler.evaluate is None:
        raise click.ClickException(f"{ckpt} holds a {handler.description}, which `tgs eval` cannot evaluate")
    try:
        result = handler.evaluate(state, file, resolve_path(ckpt))
    except ValueError as exc:
        raise click.ClickException(str(exc))
    except MALFORMED as exc:
        raise malformed(ckpt, exc)
    if as_json:
        click.echo(json.dumps(json_safe(dict(result, kind=state["kind"])), allow_nan=False))
    elif handler.format_eval is not None:
        click.echo(handler.format_eval(result))
    else:
        click.echo(kinds.format_result(result))
