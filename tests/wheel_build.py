"""`pip wheel .` of a copy of the source tree, as a user's `pip install .` builds it: every
extension of every variant compiled afresh (~4 minutes on 2 cores).  tests/conftest.py starts it
in the background, at a lower priority, as soon as the collected tests include one that needs the
wheel, so that the compiling overlaps the tests that run before that one."""
import atexit
import os
import shutil
import subprocess
import sys
import tempfile

import tinygrad_seq.kernels.cython as cython_backend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# what a source tree holds besides its sources: build outputs, environments, caches
NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__",
                                     "*.so", "*.pyd", "*.c", "*.html", ".pytest_cache", ".hypothesis", "runs",
                                     ".whl", ".site", ".gl", "*.nbi", "*.nbc", *cython_backend.LEVEL_NAMES,
                                     *cython_backend.OTHER_VARIANTS)
FIXTURE = "installed_wheel"
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]

_build = None


def _environment():
    """The test process's environment as it is now (conftest.py sets some of it after importing
    this module), less what would change what pip builds or where Python looks."""
    return {k: v for k, v in os.environ.items() if k not in ("TGS_NATIVE_BUILD", "PYTHONPATH")}


class _Build:
    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="tgs-test-wheel-")
        atexit.register(self.close)
        self.source, self.dist = os.path.join(self.root, "src"), os.path.join(self.root, "dist")
        shutil.copytree(ROOT, self.source, ignore=NOT_SOURCES)
        self.log = open(os.path.join(self.root, "build.log"), "w+")
        # the tests running meanwhile come first (`nice`, not a preexec_fn: this process may
        # already run threads, and a child forked from it must exec at once)
        nice = ["nice", "-n", "10"] if shutil.which("nice") else []
        self.process = subprocess.Popen(
            nice + PIP + ["wheel", "--no-deps", "--no-build-isolation", "-w", self.dist, "."],
            cwd=self.source, env=_environment(), stdout=self.log, stderr=subprocess.STDOUT)

    def wheel(self, timeout=900):
        """The built wheel's path, once the build has ended; AssertionError with pip's output
        when it failed."""
        returncode = self.process.wait(timeout=timeout)
        self.log.seek(0)
        assert returncode == 0, self.log.read()[-3000:]
        (name,) = [n for n in os.listdir(self.dist) if n.startswith("tinygrad_seq-") and n.endswith(".whl")]
        return os.path.join(self.dist, name)

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)


def start():
    """Start the build unless it has started."""
    global _build
    if _build is None:
        _build = _Build()
    return _build


def installed(site, elsewhere):
    """The wheel installed by pip into the folder `site`, pip run from the folder `elsewhere`."""
    install = subprocess.run(PIP + ["install", "--no-deps", "--target", str(site), start().wheel()],
                             cwd=elsewhere, env=_environment(), capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
