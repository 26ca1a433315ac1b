"""tgs.utils: the torch.utils counterparts (data loading)."""
from . import data  # noqa: F401
