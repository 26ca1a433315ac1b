# tinygrad_seq before anything imports numpy: it sets OPENBLAS_THREAD_TIMEOUT, which NumPy's
# OpenBLAS reads only when it loads (see tinygrad_seq/__init__.py).
import tinygrad_seq  # noqa: F401

import atexit  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

# The tests (and the `tgs` processes they start) must neither follow nor overwrite the backend
# choices that the developer's own `tgs bench --write-choice` stored in ~/.config.
_CONFIG_HOME = tempfile.mkdtemp(prefix="tgs-test-config-")
os.environ["XDG_CONFIG_HOME"] = _CONFIG_HOME
atexit.register(shutil.rmtree, _CONFIG_HOME, True)
