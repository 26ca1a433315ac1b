"""What the CLI tests share: run `tgs` in-process, and check the one-line error contract."""
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
