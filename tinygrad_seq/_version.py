"""The package's version, written in one place: pyproject.toml's [project] table.

An installed package (editable or not) reads it from its metadata.  Imported straight from a
source tree that was never installed (PYTHONPATH=. python ...), there is no metadata, so the
version is read from the pyproject.toml beside the package; failing that it is "0+unknown"
rather than an error, since nothing should stop working over a version string.
"""
import os
import re

DISTRIBUTION = "tinygrad_seq"
UNKNOWN = "0+unknown"


def _from_source_tree():
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pyproject.toml")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    project = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    found = project and re.search(r'^version\s*=\s*"([^"]+)"', project.group(1), re.M)
    return found.group(1) if found else None


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return _from_source_tree() or UNKNOWN


__version__ = package_version()
