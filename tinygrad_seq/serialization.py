"""tgs.save / tgs.load: tensors, arrays and nested containers of them in one .npz file.

The file is the checkpoints' layout (see checkpoint.py): a JSON header describing the object,
with each tensor or array stored as a named entry of the archive, and never pickle, so loading
a file runs no code.  Unlike a checkpoint it round-trips what torch.save users put in it:
Tensors come back as Tensors, tuples as tuples, and dicts keep non-string keys (an optimiser's
state_dict is keyed by integers).  Writing to a path is atomic (temporary file, then rename).
"""
import io
import json
import os
import zipfile

import numpy as np

from .checkpoint import write_atomically
from .tensor import Tensor

FORMAT = "tinygrad_seq-save"
VERSION = 1


def _encode(obj, arrays):
    """JSON-able description of `obj`, with its arrays moved into `arrays` as a0, a1, ..."""
    if isinstance(obj, Tensor):
        name = f"a{len(arrays)}"
        arrays[name] = obj.numpy()
        return {"__tensor__": name}
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biufc":
            raise TypeError(f"tgs.save: cannot store an array of dtype {obj.dtype} without pickle")
        name = f"a{len(arrays)}"
        arrays[name] = obj
        return {"__array__": name}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        if isinstance(obj, float) and not np.isfinite(obj):
            return {"__float__": repr(obj)}
        return obj
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and not any(k.startswith("__") and k.endswith("__") for k in obj):
            return {k: _encode(v, arrays) for k, v in obj.items()}
        return {"__items__": [[_encode(k, arrays), _encode(v, arrays)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, arrays) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, arrays) for v in obj]
    raise TypeError(f"tgs.save: cannot store a {type(obj).__name__} (no pickle is used); save tensors, arrays, "
                    "numbers, strings, None and dicts/lists/tuples of them, e.g. model.state_dict()")


def _decode(tree, arrays, device):
    if isinstance(tree, list):
        return [_decode(v, arrays, device) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "__tensor__" in tree:
        return Tensor(arrays[tree["__tensor__"]], dtype=arrays[tree["__tensor__"]].dtype, device=device)
    if "__array__" in tree:
        return arrays[tree["__array__"]]
    if "__float__" in tree:
        return float(tree["__float__"])
    if "__tuple__" in tree:
        return tuple(_decode(v, arrays, device) for v in tree["__tuple__"])
    if "__items__" in tree:
        return {_hashable(_decode(k, arrays, device)): _decode(v, arrays, device) for k, v in tree["__items__"]}
    return {k: _decode(v, arrays, device) for k, v in tree.items()}


def _hashable(key):
    return tuple(_hashable(k) for k in key) if isinstance(key, (list, tuple)) else key


def save(obj, f):
    """Write `obj` (a state_dict, a tensor, or dicts/lists/tuples of tensors, arrays, numbers and
    strings) to the path or binary file `f`, as torch.save does; no pickle."""
    arrays = {}
    header = {"format": FORMAT, "version": VERSION, "object": _encode(obj, arrays)}
    buffer = io.BytesIO()
    np.savez(buffer, __header__=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **arrays)
    if hasattr(f, "write"):
        f.write(buffer.getvalue())
    else:
        write_atomically(f, buffer.getvalue())


def load(f, map_location=None, weights_only=True, **kwargs):
    """Read what save() wrote (a path or a binary file); tensors go to `map_location` ('cpu',
    'cuda' or a tgs.device; by default the CPU)."""
    name = getattr(f, "name", f)
    if not hasattr(f, "read") and not os.path.exists(os.fspath(f)):
        raise FileNotFoundError(f"tgs.load: no file {os.fspath(f)}")
    try:
        archive = np.load(f, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):   # a bare .npy array
            raise ValueError("a single array")
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"tgs.load: {name} is corrupt or not written by tgs.save ({type(exc).__name__}); "
                         "a file from torch.save (pickle) cannot be read: convert it with numpy first") from None
    with archive:
        if "__header__" not in archive.files:
            raise ValueError(f"tgs.load: {name} was not written by tgs.save (no header)")
        try:
            header = json.loads(archive["__header__"].tobytes().decode())
            arrays = {key: archive[key] for key in archive.files if key != "__header__"}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError, UnicodeDecodeError) as exc:
            raise ValueError(f"tgs.load: {name} is corrupt ({type(exc).__name__}); save it again") from None
    if header.get("format") != FORMAT:
        raise ValueError(f"tgs.load: {name} is not a tgs.save file (format {header.get('format')!r}); "
                         "checkpoints of `tgs train` are read with tinygrad_seq.checkpoint.load_checkpoint")
    if header.get("version", 0) > VERSION:
        raise ValueError(f"tgs.load: {name} was written by a newer tinygrad_seq (version {header['version']})")
    device = None if map_location is None else str(map_location)
    return _decode(header["object"], arrays, device)
