"""The one way a model or training config goes into a checkpoint and comes back out, and the
checks its fields share (positive integers, a dropout probability)."""
from dataclasses import asdict, fields

import numpy as np


def check_positive_ints(config, names, option_names=False, prefix=""):
    """ValueError "<prefix><name> must be a positive integer, got <value>" for the first field of
    `config` in `names` that is not an integer >= 1 (a bool is not one here).  option_names
    spells the name as its command-line option does (seq-len for seq_len)."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            shown = name.replace("_", "-") if option_names else name
            raise ValueError(f"{prefix}{shown} must be a positive integer, got {value!r}")


def check_dropout(dropout, prefix=""):
    """ValueError unless 0 <= dropout < 1 (a probability of dropping, 1 would drop everything)."""
    if not 0 <= dropout < 1:
        raise ValueError(f"{prefix}dropout must be in [0, 1), got {dropout}")


class Config:
    """Mixin for dataclass configs: `to_dict()` for the checkpoint's JSON, `from_dict(d)` back.

    JSON turns tuples into lists, so lists come back as tuples; a key the dataclass does not
    have is an error naming it (a checkpoint from another version, or a typo), never ignored."""

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown fields {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
