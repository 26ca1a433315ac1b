"""What the CLI and script tests share: run `tgs` in-process or as a child process, run an
example script, check the one-line error contract, and the tiny corpus, options and run the
LM tests train on."""
import contextlib
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from tinygrad_seq.cli.main import cli


def tgs(*args):
    """Run `tgs ARGS...` in this process (arguments may be paths or numbers)."""
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_one_line_error(result, *fragments):
    """A non-zero exit with exactly one 'Error: ...' line on stderr holding every fragment."""
    assert result.exit_code != 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def tgs_command():
    """The argv prefix that runs `tgs` in a child process (for signals and concurrency)."""
    import shutil

    beside = os.path.join(os.path.dirname(sys.executable), "tgs")
    exe = beside if os.path.exists(beside) else shutil.which("tgs")
    return [exe] if exe else [sys.executable, "-m", "tinygrad_seq.cli.main"]


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_example(name, *args, timeout=300, cwd=ROOT):
    """Run examples/NAME as a script with ARGS (paths or numbers) in `cwd`; its stdout, after
    checking that it exited 0 (else the end of its stderr)."""
    result = subprocess.run([sys.executable, os.path.join(ROOT, "examples", name), *map(str, args)],
                            capture_output=True, text=True, timeout=timeout, cwd=cwd)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@contextlib.contextmanager
def tgs_process(*args):
    """`tgs ARGS...` started as a child process (stdout and stderr piped as text), for signals
    and concurrency; killed on leaving the block if it is still running."""
    proc = subprocess.Popen(tgs_command() + [str(a) for a in args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()


# A short repeated text and the smallest LM options: what the CLI run tests train on.
TEXT = ("In the beginning God created the heaven and the earth. And the earth was without form, "
        "and void; and darkness was upon the face of the deep.\n") * 12
TINY = ["--hidden", "16", "--embed", "8", "--seq-len", "12", "--batch-size", "4"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """TEXT in a file, once per test module."""
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text(TEXT)
    return path


def train_tiny_charlm(tmp_path_factory, corpus, steps, eval_every):
    """The run directory of a TINY `tgs train charlm` of `steps` steps on `corpus`, validating
    every `eval_every` (for module-scoped fixtures: one run serves a module's tests)."""
    out = tmp_path_factory.mktemp("runs") / "charlm"
    result = tgs("train", "charlm", corpus, *TINY, "--steps", steps, "--eval-every", eval_every, "--out", out)
    assert result.exit_code == 0, result.output
    return out
