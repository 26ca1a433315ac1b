"""`tgs`: the command line.  Subcommands load lazily, so `tgs --help` imports no numba."""
import importlib
import os
import sys

import click

from tinygrad_seq.runtime import configure_for_speed

# The `tgs` process belongs to tinygrad_seq, so it takes the process-wide settings a library
# import must not make; here, before NumPy loads (importing tinygrad_seq loads nothing).
configure_for_speed()

from tinygrad_seq._version import __version__

# command name -> "module:function" inside tinygrad_seq.cli
TRAIN_COMMANDS = {
    "charlm": "train_lm:charlm",
    "wordlm": "train_lm:wordlm",
    "ngram": "train_lm:ngram",
    "cnn": "train_vision:cnn",
    "mlp": "train_vision:mlp",
    "seq2seq": "train_seq2seq:seq2seq",
    "tagger": "train_seq2seq:tagger",
}
TOP_COMMANDS = {
    "sample": "sample:sample",
    "eval": "evaluate:evaluate",
    "translate": "train_seq2seq:translate",
    "bench": "bench:bench",
    "backends": "backends:backends",
    "tune": "tune:tune",
}
SHORT_HELP = {
    "train": "Train a model (charlm, wordlm, ngram, cnn, mlp, seq2seq, tagger).",
    "charlm": "Train a character-level language model (RNN/GRU/LSTM/Transformer).",
    "wordlm": "Train a word-level language model.",
    "ngram": "Build a count-based n-gram language model.",
    "cnn": "Train a LeNet-style CNN on handwritten digits.",
    "mlp": "Train an MLP on handwritten digits.",
    "seq2seq": "Train the date-translation seq2seq model with attention.",
    "tagger": "Train a bidirectional LSTM sequence tagger.",
    "sample": "Generate text from a trained model.",
    "eval": "Evaluate a checkpoint on a file (loss, bits/char, accuracy).",
    "translate": "Translate dates with a trained seq2seq model.",
    "bench": "Benchmark every backend against PyTorch.",
    "backends": "List the kernel backends and why any is unavailable.",
    "tune": "Search hyper-parameters of a training kind (Optuna; grid, random, TPE).",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when one is run (or its own --help shown)."""

    def __init__(self, *args, lazy=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx, name):
        if name in self.lazy:
            module_name, attr = self.lazy[name].split(":")
            try:
                module = importlib.import_module(f"tinygrad_seq.cli.{module_name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"tinygrad_seq.cli.{module_name}":
                    raise
                return None
            return getattr(module, attr)
        return super().get_command(ctx, name)

    def format_commands(self, ctx, formatter):
        # Listing must not import the commands (that would pull in numba at `tgs --help`).
        rows = [(name, SHORT_HELP.get(name, "")) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class Main(LazyGroup):
    """Turns every error into one line on stderr and a non-zero exit, never a traceback."""

    def main(self, *args, **kwargs):
        try:
            # without standalone mode click hands back ctx.exit(code) as a return value
            result = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(130)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except Exception as exc:  # a bug or an unforeseen input: still one line
            if os.environ.get("TGS_DEBUG"):
                raise
            message = str(exc).splitlines()[0] if str(exc) else ""
            click.echo(f"Error: {type(exc).__name__}: {message} (set TGS_DEBUG=1 for the traceback)", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=Main, lazy=TOP_COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tgs", message="%(prog)s %(version)s")
def cli():
    """tinygrad_seq: train, sample and evaluate classic deep-learning models.

    \b
    Start here:  tgs train charlm            (trains on the bundled KJV corpus)
                 tgs sample runs/charlm --length 300
    """


@cli.group(cls=LazyGroup, lazy=TRAIN_COMMANDS)
def train():
    """Train a model (see `tgs train MODEL --help`)."""


if __name__ == "__main__":  # pragma: no cover
    cli()
