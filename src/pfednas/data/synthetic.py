"""A generated, learnable image dataset for fast tests: class-conditional Gaussian blobs.

Each class owns a prototype image made of two Gaussian bumps (random centres
and signs, drawn from the seed). A sample is its class prototype with the
bump centres jittered, scaled by a random amplitude, plus pixel noise. The
classes overlap enough that the task is not trivial, and a linear model
separates them well above chance.
"""

from __future__ import annotations

import numpy as np

from pfednas.data.arrays import RawImages
from pfednas.seeding import SYNTHETIC_IMAGES, numpy_rng

SYNTHETIC_SIDE = 8
SYNTHETIC_CLASSES = 10
DEFAULT_SYNTHETIC_SAMPLES = 2000
_BUMPS = 2
_WIDTH = 1.3
_JITTER = 0.6
_NOISE = 0.35


def _bumps(centres: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """Images ``(N, side, side)`` from bump centres ``(N, B, 2)`` and signs ``(N, B)``."""
    grid = np.arange(SYNTHETIC_SIDE, dtype=np.float64)
    dy = grid[None, None, :, None] - centres[:, :, 0, None, None]
    dx = grid[None, None, None, :] - centres[:, :, 1, None, None]
    bumps = np.exp(-(dy**2 + dx**2) / (2 * _WIDTH**2))
    return np.einsum("nb,nbhw->nhw", signs, bumps)


def make_synthetic(seed: int, num_samples: int = DEFAULT_SYNTHETIC_SAMPLES) -> RawImages:
    """``num_samples`` float32 images ``(N, 1, 8, 8)``, labels balanced over 10 classes."""
    rng = numpy_rng(seed, SYNTHETIC_IMAGES)
    centres = rng.uniform(1.0, SYNTHETIC_SIDE - 2.0, size=(SYNTHETIC_CLASSES, _BUMPS, 2))
    signs = rng.choice([-1.0, 1.0], size=(SYNTHETIC_CLASSES, _BUMPS))
    labels = rng.permutation(np.arange(num_samples) % SYNTHETIC_CLASSES).astype(np.int64)
    jitter = rng.normal(0.0, _JITTER, size=(num_samples, _BUMPS, 2))
    amplitude = rng.uniform(0.7, 1.3, size=(num_samples, 1))
    images = _bumps(centres[labels] + jitter, signs[labels] * amplitude)
    images += rng.normal(0.0, _NOISE, size=images.shape)
    return RawImages(images=images[:, None].astype(np.float32), labels=labels)
