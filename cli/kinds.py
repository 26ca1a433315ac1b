"""Checkpoint kinds: how `tgs sample` and `tgs eval` handle each kind of model.

Every checkpoint's state has a "kind" (the "kind" entry of the dict given to
`tinygrad_seq.checkpoint.save_checkpoint`): "charlm", "wordlm", "ngram", "classifier",
"seq2seq", ...  `tgs sample CKPT` and `tgs eval CKPT FILE` load the checkpoint, look up its
kind here and call the handler, so they work for any model without knowing it.

Registering a kind (at the top level of the module whose command writes it):

    from tinygrad_seq.cli import kinds

    def evaluate_classifier(state, file, path):
        ...                                  # state: the loaded checkpoint dict
        return {"accuracy": 0.97, "examples": 360, "confusion_matrix": [[...], ...]}

    def format_classifier(result):           # optional: the human-readable report
        return f"accuracy {result['accuracy']:.2%}\\n" + ...

    kinds.register("classifier", evaluate=evaluate_classifier, format_eval=format_classifier,
                   description="a digit classifier")

Handlers:
    evaluate(state, file, path) -> dict
        `tgs eval PATH [FILE]`; `file` is the FILE argument or None (raise ValueError with a
        one-line message if the kind needs one).  `tgs eval --json` prints the dict as JSON;
        otherwise `format_eval(result)` if given, else one "key: value" line per entry.
    sample(state, options) -> str, or an iterable of str pieces
        `tgs sample PATH`; `options` is a SampleOptions (prime, length, temperature, top_k,
        beam, seed, device, path).  Pieces are printed and flushed as they come (Ctrl-C keeps
        what was printed), so a long sample streams; validate everything (the prime, the
        options) before the first piece.  A kind without `sample` makes `tgs sample` say that it
        cannot sample.

Errors: a handler raises ValueError (or click.ClickException, e.g. through `fail`) with a
one-line message; the command prints it as "Error: ..." and exits non-zero, never with a traceback.

How a kind is found without editing this file: when a checkpoint's kind is not registered
yet, `lookup` imports the training-command modules listed in
`tinygrad_seq.cli.main.TRAIN_COMMANDS` (train_lm, train_vision, train_seq2seq, ...) one after
another until the kind appears, so registering at import time in your own train_*.py module
is all it takes.  Those modules must keep heavy imports inside their functions.
"""
import importlib
from dataclasses import dataclass

import click


def fail(message):
    """End the command with one "Error: ..." line: the first line of `message` (an exception too)."""
    raise click.ClickException(str(message).splitlines()[0] if str(message) else "failed")


def fail_unless_positive(**options):
    """fail() for the first option (by its parameter name: seq_len is --seq-len) below 1; an
    option that is None was not given and passes."""
    for name, value in options.items():
        if value is not None and value < 1:
            fail(f"--{name.replace('_', '-')} must be a positive integer, got {value}")


@dataclass
class SampleOptions:
    prime: str = ""
    length: int = 500
    temperature: float = 1.0
    top_k: int = None
    beam: int = None
    seed: int = None
    device: str = "cpu"
    path: str = "checkpoint"     # the checkpoint file, for error messages


@dataclass
class KindHandler:
    kind: str
    evaluate: object = None
    sample: object = None
    format_eval: object = None
    description: str = ""


_registry = {}


def register(kind, *, evaluate=None, sample=None, format_eval=None, description=""):
    """Declare how `tgs eval` / `tgs sample` handle checkpoints of `kind` (see the module doc)."""
    _registry[kind] = KindHandler(kind, evaluate, sample, format_eval, description or kind)
    return _registry[kind]


def registered():
    """The kinds known so far (after importing every training-command module)."""
    _import_all()
    return sorted(_registry)


def _import_all(stop_at=None):
    from .main import TRAIN_COMMANDS

    for module in dict.fromkeys(target.split(":")[0] for target in TRAIN_COMMANDS.values()):
        if stop_at is not None and stop_at in _registry:
            return
        try:
            importlib.import_module(f"tinygrad_seq.cli.{module}")
        except ImportError:  # a command that is not written (or not installable) yet
            continue


def lookup(kind):
    """The KindHandler for `kind`, or ValueError naming the kinds that are known."""
    if kind not in _registry:
        _import_all(stop_at=kind)
    if kind not in _registry:
        known = ", ".join(registered()) or "none"
        raise ValueError(f"unknown checkpoint kind {kind!r}; this tgs knows: {known}")
    return _registry[kind]


def check_decoding_options(beam, top_k, temperature, seed, temperature_given):
    """One-line errors for decoding options that contradict each other or are out of range."""
    if seed is not None and seed < 0:
        fail(f"--seed must be a non-negative integer, got {seed}")
    if beam is not None:
        conflicts = [name for name, on in (("--top-k", top_k is not None), ("--temperature", temperature_given)) if on]
        if conflicts:
            fail(f"--beam and {' and '.join(conflicts)} cannot be combined: beam search keeps the most likely "
                 f"continuations and does not sample; drop --beam to sample, or {' and '.join(conflicts)} to search")


def format_result(result):
    """Default report: one aligned "key: value" line per entry (floats to 4 decimals)."""
    width = max((len(str(k)) for k in result), default=0)
    lines = []
    for key, value in result.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"{str(key) + ':':{width + 1}s} {shown}")
    return "\n".join(lines)
