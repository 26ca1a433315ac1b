# The test process is tinygrad_seq's own, so it takes the settings `tgs` takes (before anything
# imports numpy: OpenBLAS reads its spin time only when it loads).  Subprocesses inherit the
# environment variables; tests of what `import tinygrad_seq` does remove them.
import tinygrad_seq.runtime

tinygrad_seq.runtime.configure_for_speed()

import atexit  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

import wheel_build  # noqa: E402

# The tests (and the `tgs` processes they start) must neither follow nor overwrite the backend
# choices that the developer's own `tgs bench --write-choice` stored in ~/.config.
_CONFIG_HOME = tempfile.mkdtemp(prefix="tgs-test-config-")
os.environ["XDG_CONFIG_HOME"] = _CONFIG_HOME
atexit.register(shutil.rmtree, _CONFIG_HOME, True)


def pytest_collection_finish(session):
    """Start building the wheel that some tests install (tests/wheel_build.py) as soon as the
    run is known to include one of them, so that its compiling overlaps the tests before."""
    if any(wheel_build.FIXTURE in getattr(item, "fixturenames", ()) for item in session.items):
        wheel_build.start()
