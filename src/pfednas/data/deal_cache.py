"""An on-disk cache of dealt partitions: which samples each client holds.

Dealing runs ``flwr_datasets``' partitioners, and importing ``flwr_datasets`` (with
``datasets``, pandas and pyarrow) takes 2.6 s of a process's start on 2 cores. Every
process of a run deals the same partition: the ``pfednas`` command (its checks), the
ServerApp, each simulated client's Ray actor, each ClientApp process of a deployment. The
first one to deal it keeps the result in this folder; the others read it back (a few
milliseconds) and never import ``flwr_datasets``.

An entry's name hashes everything the deal depends on: the data spec, the dataset's labels
(and natural client ids) byte for byte, the versions of ``flwr_datasets``, ``datasets`` and
NumPy, and the source of the two modules that deal (:mod:`pfednas.data.partition`,
:mod:`pfednas.data.partitioners`). A change to any of them is a miss, never a stale entry.

The folder: ``$PFEDNAS_CACHE`` (``off``: no cache), else ``$XDG_CACHE_HOME/pfednas``, else
``~/.cache/pfednas``; dealt partitions go in its ``partitions/``. An entry that cannot be
read or does not fit the dataset is a miss and is rewritten; a folder that cannot be written
leaves each process dealing for itself. Writes are atomic (a temporary file, then
``os.replace``), so processes dealing at once see whole files or none.
"""

from __future__ import annotations

import functools
import hashlib
import os
import uuid
import zipfile
from collections.abc import Callable, Sequence
from contextlib import suppress
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

CACHE_ENV = "PFEDNAS_CACHE"  # the cache folder; "off": none
FORMAT = 1  # bump when what an entry holds changes: older entries become misses

Dealt = tuple[list[np.ndarray], Any]  # each client's indices, the Repair (or None)


def cache_dir(environ: dict[str, str] | os._Environ[str] = os.environ) -> Path | None:
    """The folder of dealt partitions (None: ``$PFEDNAS_CACHE=off``)."""
    value = environ.get(CACHE_ENV, "").strip()
    if value.lower() == "off":
        return None
    if value:
        return Path(value).expanduser() / "partitions"
    base = environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(base).expanduser() / "pfednas" / "partitions"


@functools.lru_cache(maxsize=1)
def _code_and_versions() -> str:
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in ("partition.py", "partitioners.py"):
        h.update((here / name).read_bytes() + b"\0")
    for package in ("flwr-datasets", "datasets", "numpy"):
        with suppress(metadata.PackageNotFoundError):
            h.update(f"{package}={metadata.version(package)}\0".encode())
    return h.hexdigest()


def entry_key(spec: object, labels: np.ndarray, clients: np.ndarray | None) -> str:
    """The name of ``spec``'s deal of these labels (and natural client ids)."""
    h = hashlib.sha256(f"{FORMAT}\0{spec!r}\0{_code_and_versions()}\0".encode())
    for array in (labels, clients):
        if array is not None:
            h.update(f"{array.dtype.str}{array.shape}".encode())
            h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:32]


def cached_deal(spec: object, labels: np.ndarray, clients: np.ndarray | None, count: int,
                deal: Callable[[], Dealt], make_repair: Callable[[int, tuple], Any],
                folder: Path | None = None) -> Dealt:
    """``deal()`` (``count`` clients' indices), read from / written to the cache folder
    (:func:`cache_dir` unless ``folder`` is given); ``make_repair(moved, received)``
    rebuilds a kept Repair."""
    folder = cache_dir() if folder is None else folder
    if folder is None:
        return deal()
    path = folder / f"{entry_key(spec, labels, clients)}.npz"
    kept = _read(path, count, labels.size, make_repair)
    if kept is not None:
        return kept
    parts, repair = deal()
    _write(path, parts, repair)
    return parts, repair


def _read(path: Path, count: int, samples: int,
          make_repair: Callable[[int, tuple], Any]) -> Dealt | None:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            if int(arrays["count"]) != count:
                return None
            parts = [np.array(arrays[f"part_{i}"]) for i in range(count)]
            received = np.array(arrays["received"])
            moved = int(arrays["moved"])
    except (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile):
        return None  # missing, truncated, not an npz, an array missing
    for part in parts:
        if part.dtype != np.int64 or part.ndim != 1 or (
                part.size and (part.min() < 0 or part.max() >= samples)):
            return None
    if received.ndim != 2 or received.shape[1:] != (2,):
        return None
    repair = None if moved < 0 else make_repair(
        moved, tuple((int(c), int(n)) for c, n in received))
    return parts, repair


def _write(path: Path, parts: Sequence[np.ndarray], repair: Any) -> None:
    arrays: dict[str, Any] = {f"part_{i}": np.asarray(p, dtype=np.int64)
                              for i, p in enumerate(parts)}
    arrays["count"] = np.asarray(len(parts))
    arrays["moved"] = np.asarray(-1 if repair is None else repair.moved)
    arrays["received"] = np.asarray(
        [] if repair is None else repair.received, dtype=np.int64).reshape(-1, 2)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with partial.open("wb") as file:
            np.savez(file, **arrays)
        os.replace(partial, path)
    except OSError:  # a folder that cannot be written: each process deals for itself
        with suppress(OSError):
            partial.unlink(missing_ok=True)
