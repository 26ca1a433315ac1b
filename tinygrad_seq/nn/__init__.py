"""Layers, losses and helpers with PyTorch's names, arguments and parameter names."""
from . import functional  # noqa: F401
from . import init, parallel, utils  # noqa: F401
from .module import *  # noqa: F401,F403
from .layers import *  # noqa: F401,F403
from .rnn import *  # noqa: F401,F403
from .conv import *  # noqa: F401,F403
from .attention import *  # noqa: F401,F403
from .transformer import *  # noqa: F401,F403
