"""One seeded random generator for the whole engine.

Random numbers are drawn on the host and moved to the tensor's device, so a seed gives
the same weights, dropout masks and samples on the CPU and on the GPU.
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

_generator = [np.random.default_rng()]


def manual_seed(seed: int) -> None:
    """Seed every random choice the engine makes (weights, dropout, sampling, shuffles)."""
    _generator[0] = np.random.default_rng(int(seed))


def generator() -> np.random.Generator:
    return _generator[0]


def get_state() -> Dict[str, Any]:
    return _generator[0].bit_generator.state


def set_state(state: Dict[str, Any]) -> None:
    _generator[0].bit_generator.state = state
