"""The kernel registry: the one place where a hot loop is bound to an implementation.

Eight families of hot loops have kernels: `recurrence` (whole-sequence RNN/GRU/LSTM
forward and backward), `conv` (convolution and pooling forward and backward),
`softmax` (masked softmax and log-softmax, forward and backward), `activation` (the exact GELU, whose erf
is too slow as a NumPy/SciPy ufunc, and ReLU, which NumPy runs on one core), `matmul` (every matrix product of the engine, so
that the GEMMs can run on the same thread team as the other kernels), `optim` (Adam's and
AdamW's parameter update, one fused pass where the array code makes eight),
`attention` (fused scaled dot-product attention, forward and backward: the L x S scores
never leave the kernel) and `normalization` (LayerNorm forward and backward, one row at a
time with the row in cache, where the array code makes eight passes each way).  Each backend is a package under
`tinygrad_seq.kernels` with one module per family; every module of a family exposes the
functions that CONTRACT below names, with its parameters (checked when the module is first
loaded); their shapes, dtypes and equations are kernels/API.md and the NumPy reference in
`tinygrad_seq/kernels/reference/`.

Which backend runs is chosen, most specific first, by
    with tgs.backend("numba"): ...      # per block
    tgs.set_backend("cython")           # per process (the CLI's --backend)
    TGS_BACKEND=numpy                   # environment
and otherwise "auto": the fastest available backend for the array's device.

What "fastest" means is measured, not assumed: a choice table maps each device to the winning
backend of each family,

    {"cpu": {"recurrence": "cython", "conv": "cython", "softmax": "numba", "activation": "cython",
             "matmul": "numpy", "optim": "cython", "attention": "cython", "normalization": "cython"},
     "cuda": {"recurrence": "cuda", "conv": "cuda", "optim": "cuda"}}

The package ships one (tinygrad_seq/data/auto_backend.json, measured by its developers); a
user's own measurement (`tgs bench --write-choice`, or `save_auto_choices`) goes to
$XDG_CONFIG_HOME/tinygrad_seq/auto_backend.json (~/.config/... by default), never into the
installed package, and its entries win over the shipped ones.  A family in neither, or a winner
that cannot run here, falls back to AUTO_ORDER.

Nothing here imports numba, Cython modules or CuPy until a kernel is first asked for.
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import os
import threading
import time
from types import ModuleType
from typing import Dict, Iterator, List, Optional, Tuple

FAMILIES = ("recurrence", "conv", "softmax", "activation", "matmul", "optim",
            "attention", "normalization")

# The kernel contract: every backend's module of a family exports these functions with these
# parameters, in this order (their shapes, dtypes and equations: kernels/API.md and the
# reference implementation).  A backend module is checked against it when first loaded, so a
# missing or misnamed function is reported by `tgs backends`, not deep in a training run.
CONTRACT = {
    "recurrence": {
        "rnn_forward": ("xw", "w_hh", "h0", "nonlinearity", "hs_out"),
        "rnn_backward": ("dhs", "w_hh", "h0", "hs", "nonlinearity"),
        "lstm_forward": ("xw", "w_hh", "h0", "c0", "hs_out"),
        "lstm_forward_xh": ("xh", "w_x", "w_hh", "c0"),
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
        "log_softmax_forward": ("x",),
        "log_softmax_backward": ("dy", "y"),
    },
    "activation": {
        "gelu_forward": ("x",),
        "gelu_backward": ("dy", "x", "cdf"),
        "relu_forward": ("x",),
        "relu_backward": ("dy", "y"),
    },
    "matmul": {
        "matmul": ("a", "b"),
    },
    "optim": {
        "adam_update": ("param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "lr", "beta1", "beta2",
                        "eps", "weight_decay", "decoupled", "step"),
    },
    "attention": {
        "attention_forward": ("q", "k", "v", "scale", "causal", "out"),
        "attention_backward": ("dout", "q", "k", "v", "out", "lse", "scale", "causal", "dq", "dk", "dv"),
    },
    "normalization": {
        "layer_norm_forward": ("x", "weight", "bias", "eps"),
        "layer_norm_backward": ("dy", "x", "weight", "mean", "rstd", "need_affine"),
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
CHOICE_TABLE = os.path.join(os.path.dirname(__file__), "data", "auto_backend.json")  # the shipped default

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


def current() -> str:
    """The backend name in force here: a `with backend(...)` block, else the process choice."""
    stack = getattr(_state, "stack", None)
    return stack[-1] if stack else _check_name(_process_choice[0])


def set_backend(name: str) -> None:
    """Choose the backend for the whole process ('auto', 'numpy', 'numba', 'cython', 'cuda')."""
    _process_choice[0] = _check_name(name.lower())


@contextlib.contextmanager
def backend(name: str) -> Iterator[None]:
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


def unavailable_reason(name: str) -> Optional[str]:
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


def user_choice_table() -> str:
    """Where this user's measured choices live: $XDG_CONFIG_HOME/tinygrad_seq/auto_backend.json,
    with ~/.config standing in for an unset (or relative, as the XDG spec says) XDG_CONFIG_HOME."""
    config = os.environ.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(config):
        config = os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(config, "tinygrad_seq", "auto_backend.json")


def _read_table(path):
    try:
        with open(path) as f:
            table = json.load(f)
    except (OSError, ValueError):
        return {}
    return table if isinstance(table, dict) else {}


def _auto_choices():
    """The shipped table with the user's entries laid over it, family by family.  Cached, and
    read afresh when CHOICE_TABLE or the variables that locate the user's table change."""
    key = (CHOICE_TABLE, os.environ.get("XDG_CONFIG_HOME"), os.environ.get("HOME"))
    cache = getattr(_auto_choices, "cache", None)
    if cache is None or cache[0] != key:
        merged = {}
        for path in (CHOICE_TABLE, user_choice_table()):
            for device, winners in _read_table(path).items():
                if isinstance(winners, dict):
                    merged.setdefault(device, {}).update(winners)
        _auto_choices.cache = cache = (key, merged)
    return cache[1]


def save_auto_choices(device: str, winners: Dict[str, str],
                      path: Optional[str] = None) -> Dict[str, Dict[str, str]]:
    """Record {family: backend} as `auto`'s choice on `device` in the user's table (or `path`),
    keeping every other entry; returns that file's whole table.  The benchmark that measured
    the winners calls this."""
    unknown = [f"{family}={name}" for family, name in winners.items()
               if family not in FAMILIES or name not in BACKENDS or device not in BACKENDS[name][1]]
    if unknown:
        raise BackendError(f"not a backend of a kernel family on {device!r}: {', '.join(unknown)}")
    path = path or user_choice_table()
    table = _read_table(path)
    table.setdefault(device, {}).update(winners)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # Written beside and renamed over: a reader never sees half a table.
    partial = f"{path}.{os.getpid()}.tmp"
    with open(partial, "w") as f:
        json.dump(table, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(partial, path)
    _auto_choices.cache = None          # read again on the next resolve()
    return table


def resolve(family: str, device: str = "cpu") -> str:
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


def kernels(family: str, device: str = "cpu") -> ModuleType:
    """The module implementing `family` for `device` under the current backend choice (while an
    observe_kernels block runs, a stand-in whose functions report each call)."""
    module = _family_module(resolve(family, device), family)
    return _ObservedModule(module, family, tuple(_observers)) if _observers else module


# Callables told of every kernel call while an observe_kernels block runs (a profiler).
_observers = []


@contextlib.contextmanager
def observe_kernels(observer) -> Iterator[None]:
    """Within the block, observer(family, function_name, args, seconds) runs after every call of a
    kernel function that kernels() hands out (`tgs bench --profile` times the kernels this way;
    on a GPU the seconds are the launch's, not the device's)."""
    _observers.append(observer)
    try:
        yield
    finally:
        _observers.remove(observer)


class _ObservedModule:
    """A kernel module whose functions time each call and report it to the observers."""

    def __init__(self, module, family, observers):
        self._module, self._family, self._observers = module, family, observers

    def __getattr__(self, name):
        found = getattr(self._module, name)
        if not callable(found) or name not in CONTRACT[self._family]:
            return found

        def observed(*args, **kwargs):
            start = time.perf_counter()
            result = found(*args, **kwargs)
            seconds = time.perf_counter() - start
            for observer in self._observers:
                observer(self._family, name, args, seconds)
            return result
        return observed


def available_backends() -> List[Tuple[str, Tuple[str, ...], Optional[str]]]:
    """[(name, devices, reason-or-None)] for every known backend, for `tgs backends`."""
    return [(name, devices, unavailable_reason(name)) for name, (_, devices) in BACKENDS.items()]
