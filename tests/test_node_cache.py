"""A node's on-disk cache: keyed by the run config, and a bad entry is rebuilt, never fatal."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, RecordDict
from omegaconf import OmegaConf

from pfednas.app import client_app
from pfednas.config import SIMULATION_ENV, compose, settings_from_cfg
from pfednas.data import ClientData, load_client_data
from pfednas.node import cache as node_cache
from pfednas.node.cache import CACHE_ENV, composed_config, node_cache_dir
from pfednas.node.data import node_client_data

RUN = ("federation.num_clients=3", "federation.clients_per_round=3", "method=fedavg")
CORRUPT = {"garbage": b"\x00\x01not a cache file\xff" * 10, "empty": b""}


@pytest.fixture(autouse=True)
def _deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SIMULATION_ENV, raising=False)
    monkeypatch.delenv(CACHE_ENV, raising=False)


def _context(cache: Path | None, overrides: Sequence[str] = ()) -> Context:
    node: dict[str, bool | float | int | str] = {"partition-id": 1, "num-partitions": 3}
    if cache is not None:
        node["cache-dir"] = str(cache)
    return Context(run_id=1, node_id=1, node_config=node, state=RecordDict(),
                   run_config={"overrides": json.dumps([*RUN, *overrides])})


def _no_compose(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(overrides: tuple[str, ...]) -> None:
        raise AssertionError(f"composed {overrides} despite a cache entry")
    monkeypatch.setattr(node_cache, "compose", refuse)


def _assert_same(a: ClientData, b: ClientData) -> None:
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, split).x, getattr(b, split).x)
        np.testing.assert_array_equal(getattr(a, split).y, getattr(b, split).y)


# -- the composed config -----------------------------------------------------------------------
def test_config_is_composed_once_then_read_back(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    first = client_app.node_settings(_context(cache))  # a miss: composes and writes

    _no_compose(monkeypatch)
    second = client_app.node_settings(_context(cache))  # a hit: no compose

    assert second == first == settings_from_cfg(compose(list(RUN)))
    assert len(list(cache.glob("config-*.json"))) == 1


def test_a_different_run_config_is_a_config_miss(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    client_app.node_settings(_context(cache))

    other = client_app.node_settings(_context(cache, ["federation.lr=0.01234"]))

    assert other.federation.lr == 0.01234
    assert len(list(cache.glob("config-*.json"))) == 2


def test_cached_config_equals_hydras(tmp_path: Path) -> None:
    overrides = (*RUN, "dataset.alpha=0.3")
    composed_config(overrides, tmp_path)

    cached = composed_config(overrides, tmp_path)

    assert OmegaConf.to_container(cached) == OmegaConf.to_container(compose(overrides),
                                                                    resolve=True)
    assert OmegaConf.is_struct(cached)


@pytest.mark.parametrize("content", [*CORRUPT.values(), b'{"key": "other", "config": {}}',
                                     b'{"key": "KEY", "config": [1, 2]}', b'{"key": "KEY", '],
                         ids=[*CORRUPT, "other-key", "not-a-mapping", "truncated"])
def test_a_corrupt_config_entry_is_rebuilt(tmp_path: Path, content: bytes) -> None:
    # Prepare: the entry the next call would read, overwritten with junk
    composed_config(RUN, tmp_path)
    (path,) = tmp_path.glob("config-*.json")
    key = path.stem.removeprefix("config-")
    path.write_bytes(content.replace(b"KEY", key.encode()))

    cfg = composed_config(RUN, tmp_path)

    assert OmegaConf.to_container(cfg) == OmegaConf.to_container(compose(RUN), resolve=True)
    assert json.loads(path.read_text())["key"] == key  # replaced by a good entry


# -- the node's splits -------------------------------------------------------------------------
def test_splits_are_built_once_then_read_back(tmp_path: Path) -> None:
    settings = client_app.node_settings(_context(None))
    calls: list[int] = []

    def build() -> ClientData:
        calls.append(1)
        return load_client_data(settings.data, 1)

    first = node_cache.cached_splits(tmp_path, 1, ("partition", settings.data), build)
    second = node_cache.cached_splits(tmp_path, 1, ("partition", settings.data), build)

    assert calls == [1]
    _assert_same(first, second)
    _assert_same(second, load_client_data(settings.data, 1))


def test_a_run_config_with_other_data_is_a_data_miss(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    ctx, other = _context(cache), _context(cache, ["dataset.alpha=0.1"])
    lr_only = _context(cache, ["federation.lr=0.01234"])

    node_client_data(ctx, client_app.node_settings(ctx))
    node_client_data(lr_only, client_app.node_settings(lr_only))  # same data: a hit
    data = node_client_data(other, client_app.node_settings(other))

    assert len(list(cache.glob("client-1-*.npz"))) == 2
    _assert_same(data, load_client_data(client_app.node_settings(other).data, 1))


@pytest.mark.parametrize("damage", ["garbage", "empty", "truncated", "array-missing"])
def test_a_corrupt_splits_entry_is_rebuilt(tmp_path: Path, damage: str) -> None:
    # Prepare: a good entry, then damaged
    context = _context(tmp_path)
    settings = client_app.node_settings(context)
    node_client_data(context, settings)
    (path,) = tmp_path.glob("client-1-*.npz")
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "array-missing":
        with np.load(path) as arrays:
            np.savez(path.with_suffix(".tmp.npz"),
                     **{k: arrays[k] for k in arrays.files if k != "test_y"})
        path.with_suffix(".tmp.npz").replace(path)
    else:
        path.write_bytes(CORRUPT[damage])

    data = node_client_data(context, settings)

    _assert_same(data, load_client_data(settings.data, 1))
    rewritten = node_cache._read_splits(path)
    assert rewritten is not None  # replaced by a good entry
    _assert_same(rewritten, data)


def test_an_unwritable_cache_folder_is_not_fatal(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    context = _context(blocker / "cache")

    settings = client_app.node_settings(context)
    data = node_client_data(context, settings)

    assert settings == settings_from_cfg(compose(list(RUN)))
    _assert_same(data, load_client_data(settings.data, 1))


def test_cache_folder_comes_from_the_node_config_else_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert node_cache_dir(_context(None)) is None
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert node_cache_dir(_context(None)) == tmp_path / "env"
    assert node_cache_dir(_context(tmp_path / "node")) == tmp_path / "node"
