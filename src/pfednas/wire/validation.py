"""Checks on what a client sends back, before any of it reaches server state.

Only arrays and scalar records are accepted (Flower deserialises arrays with
``np.load(allow_pickle=False)``); these functions return the reason an update
must be rejected, or ``None`` when it is acceptable. Pure functions: whatever a
reply holds, they return a reason and raise nothing.

The reply schema lives here, in one place: :data:`KNOWN_METRICS` gives every
metric a client role may send its type and range, :data:`REQUIRED_METRICS` the
metrics each message type's reply must carry; a strategy adds what its own
replies need (``PersonalizedStrategy.required_metrics``). Array records are
checked from their metadata (count, shape, dtype, serialised size) and from
the ``.npy`` header inside each payload (:func:`npy_payload_problem`) before
anything is decoded, and the decoded arrays again (:func:`check_arrays`), each
for its role: BatchNorm statistics must be statistics (variances >= 0, both
bounded, counts >= 0), not only finite.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

MAX_EXAMPLES = 10_000_000
NPY_STYPE = "numpy.ndarray"
NPY_MAGIC = b"\x93NUMPY"
# np.save writes a header before the raw data: 128 bytes for the arrays here,
# padded to a multiple of 64; anything far beyond that is not a plain array.
NPY_HEADER_MAX = 4096

# What an array is, as the server knows it from the state_dict names it sent.
PARAM = "param"                      # weights, biases, architecture logits: |x| <= MAX_PARAM
RUNNING_MEAN = "running_mean"        # BatchNorm mean: |x| <= MAX_BN_MEAN
RUNNING_VAR = "running_var"          # BatchNorm variance: 0 <= x <= MAX_BN_VAR
BATCH_COUNT = "num_batches_tracked"  # BatchNorm counter: an integer in [0, MAX_BATCH_COUNT]
ROLES = (PARAM, RUNNING_MEAN, RUNNING_VAR, BATCH_COUNT)
MAX_BN_MEAN = 1e6
# No trained weight comes near this (those of pfednas' networks stay below 1e2); values
# far beyond it (1e30) overflow products in distillation and merges, bound or no bound.
MAX_PARAM = 1e6
MAX_BN_VAR = MAX_BN_MEAN**2
MAX_BATCH_COUNT = 10**12


class ArraySpec(NamedTuple):
    """What the server expects of one array of a reply: shape, dtype and role."""

    shape: tuple[int, ...]
    dtype: np.dtype
    role: str = PARAM


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
    MetricSpec("accuracy_ft_full", float, 0.0, 1.0),
    MetricSpec("accuracy_ft_head", float, 0.0, 1.0),
    MetricSpec("loss", float, 0.0),
    MetricSpec("train_loss", float, 0.0),
    MetricSpec("head_train_loss", float, 0.0),
    MetricSpec("local_loss", float, 0.0),
    MetricSpec("penalty", float, 0.0),
    MetricSpec("train_seconds", float, 0.0),
    MetricSpec("peak_memory_mb", float, 0.0),
    MetricSpec("num_params", int, 0),
    MetricSpec("sample_passes", int, 0),
    MetricSpec("train_macs", float, 0.0),  # the cost model's training MACs (simulated time)
    # the cost model's MACs of a request's forward-only passes besides training: measurements
    # on the validation split (a search's), the BatchNorm re-estimation before them
    MetricSpec("forward_macs", float, 0.0),
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


def array_specs(arrays: Sequence[np.ndarray], roles: Sequence[str] | None = None
                ) -> list[ArraySpec]:
    """The specs of ``arrays`` (what a reply returns of what was sent); ``roles`` per array,
    default every one a parameter."""
    roles = [PARAM] * len(arrays) if roles is None else list(roles)
    if len(roles) != len(arrays) or not set(roles) <= set(ROLES):
        raise ValueError(f"{len(arrays)} arrays need as many roles of {ROLES}, got {roles}")
    return [ArraySpec(tuple(a.shape), np.dtype(a.dtype), role)
            for a, role in zip(arrays, roles, strict=True)]


def parse_dtype(text: Any) -> np.dtype | None:
    """``np.dtype(text)`` for a plain dtype string, else None (never raises)."""
    if not isinstance(text, str) or len(text) > 64:
        return None
    try:
        return np.dtype(text)
    except Exception:  # noqa: BLE001 - numpy raises TypeError, ValueError, SyntaxError, ...
        return None


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
    for i, (head, (shape, dtype, _)) in enumerate(zip(headers, expected, strict=True)):
        if head.stype != NPY_STYPE:
            return f"array {i}: serialisation {head.stype!r} is not {NPY_STYPE!r}"
        if tuple(head.shape) != tuple(shape):
            return f"array {i}: shape {tuple(head.shape)} != expected {tuple(shape)}"
        declared = parse_dtype(head.dtype)
        if declared is None:
            return f"array {i}: unknown dtype {str(head.dtype)[:64]!r}"
        if declared != np.dtype(dtype):
            return f"array {i}: dtype {head.dtype} != expected {dtype}"
        payload = math.prod(shape) * np.dtype(dtype).itemsize
        if not payload <= head.size <= payload + NPY_HEADER_MAX:
            return f"array {i}: {head.size} bytes for {payload} bytes of data"
        total, allowed = total + head.size, allowed + payload + NPY_HEADER_MAX
    if total > allowed:
        return f"{total} bytes of arrays, more than the {allowed} expected"
    return None


def npy_payload_problem(data: Any, spec: ArraySpec) -> str | None:
    """The serialised ``.npy`` payload against the spec, from its own header, before
    ``np.load`` sees it: a ``.npy`` of version 1 or 2 (not a zip / ``.npz``), not
    pickled, its header's shape and dtype the expected ones and exactly their bytes
    after the header (a header declaring 2**48 elements is refused, nothing allocated)."""
    if not isinstance(data, bytes):
        return "payload is not bytes"
    if not data.startswith(NPY_MAGIC):
        kind = "a zip / .npz archive" if data.startswith(b"PK") else "not a .npy array"
        return f"payload is {kind}"
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(stream, max_header_size=NPY_HEADER_MAX)
        elif version == (2, 0):
            header = np.lib.format.read_array_header_2_0(stream, max_header_size=NPY_HEADER_MAX)
        else:
            return f"unsupported .npy version {version}"
    except Exception as err:  # noqa: BLE001 - a malformed header: ValueError, SyntaxError, ...
        return f"unreadable .npy header ({type(err).__name__})"
    shape, _, dtype = header
    if tuple(shape) != tuple(spec.shape):
        return f".npy header shape {tuple(shape)} != expected {tuple(spec.shape)}"
    if dtype != np.dtype(spec.dtype) or dtype.hasobject:
        return f".npy header dtype {dtype} != expected {spec.dtype}"
    payload = math.prod(spec.shape) * dtype.itemsize
    if len(data) - stream.tell() != payload:
        return f"{len(data) - stream.tell()} bytes after the .npy header for {payload}"
    return None


def role_problem(array: np.ndarray, role: str) -> str | None:
    """Whether the values of an array are those of its role (finite, statistics, counts)."""
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        return "contains NaN or Inf"
    if role == PARAM and np.issubdtype(array.dtype, np.floating) and array.size and not \
            np.abs(array).max() <= MAX_PARAM:
        return f"a parameter outside [-{MAX_PARAM:g}, {MAX_PARAM:g}]"
    if role == RUNNING_VAR and array.size and not (
            array.min() >= 0 and array.max() <= MAX_BN_VAR):
        return f"running variance outside [0, {MAX_BN_VAR:g}]"
    if role == RUNNING_MEAN and array.size and not np.abs(array).max() <= MAX_BN_MEAN:
        return f"running mean outside [-{MAX_BN_MEAN:g}, {MAX_BN_MEAN:g}]"
    if role == BATCH_COUNT and array.size and not (
            np.all(array == np.round(array)) and array.min() >= 0
            and array.max() <= MAX_BATCH_COUNT):
        return f"batch count not an integer in [0, {MAX_BATCH_COUNT}]"
    return None


def check_arrays(arrays: Sequence[np.ndarray], expected: Sequence[ArraySpec]) -> str | None:
    """Same number, shapes and dtypes as expected; values fit each array's role
    (:func:`role_problem`: every float entry finite, BatchNorm statistics in range)."""
    if len(arrays) != len(expected):
        return f"expected {len(expected)} arrays, got {len(arrays)}"
    for i, (a, spec) in enumerate(zip(arrays, expected, strict=True)):
        if not isinstance(a, np.ndarray):
            return f"array {i}: not an array ({type(a).__name__})"
        if tuple(a.shape) != tuple(spec.shape):
            return f"array {i}: shape {tuple(a.shape)} != expected {tuple(spec.shape)}"
        if np.dtype(a.dtype) != np.dtype(spec.dtype):
            return f"array {i}: dtype {a.dtype} != expected {spec.dtype}"
        if (problem := role_problem(a, spec.role)) is not None:
            return f"array {i} ({spec.role}): {problem}"
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
