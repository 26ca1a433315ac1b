"""Checkpoints: one .npz file holding a JSON header and named arrays, written atomically.

A checkpoint never ends up half-written: it is written to a temporary file in the same
folder, flushed to disk, then renamed over the old one (`os.replace` is atomic).  Nested
state (an optimiser's state_dict, RNG state, vocabulary, config) is stored as JSON, with
every array replaced by a reference to an entry of the archive; no pickle is ever loaded.
"""
import io
import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT = "tinygrad_seq-checkpoint"
VERSION = 1
DEFAULT_NAME = "checkpoint.npz"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt or not ours; the message is one actionable line."""


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
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path, kind=None):
    """Read a checkpoint written by save_checkpoint; `kind` (if given) must match its 'kind'."""
    path = resolve_path(path)
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path}: give a run directory from `--out` or a .npz checkpoint file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "__header__" not in archive.files:
                raise CheckpointError(f"{path} is not a tinygrad_seq checkpoint (no header); was it written by another program?")
            header = json.loads(archive["__header__"].tobytes().decode())
            arrays = {name: archive[name] for name in archive.files if name != "__header__"}
    except CheckpointError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is corrupt or not a tinygrad_seq checkpoint ({type(exc).__name__}); "
                              "retrain or point at another checkpoint") from None
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a tinygrad_seq checkpoint (format {header.get('format')!r})")
    if header.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} was written by a newer tinygrad_seq (version {header['version']}); upgrade to read it")
    state = _unflatten(header["state"], arrays)
    if kind is not None and state.get("kind") != kind:
        raise CheckpointError(f"{path} holds a {state.get('kind')!r} model, not a {kind!r} one")
    return state
