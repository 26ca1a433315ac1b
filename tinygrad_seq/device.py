"""Where arrays live: NumPy on the CPU, CuPy on the GPU.

Ops are written once against `xp`, the array module of their data (Chainer's idea),
so nothing here imports CuPy unless a GPU array is actually asked for.
"""
import numpy as np

_cupy = None
_cupy_error = None


def cupy_or_none():
    """The cupy module if it imports and sees a GPU, else None (the reason is kept)."""
    global _cupy, _cupy_error
    if _cupy is None and _cupy_error is None:
        try:
            import cupy
            cupy.cuda.runtime.getDeviceCount()
            _cupy = cupy
        except Exception as exc:  # ImportError, or CUDA driver/runtime errors
            _cupy_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return _cupy


def cupy_unavailable_reason():
    cupy_or_none()
    return _cupy_error


def is_cupy_array(a):
    return type(a).__module__.startswith("cupy")


def xp_of(a):
    """The array module (numpy or cupy) that owns array `a`."""
    if is_cupy_array(a):
        import cupy
        return cupy
    return np


def device_of(a):
    return "cuda" if is_cupy_array(a) else "cpu"


def check_same_device(op, arrays):
    """Every array lives on one device, else a RuntimeError naming `op` and both devices:
    NumPy and CuPy arrays do not mix, and a silent host/device copy would hide a slow path."""
    first = None
    for a in arrays:
        device = device_of(a)
        if first is None:
            first = device
        elif device != first:
            raise RuntimeError(f"{op}: tensors on different devices: {first} and {device}; "
                               "move one with .to(device)")


def normalize_device(device):
    """'cpu', 'cuda', 'cuda:0' (or None for cpu) -> 'cpu' | 'cuda'."""
    if device is None:
        return "cpu"
    name = str(device).split(":")[0].lower()
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}: use 'cpu' or 'cuda'")
    return name


def to_device(a, device):
    """Copy array `a` to 'cpu' (NumPy) or 'cuda' (CuPy); no copy when already there."""
    device = normalize_device(device)
    if device == "cpu":
        return a.get() if is_cupy_array(a) else a
    cp = cupy_or_none()
    if cp is None:
        raise RuntimeError(f"device 'cuda' is not available ({cupy_unavailable_reason()}); "
                           "install the gpu extra (pip install tinygrad_seq[gpu]) on a machine with a GPU")
    return a if is_cupy_array(a) else cp.asarray(a)


# ------------------------------------------------------------------ where an array's elements lie
def address_of(a):
    """The address of a's first element (of the view, not of its base)."""
    return a.data.ptr if is_cupy_array(a) else a.__array_interface__["data"][0]


def allocation_of(a):
    """What owns a's memory: every view of one array (slices, transposes, as_strided) shares it."""
    if is_cupy_array(a):
        return a.data.mem
    while getattr(a, "base", None) is not None:
        a = a.base
    return a


def rows_in_place(a):
    """Whether a compiled kernel can read a's rows where they lie: unit stride along the last
    axis (or rows of one element) and every stride a whole number of elements."""
    return (a.shape[-1] <= 1 or a.strides[-1] == a.itemsize) and not any(s % a.itemsize for s in a.strides)


def strided_view(a, shape, strides):
    """A view from a's first element with this shape and these strides (in bytes); the caller
    makes sure that every element it reaches lies in a's allocation."""
    return xp_of(a).lib.stride_tricks.as_strided(a, shape, strides)
