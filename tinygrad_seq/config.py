"""The one way a model or training config goes into a checkpoint and comes back out."""
from dataclasses import asdict, fields


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
