"""What the CLI tests share: run `tgs` in-process, and check the one-line error contract."""
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
    import os
    import shutil
    import sys

    beside = os.path.join(os.path.dirname(sys.executable), "tgs")
    exe = beside if os.path.exists(beside) else shutil.which("tgs")
    return [exe] if exe else [sys.executable, "-m", "tinygrad_seq.cli.main"]


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
