"""Checkpoints: one .npz file holding a JSON header and named arrays, written atomically.

A checkpoint never ends up half-written: it is written to a temporary file in the same
folder (`.tmp-*.npz`), flushed to disk, then renamed over the old one (`os.replace` is
atomic).  A process killed during a save leaves only the temporary; the next run that takes
the folder's lock removes it (`remove_stale_temporaries`).  The file gets the permissions
of any other new file (0644 under umask 022), not mkstemp's private 0600.

Nested state (an optimiser's state_dict, RNG state, vocabulary, config) is stored as JSON,
with every array replaced by a reference to an entry of the archive; no pickle is ever loaded.

Reading trusts nothing: only the archive members the header names are read, each one's size
is bounded (from the zip directory and the .npy header) before any byte of it is read, and a
malformed header or state (wrong types, missing entries, nesting deeper than any checkpoint
writes, arrays of the wrong shape or dtype) is one `CheckpointError` naming the file and the
reason.  The kinds check their arrays against their model config with `check_module_state`
and `check_optimizer_state`, inside `malformed_as_checkpoint_error(path)`.
"""
import contextlib
import glob
import io
import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT = "tinygrad_seq-checkpoint"
VERSION = 1
DEFAULT_NAME = "checkpoint.npz"
TEMPORARY_PATTERN = ".tmp-*.npz"
MAX_DEPTH = 64                       # no checkpoint this library writes nests deeper
MAX_HEADER_BYTES = 64 * 2 ** 20      # the JSON header
MAX_MEMBER_BYTES = 8 * 2 ** 30       # one array; raise it for models larger than that


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt or not ours; the message is one actionable line."""


# ---------------------------------------------------------------------------- the tree <-> JSON + arrays
def _flatten(tree, arrays, prefix):
    """JSON-able copy of `tree` with arrays moved into `arrays` under path-like keys."""
    if isinstance(tree, dict):
        return {str(k): _flatten(v, arrays, f"{prefix}/{k}") for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_flatten(v, arrays, f"{prefix}/{i}") for i, v in enumerate(tree)]
    if hasattr(tree, "numpy") and callable(tree.numpy):  # a Tensor
        tree = tree.numpy()
    if isinstance(tree, np.ndarray):
        arrays[prefix] = tree
        return {"__array__": prefix}
    if isinstance(tree, np.generic):
        return tree.item()
    return tree


def _references(tree, found, depth=0):
    """Collect the archive names the header refers to (bounded depth, strings only)."""
    if depth > MAX_DEPTH:
        raise ValueError(f"the header nests deeper than {MAX_DEPTH} levels")
    if isinstance(tree, dict):
        if set(tree) == {"__array__"}:
            if not isinstance(tree["__array__"], str):
                raise ValueError("an array reference is not a name")
            found.add(tree["__array__"])
            return
        for value in tree.values():
            _references(value, found, depth + 1)
    elif isinstance(tree, list):
        for value in tree:
            _references(value, found, depth + 1)


def _unflatten(tree, arrays):
    if isinstance(tree, dict):
        if set(tree) == {"__array__"}:
            return arrays[tree["__array__"]]
        return {k: _unflatten(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_unflatten(v, arrays) for v in tree]
    return tree


def resolve_path(path):
    """A run directory means the checkpoint inside it; a file means itself."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return os.path.join(path, DEFAULT_NAME)
    return path


# ---------------------------------------------------------------------------- writing
def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_checkpoint(path, state):
    """Write `state` (a dict: kind, config, model state_dict, optimiser state, ...) atomically."""
    path = resolve_path(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    arrays = {}
    header = _flatten(dict(state), arrays, "state")
    header = {"format": FORMAT, "version": VERSION, "state": header}
    buffer = io.BytesIO()
    np.savez(buffer, __header__=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **arrays)
    write_atomically(path, buffer.getvalue())
    return path


def write_atomically(path, payload, suffix=".npz"):
    """Write the bytes `payload` to `path` so that it is never seen half-written: into a
    temporary `.tmp-*` file of the same folder, flushed to disk, then renamed over `path`; a
    failure removes the temporary.  The file gets the permissions of any new file (the umask),
    not mkstemp's private 0600."""
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_stale_temporaries(folder):
    """Delete the `.tmp-*.npz` files a killed save left in `folder`; call it only while holding
    the folder's run lock (no save of ours can be under way).  Returns the paths removed."""
    removed = []
    for tmp in glob.glob(os.path.join(glob.escape(os.fspath(folder)), TEMPORARY_PATTERN)):
        try:
            os.unlink(tmp)
            removed.append(tmp)
        except FileNotFoundError:
            pass
    return removed


# ---------------------------------------------------------------------------- reading
def _read_member(archive, name, path):
    """One .npy member, its size checked against the zip directory and its own header first."""
    try:
        info = archive.getinfo(name + ".npy")
    except KeyError:
        raise CheckpointError(f"{path} is corrupt: the header names an array {name!r} the archive does not hold; "
                              "retrain or point at another checkpoint") from None
    limit = MAX_HEADER_BYTES if name == "__header__" else MAX_MEMBER_BYTES
    if info.file_size > limit:
        raise CheckpointError(f"{path}: the array {name!r} declares {info.file_size:,} bytes, more than the "
                              f"{limit:,} a checkpoint member may hold; it is not a checkpoint to trust")
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        if dtype.hasobject:
            raise CheckpointError(f"{path}: the array {name!r} holds Python objects; checkpoints never do "
                                  "(and pickles are not loaded)")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count < 0 or count * dtype.itemsize > info.file_size:
            raise CheckpointError(f"{path} is corrupt: the array {name!r} claims {count * dtype.itemsize:,} bytes "
                                  f"in a member of {info.file_size:,}")
        data = f.read(count * dtype.itemsize)
        if len(data) != count * dtype.itemsize:
            raise CheckpointError(f"{path} is corrupt: the array {name!r} is truncated")
    array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return array.copy()


def load_checkpoint(path, kind=None):
    """Read a checkpoint written by save_checkpoint; `kind` (if given) must match its 'kind'."""
    path = resolve_path(path)
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path}: give a run directory from `--out` or a .npz checkpoint file")
    if os.path.isdir(path):
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    try:
        with zipfile.ZipFile(path) as archive:
            if "__header__.npy" not in archive.namelist():
                raise CheckpointError(f"{path} is not a tinygrad_seq checkpoint (no header); "
                                      "was it written by another program?")
            raw = _read_member(archive, "__header__", path)
            header = json.loads(raw.tobytes().decode())
            if not isinstance(header, dict):
                raise CheckpointError(f"{path} is not a tinygrad_seq checkpoint (its header is a "
                                      f"{type(header).__name__}, not an object)")
            if header.get("format") != FORMAT:
                raise CheckpointError(f"{path} is not a tinygrad_seq checkpoint (format {header.get('format')!r})")
            version = header.get("version")
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise CheckpointError(f"{path} is corrupt: its version is {version!r}, not a positive integer")
            if version > VERSION:
                raise CheckpointError(f"{path} was written by a newer tinygrad_seq (version {version}); "
                                      "upgrade to read it")
            if not isinstance(header.get("state"), dict):
                raise CheckpointError(f"{path} is corrupt: it holds no state object")
            names = set()
            _references(header["state"], names)
            arrays = {name: _read_member(archive, name, path) for name in sorted(names)}
    except CheckpointError:
        raise
    except RecursionError:
        raise CheckpointError(f"{path} is corrupt: its header nests too deeply") from None
    except (OSError, ValueError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, KeyError, UnicodeDecodeError,
            NotImplementedError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path} is corrupt or not a tinygrad_seq checkpoint ({reason}); "
                              "retrain or point at another checkpoint") from None
    state = _unflatten(header["state"], arrays)
    if kind is not None and state.get("kind") != kind:
        raise CheckpointError(f"{path} holds a {state.get('kind')!r} model, not a {kind!r} one")
    return state


# ---------------------------------------------------------------------------- validating a state
@contextlib.contextmanager
def malformed_as_checkpoint_error(path, what="checkpoint"):
    """Within the block, the errors that reading a malformed state raises (a missing entry, a
    wrong type, a bad shape, a config a model refuses) become one CheckpointError naming `path`."""
    try:
        yield
    except CheckpointError:
        raise
    except (KeyError, TypeError, IndexError, AttributeError, ValueError, RuntimeError, RecursionError,
            OverflowError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, KeyError):
            reason = f"missing entry {reason}"
        raise CheckpointError(f"{path} is a malformed {what} ({type(exc).__name__}: {reason}); "
                              "retrain or point at another checkpoint") from None


def require(condition, path, reason):
    if not condition:
        raise CheckpointError(f"{path} is a malformed checkpoint: {reason}; retrain or point at another checkpoint")


def check_module_state(model, arrays, path):
    """Every entry of model.state_dict() is in `arrays` as a numeric array of the same shape, and
    nothing else is."""
    require(isinstance(arrays, dict), path, "its model state is not a table of arrays")
    own = model.state_dict()
    missing = sorted(set(own) - set(arrays))
    unexpected = sorted(set(arrays) - set(own))
    require(not missing, path, f"the model weights {missing[:3]} are missing")
    require(not unexpected, path, f"it holds weights {unexpected[:3]} this model does not have")
    for name, value in own.items():
        saved = arrays[name]
        require(isinstance(saved, np.ndarray) and saved.dtype.kind in "fiub", path,
                f"the weight {name!r} is not a numeric array")
        require(tuple(saved.shape) == tuple(value.shape), path,
                f"the weight {name!r} has shape {tuple(saved.shape)}, the model needs {tuple(value.shape)}")


def check_optimizer_state(state, params, path):
    """An optimiser state_dict whose per-parameter arrays match the parameters' shapes."""
    require(isinstance(state, dict) and isinstance(state.get("state"), dict)
            and isinstance(state.get("param_groups"), list), path, "its optimiser state is not a state_dict")
    count = len(params)
    for group in state["param_groups"]:
        require(isinstance(group, dict) and isinstance(group.get("params"), list), path,
                "an optimiser parameter group is malformed")
    for key, values in state["state"].items():
        require(str(key).isdigit() and int(key) < count, path, f"the optimiser state names parameter {key!r}")
        require(isinstance(values, dict), path, f"the optimiser state of parameter {key} is not a table")
        shape = tuple(params[int(key)].shape)
        for name, value in values.items():
            if isinstance(value, np.ndarray) and value.ndim > 0:
                require(tuple(value.shape) == shape, path,
                        f"the optimiser's {name!r} of parameter {key} has shape {tuple(value.shape)}, "
                        f"the parameter {shape}")


def check_step(step, path):
    require(isinstance(step, int) and not isinstance(step, bool) and step >= 0, path,
            f"its step {step!r} is not a non-negative integer")
    return step


def all_finite(arrays):
    """True when every array of a model state (a dict of arrays or Tensors) is finite."""
    for value in arrays.values():
        value = value.numpy() if hasattr(value, "numpy") and callable(value.numpy) else np.asarray(value)
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            return False
    return True
