"""Randomness is passed in: every generator comes from ``SeedSequence([seed, *keys])``.

Keys are small non-negative integers naming the purpose (round, client, ...);
hashing them through ``SeedSequence`` avoids the collisions of ``seed + i``.
"""

from __future__ import annotations

import numpy as np
import torch

# Purpose tags, so that streams for different uses never coincide.
MODEL_INIT = 1
CLIENT_SAMPLING = 2
CLIENT_TRAIN = 3
ARCH_SAMPLING = 4
HARDWARE = 5


def numpy_rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def int_seed(seed: int, *keys: int) -> int:
    """A 63-bit integer seed derived from ``(seed, *keys)``."""
    state = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def torch_generator(seed: int, *keys: int) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(int_seed(seed, *keys))
    return gen
