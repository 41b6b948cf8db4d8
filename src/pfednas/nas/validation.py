"""Checks on what a client sends back, before any of it reaches server state.

Only arrays and scalar records are accepted (Flower deserialises arrays with
``np.load(allow_pickle=False)``); these functions return the reason an update
must be rejected, or ``None`` when it is acceptable. Pure functions.

The reply schema lives here, in one place: :data:`KNOWN_METRICS` gives every
metric a client role may send its type and range, :data:`REQUIRED_METRICS` the
metrics each message type's reply must carry; a strategy adds what its own
replies need (``PersonalizedStrategy.required_metrics``). Array records are
checked from their metadata (count, shape, dtype, serialised size) before
anything is decoded (:func:`check_array_headers`), and the decoded arrays again
(:func:`check_arrays`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ArraySpec = tuple[tuple[int, ...], np.dtype]

MAX_EXAMPLES = 10_000_000
NPY_STYPE = "numpy.ndarray"
# np.save writes a header before the raw data: 128 bytes for the arrays here,
# padded to a multiple of 64; anything far beyond that is not a plain array.
NPY_HEADER_MAX = 4096


@dataclass(frozen=True)
class MetricSpec:
    """A scalar metric of a reply: its name, ``int`` or ``float``, and its closed range."""

    name: str
    kind: type = float
    low: float = -math.inf
    high: float = math.inf

    def problem(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"metric {self.name!r} is not a number ({value!r})"
        if not math.isfinite(float(value)):
            return f"metric {self.name!r} is not finite ({value})"
        if self.kind is int and value != int(value):
            return f"metric {self.name!r} is not an integer ({value!r})"
        if not self.low <= value <= self.high:
            return f"metric {self.name!r} = {value} outside [{self.low}, {self.high}]"
        return None


def _specs(*specs: MetricSpec) -> dict[str, MetricSpec]:
    return {s.name: s for s in specs}


KNOWN_METRICS: dict[str, MetricSpec] = _specs(
    MetricSpec("client_id", int, 0),
    MetricSpec("num_examples", int, 1, MAX_EXAMPLES),
    MetricSpec("accuracy", float, 0.0, 1.0),
    MetricSpec("val_accuracy", float, 0.0, 1.0),
    MetricSpec("accuracy_no_ft", float, 0.0, 1.0),
    MetricSpec("loss", float, 0.0),
    MetricSpec("train_loss", float, 0.0),
    MetricSpec("head_train_loss", float, 0.0),
    MetricSpec("local_loss", float, 0.0),
    MetricSpec("penalty", float, 0.0),
    MetricSpec("train_seconds", float, 0.0),
    MetricSpec("peak_memory_mb", float, 0.0),
    MetricSpec("num_params", int, 0),
    MetricSpec("sample_passes", int, 0),
    MetricSpec("phase", int, 0),
    MetricSpec("decided_edges", int, 0),
    MetricSpec("arch_code", int, 0),
)
"""Every metric a client role sends, with its type and range (optional unless required)."""

REQUIRED_METRICS: dict[str, tuple[str, ...]] = {
    "query": ("client_id",),
    "train": ("client_id", "num_examples"),
    "evaluate": ("client_id", "num_examples", "accuracy", "loss"),
}
"""What every reply of a message type carries (``flwr.app.MessageType`` values)."""


def required_specs(names: Iterable[str], known: Mapping[str, MetricSpec] = KNOWN_METRICS
                   ) -> list[MetricSpec]:
    return [known[n] for n in names]


def array_specs(arrays: Sequence[np.ndarray]) -> list[ArraySpec]:
    return [(tuple(a.shape), np.dtype(a.dtype)) for a in arrays]


@dataclass(frozen=True)
class ArrayHeader:
    """What an array record says of one array before it is decoded."""

    shape: tuple[int, ...]
    dtype: str
    stype: str
    size: int  # serialised bytes


def check_array_headers(headers: Sequence[ArrayHeader], expected: Sequence[ArraySpec]
                        ) -> str | None:
    """Count, declared shapes and dtypes, and serialised sizes, from the metadata only."""
    if len(headers) != len(expected):
        return f"expected {len(expected)} arrays, got {len(headers)}"
    total, allowed = 0, 0
    for i, (head, (shape, dtype)) in enumerate(zip(headers, expected, strict=True)):
        if head.stype != NPY_STYPE:
            return f"array {i}: serialisation {head.stype!r} is not {NPY_STYPE!r}"
        if tuple(head.shape) != tuple(shape):
            return f"array {i}: shape {tuple(head.shape)} != expected {tuple(shape)}"
        try:
            declared = np.dtype(head.dtype)
        except TypeError:
            return f"array {i}: unknown dtype {head.dtype!r}"
        if declared != np.dtype(dtype):
            return f"array {i}: dtype {head.dtype} != expected {dtype}"
        payload = math.prod(shape) * np.dtype(dtype).itemsize
        if not payload <= head.size <= payload + NPY_HEADER_MAX:
            return f"array {i}: {head.size} bytes for {payload} bytes of data"
        total, allowed = total + head.size, allowed + payload + NPY_HEADER_MAX
    if total > allowed:
        return f"{total} bytes of arrays, more than the {allowed} expected"
    return None


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


def check_metrics(metrics: Mapping[str, Any], required: Sequence[MetricSpec] | None = None,
                  known: Mapping[str, MetricSpec] = KNOWN_METRICS) -> str | None:
    """Every value a finite number; ``required`` present; each known metric in its range.

    ``required`` defaults to ``num_examples`` alone; a spec in ``required`` overrides
    the known spec of the same name (e.g. a strategy's tighter range).
    """
    required = [known["num_examples"]] if required is None else list(required)
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"metric {key!r} is not a number ({type(value).__name__})"
        if not math.isfinite(float(value)):
            return f"metric {key!r} is not finite ({value})"
    for spec in required:
        if spec.name not in metrics:
            return f"required metric {spec.name!r} missing"
    specs = {**known, **{s.name: s for s in required}}
    for key, value in metrics.items():
        if key in specs and (problem := specs[key].problem(value)) is not None:
            return problem
    return None


def examples_bound_problem(n: int, *, limit: int | None, reference: int | None,
                           tolerance: float) -> str | None:
    """``num_examples`` against what the server knows of the client.

    ``limit``: the client's partition size (simulation); ``reference``: what it
    reported first (deployment), which it may exceed by at most ``tolerance``.
    """
    if limit is not None and n > limit:
        return f"num_examples {n} exceeds the client's partition size {limit}"
    if limit is None and reference is not None and n > reference * (1.0 + tolerance):
        return (f"num_examples {n} exceeds the {reference} first reported by more than "
                f"{tolerance:.0%}")
    return None
