"""A deployed node's on-disk cache of what every message would otherwise recompute.

Flower 1.41 starts a fresh ClientApp process for every message (``flwr-clientapp``
answers one task and exits), so without a cache each message composes the Hydra
config again and rebuilds the node's splits (reading and partitioning the whole
dataset). With a cache folder, a node keeps

* ``config-<key>.json``: the composed config of a run; ``key`` hashes the run
  config's overrides and the config files of the installed pfednas (``conf/``);
* ``client-<id>-<key>.npz``: its train / val / test splits; ``key`` hashes the data
  spec (dataset, root, seed, partitioning, client count) and the client id, plus,
  for a silo, its folder and the newest modification time in it.

The folder is the operator's, never the run config's: the node config ``cache-dir``,
else ``$PFEDNAS_NODE_CACHE`` of the node's environment; with neither, nothing is
written and each process recomputes (in-process caches still serve a long-lived
process, e.g. a simulation's Ray actor). Delete the folder to drop the cache, e.g.
after changing the dataset files under a node's ``data-root``.

An entry that cannot be read (truncated, corrupt, from another version) is a miss:
it is rebuilt and replaced, never an error; nor is a folder that cannot be written
(the node then recomputes). Writes are atomic (a temporary file in the same folder,
then ``os.replace``), so nodes sharing a folder see whole files or none.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import uuid
import zipfile
from collections.abc import Callable
from contextlib import suppress
from logging import WARNING
from pathlib import Path
from typing import IO, Any

import numpy as np
from flwr.app import Context
from flwr.common import log
from omegaconf import DictConfig, OmegaConf

from pfednas.config import compose, conf_dir
from pfednas.data import ArrayDataset, ClientData

CACHE_DIR_KEY = "cache-dir"   # node config: the node's cache folder
CACHE_ENV = "PFEDNAS_NODE_CACHE"  # the same, from the node's environment
FORMAT = 1  # bump when what a cache file holds changes: older entries become misses
SPLITS = ("train", "val", "test")


def node_cache_dir(context: Context) -> Path | None:
    """The node's cache folder (node config ``cache-dir``, else ``$PFEDNAS_NODE_CACHE``)."""
    value = str(context.node_config.get(CACHE_DIR_KEY, "")).strip()
    value = value or os.environ.get(CACHE_ENV, "").strip()
    return Path(value).expanduser() if value else None


def digest(*parts: object) -> str:
    """A short stable hash of ``repr(parts)`` (and the cache format)."""
    return hashlib.sha256(repr((FORMAT, *parts)).encode()).hexdigest()[:24]


@functools.lru_cache(maxsize=1)
def conf_fingerprint() -> str:
    """Hash of every config file of the installed pfednas: a change is a config miss."""
    root = conf_dir()
    files = sorted(p for p in root.rglob("*.yaml") if p.is_file())
    h = hashlib.sha256()
    for path in files:
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


# -- the composed config -----------------------------------------------------------------------
def composed_config(overrides: tuple[str, ...], cache: Path | None) -> DictConfig:
    """``compose(overrides)``, read from / written to ``cache`` when one is given."""
    if cache is None:
        return compose(overrides)
    key = digest(overrides, conf_fingerprint())
    path = cache / f"config-{key}.json"
    cached = _read_config(path, key)
    if cached is not None:
        return cached
    cfg = compose(overrides)
    text = json.dumps({"key": key, "config": OmegaConf.to_container(cfg, resolve=True)})
    _write_atomic(path, lambda f: f.write(text.encode()))
    return cfg


def _read_config(path: Path, key: str) -> DictConfig | None:
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):  # missing, truncated, not JSON / UTF-8
        return None
    if not isinstance(saved, dict) or saved.get("key") != key:
        return None
    config = saved.get("config")
    if not isinstance(config, dict):
        return None
    cfg = OmegaConf.create(config)
    OmegaConf.set_struct(cfg, True)  # as Hydra's compose returns it
    return cfg


# -- the node's splits -------------------------------------------------------------------------
def cached_splits(cache: Path | None, client_id: int, key: tuple[Any, ...],
                  build: Callable[[], ClientData]) -> ClientData:
    """``build()``, read from / written to ``cache`` under ``key`` when one is given."""
    if cache is None:
        return build()
    path = cache / f"client-{client_id}-{digest(client_id, *key)}.npz"
    cached = _read_splits(path)
    if cached is not None:
        return cached
    data = build()
    arrays = {f"{s}_{a}": getattr(getattr(data, s), a) for s in SPLITS for a in ("x", "y")}
    _write_atomic(path, lambda f: np.savez(f, **arrays))
    return data


def _read_splits(path: Path) -> ClientData | None:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return ClientData(*(ArrayDataset(x=arrays[f"{s}_x"], y=arrays[f"{s}_y"])
                                for s in SPLITS))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        # missing, truncated, not an npz, an array missing or of the wrong shape
        return None


def _write_atomic(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with partial.open("wb") as file:
            write(file)
        os.replace(partial, path)
    except OSError as err:
        log(WARNING, "pfednas node cache: cannot write %s (%s); recomputing next time",
            path, err)
        with suppress(OSError):
            partial.unlink(missing_ok=True)
