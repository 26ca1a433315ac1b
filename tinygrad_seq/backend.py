"""The kernel registry: the one place where a hot loop is bound to an implementation.

Five families of hot loops have kernels: `recurrence` (whole-sequence RNN/GRU/LSTM
forward and backward), `conv` (convolution and pooling forward and backward),
`softmax` (masked softmax forward and backward), `activation` (the exact GELU, whose erf
is too slow as a NumPy/SciPy ufunc) and `matmul` (every matrix product of the engine, so
that the GEMMs can run on the same thread team as the other kernels).  Each backend is a package under
`tinygrad_seq.kernels` with one module per family; every module of a family exposes the
same functions, whose contract is written in `tinygrad_seq/kernels/reference/`.

Which backend runs is chosen, most specific first, by
    with tgs.backend("numba"): ...      # per block
    tgs.set_backend("cython")           # per process (the CLI's --backend)
    TGS_BACKEND=numpy                   # environment
and otherwise "auto": the fastest available backend for the array's device.

What "fastest" means is measured, not assumed: a choice table, tinygrad_seq/data/auto_backend.json,
maps each device to the winning backend of each family,

    {"cpu": {"recurrence": "cython", "conv": "numba", "softmax": "cython"}, "cuda": {...}}

written by the benchmarks (`save_auto_choices`, e.g. `python bench/bench_cython_kernels.py
--write-choice`) and shipped with the package.  A family missing from it, or a winner that
cannot run here, falls back to AUTO_ORDER.

Nothing here imports numba, Cython modules or CuPy until a kernel is first asked for.
"""
import contextlib
import importlib
import json
import os
import threading

FAMILIES = ("recurrence", "conv", "softmax", "activation", "matmul")

# name -> (package, devices it serves)
BACKENDS = {
    "numpy": ("tinygrad_seq.kernels.reference", ("cpu", "cuda")),
    "numba": ("tinygrad_seq.kernels.numba_cpu", ("cpu",)),
    "cython": ("tinygrad_seq.kernels.cython", ("cpu",)),
    "cuda": ("tinygrad_seq.kernels.cuda", ("cuda",)),
}
# Preference when nothing was chosen and no measured choice table says otherwise.
AUTO_ORDER = {"cpu": ("numba", "cython", "numpy"), "cuda": ("cuda", "numpy")}
CHOICE_TABLE = os.path.join(os.path.dirname(__file__), "data", "auto_backend.json")

_state = threading.local()
_process_choice = [os.environ.get("TGS_BACKEND", "auto").strip().lower() or "auto"]
_modules = {}
_reasons = {}


class BackendError(RuntimeError):
    pass


def _check_name(name):
    if name != "auto" and name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}: choose one of auto, {', '.join(BACKENDS)}")
    return name


def current():
    """The backend name in force here: a `with backend(...)` block, else the process choice."""
    stack = getattr(_state, "stack", None)
    return stack[-1] if stack else _check_name(_process_choice[0])


def set_backend(name):
    """Choose the backend for the whole process ('auto', 'numpy', 'numba', 'cython', 'cuda')."""
    _process_choice[0] = _check_name(name.lower())


@contextlib.contextmanager
def backend(name):
    """Run a block with one backend: `with tgs.backend("numba"): loss.backward()`."""
    stack = getattr(_state, "stack", None)
    if stack is None:
        stack = _state.stack = []
    stack.append(_check_name(name.lower()))
    try:
        yield
    finally:
        stack.pop()


def unavailable_reason(name):
    """None when backend `name` can run here, else a sentence saying why not."""
    if name not in _reasons:
        package = BACKENDS[name][0]
        try:
            pkg = importlib.import_module(package)
            _reasons[name] = pkg.unavailable_reason()
        except Exception as exc:
            _reasons[name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return _reasons[name]


def _family_module(name, family):
    key = (name, family)
    if key not in _modules:
        _modules[key] = importlib.import_module(f"{BACKENDS[name][0]}.{family}")
    return _modules[key]


def _auto_choices():
    if not hasattr(_auto_choices, "table"):
        try:
            with open(CHOICE_TABLE) as f:
                _auto_choices.table = json.load(f)
        except (OSError, ValueError):
            _auto_choices.table = {}
    return _auto_choices.table


def save_auto_choices(device, winners, path=CHOICE_TABLE):
    """Record {family: backend} as `auto`'s choice on `device`, keeping every other entry;
    returns the whole table.  The benchmark that measured the winners calls this."""
    unknown = [f"{family}={name}" for family, name in winners.items()
               if family not in FAMILIES or name not in BACKENDS or device not in BACKENDS[name][1]]
    if unknown:
        raise BackendError(f"not a backend of a kernel family on {device!r}: {', '.join(unknown)}")
    try:
        with open(path) as f:
            table = json.load(f)
    except (OSError, ValueError):
        table = {}
    table.setdefault(device, {}).update(winners)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(table, f, indent=2, sort_keys=True)
        f.write("\n")
    if path == CHOICE_TABLE and hasattr(_auto_choices, "table"):
        del _auto_choices.table          # read again on the next resolve()
    return table


def resolve(family, device="cpu"):
    """The backend name that serves `family` on `device` under the current choice."""
    if family not in FAMILIES:
        raise BackendError(f"unknown kernel family {family!r}: one of {', '.join(FAMILIES)}")
    name = current()
    if name != "auto":
        if device not in BACKENDS[name][1]:
            raise BackendError(f"backend {name!r} does not run on device {device!r}; "
                               f"use one of {', '.join(n for n, (_, d) in BACKENDS.items() if device in d)} or 'auto'")
        reason = unavailable_reason(name)
        if reason:
            raise BackendError(f"backend {name!r} is unavailable: {reason}")
        return name
    measured = _auto_choices().get(device, {}).get(family)
    order = ((measured,) if measured else ()) + AUTO_ORDER[device]
    for candidate in order:
        if candidate in BACKENDS and unavailable_reason(candidate) is None:
            try:
                _family_module(candidate, family)
            except ImportError:
                continue
            return candidate
    return "numpy"


def kernels(family, device="cpu"):
    """The module implementing `family` for `device` under the current backend choice."""
    return _family_module(resolve(family, device), family)


def available_backends():
    """[(name, devices, reason-or-None)] for every known backend, for `tgs backends`."""
    return [(name, devices, unavailable_reason(name)) for name, (_, devices) in BACKENDS.items()]
