"""The pool samples no client holds (a server-side transfer set's source)."""

from __future__ import annotations

import numpy as np

from pfednas.data.partition import partition
from pfednas.data.registry import load_raw
from pfednas.data.spec import DataSpec


def unheld_indices(spec: DataSpec) -> np.ndarray:
    """Pool samples in no client's partition (sorted): partitions stay those of every method."""
    total = len(load_raw(spec.name, spec.root, seed=spec.seed,
                         synthetic_samples=spec.synthetic_samples).labels)
    return np.setdiff1d(np.arange(total), np.concatenate(partition(spec)))
