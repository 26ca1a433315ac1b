"""NumPy/CuPy reference kernels: always available, written against `xp`."""


def unavailable_reason():
    return None
