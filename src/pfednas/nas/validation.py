"""Checks on what a client sends back, before any of it reaches server state.

Only arrays and scalar records are accepted (Flower deserialises arrays with
``np.load(allow_pickle=False)``); these functions return the reason an update
must be rejected, or ``None`` when it is acceptable. Pure functions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

ArraySpec = tuple[tuple[int, ...], np.dtype]

FRACTION_METRICS = ("accuracy", "val_accuracy", "accuracy_no_ft")
MAX_EXAMPLES = 10_000_000


def array_specs(arrays: Sequence[np.ndarray]) -> list[ArraySpec]:
    return [(tuple(a.shape), np.dtype(a.dtype)) for a in arrays]


def check_arrays(arrays: Sequence[np.ndarray], expected: Sequence[ArraySpec]) -> str | None:
    """Same number, shapes and dtypes as expected; every float entry finite."""
    if len(arrays) != len(expected):
        return f"expected {len(expected)} arrays, got {len(arrays)}"
    for i, (a, (shape, dtype)) in enumerate(zip(arrays, expected, strict=True)):
        if tuple(a.shape) != tuple(shape):
            return f"array {i}: shape {tuple(a.shape)} != expected {tuple(shape)}"
        if np.dtype(a.dtype) != np.dtype(dtype):
            return f"array {i}: dtype {a.dtype} != expected {dtype}"
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            return f"array {i}: contains NaN or Inf"
    return None


def check_metrics(metrics: Mapping[str, Any], *, max_examples: int = MAX_EXAMPLES) -> str | None:
    """``num_examples`` a positive count, fractions in [0, 1], every number finite."""
    for key, value in metrics.items():
        if isinstance(value, int | float) and not math.isfinite(float(value)):
            return f"metric {key!r} is not finite ({value})"
    n = metrics.get("num_examples")
    if isinstance(n, bool) or not isinstance(n, int | float) or n != int(n):
        return f"num_examples missing or not an integer ({n!r})"
    if not 0 < n <= max_examples:
        return f"num_examples {n} outside (0, {max_examples}]"
    for key in FRACTION_METRICS:
        if key in metrics and not 0.0 <= float(metrics[key]) <= 1.0:
            return f"metric {key!r} = {metrics[key]} outside [0, 1]"
    seconds = metrics.get("train_seconds", 0.0)
    if float(seconds) < 0:
        return f"train_seconds {seconds} < 0"
    return None
