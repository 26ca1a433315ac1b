"""The kernel registry: the one place where a hot loop is bound to an implementation.

Four families of hot loops have kernels: `recurrence` (whole-sequence RNN/GRU/LSTM
forward and backward), `conv` (convolution and pooling forward and backward),
`softmax` (masked softmax forward and backward) and `activation` (the exact GELU, whose erf
is too slow as a NumPy/SciPy ufunc).  Each backend is a package under
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
import inspect
import json
import os
import threading

FAMILIES = ("recurrence", "conv", "softmax", "activation")

# The kernel contract: every backend's module of a family exports these functions with these
# parameters, in this order (their shapes, dtypes and equations: kernels/API.md and the
# reference implementation).  A backend module is checked against it when first loaded, so a
# missing or misnamed function is reported by `tgs backends`, not deep in a training run.
CONTRACT = {
    "recurrence": {
        "rnn_forward": ("xw", "w_hh", "h0", "nonlinearity"),
        "rnn_backward": ("dhs", "w_hh", "h0", "hs", "nonlinearity"),
        "lstm_forward": ("xw", "w_hh", "h0", "c0"),
        "lstm_backward": ("dhs", "dcT", "w_hh", "h0", "c0", "hs", "cs", "gates"),
        "gru_forward": ("xw", "w_hh", "b_hh", "h0"),
        "gru_backward": ("dhs", "w_hh", "h0", "hs", "gates", "hn"),
    },
    "conv": {
        "conv2d_forward": ("x", "w", "b", "stride", "padding", "dilation"),
        "conv2d_backward": ("dy", "x", "w", "stride", "padding", "dilation", "need_bias"),
        "maxpool2d_forward": ("x", "kernel_size", "stride", "padding"),
        "maxpool2d_backward": ("dy", "argmax", "x_shape"),
        "avgpool2d_forward": ("x", "kernel_size", "stride", "padding"),
        "avgpool2d_backward": ("dy", "x_shape", "kernel_size", "stride", "padding"),
    },
    "softmax": {
        "softmax_forward": ("x", "mask"),
        "softmax_backward": ("dy", "y"),
    },
    "activation": {
        "gelu_forward": ("x",),
        "gelu_backward": ("dy", "x", "cdf"),
    },
}

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


def contract_violations(module, family):
    """What `module` lacks of `family`'s CONTRACT: ["lstm_backward (missing)",
    "gru_forward(xw, h0) (expected xw, w_hh, b_hh, h0)", ...]; empty when it conforms."""
    problems = []
    for function, params in CONTRACT[family].items():
        found = getattr(module, function, None)
        if not callable(found):
            problems.append(f"{function} (missing)")
            continue
        try:
            actual = tuple(inspect.signature(found).parameters)
        except (TypeError, ValueError):   # a compiled callable without a signature: trust its name
            continue
        if actual != params:
            problems.append(f"{function}({', '.join(actual)}) (expected {', '.join(params)})")
    return problems


def unavailable_reason(name):
    """None when backend `name` can run here, else a sentence saying why not."""
    if name not in _reasons:
        package = BACKENDS[name][0]
        try:
            pkg = importlib.import_module(package)
            _reasons[name] = pkg.unavailable_reason() or _nonconforming_reason(name)
        except Exception as exc:
            _reasons[name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return _reasons[name]


def _nonconforming_reason(name):
    """None when every family module of backend `name` keeps the CONTRACT, else what it lacks."""
    problems = []
    for family in FAMILIES:
        try:
            _family_module(name, family)
        except BackendError as exc:
            problems.append(str(exc))
    return "; ".join(problems) or None


def _family_module(name, family):
    key = (name, family)
    if key not in _modules:
        module = importlib.import_module(f"{BACKENDS[name][0]}.{family}")
        problems = contract_violations(module, family)
        if problems:
            raise BackendError(f"{family} kernels of {name!r} break the kernel contract: {', '.join(problems)}")
        _modules[key] = module
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
            except (ImportError, BackendError):
                continue
            return candidate
    return "numpy"


def kernels(family, device="cpu"):
    """The module implementing `family` for `device` under the current backend choice."""
    return _family_module(resolve(family, device), family)


def available_backends():
    """[(name, devices, reason-or-None)] for every known backend, for `tgs backends`."""
    return [(name, devices, unavailable_reason(name)) for name, (_, devices) in BACKENDS.items()]
