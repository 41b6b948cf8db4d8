"""The on-disk cache of dealt partitions: a hit is the deal byte for byte (its repair too),
anything else is a miss, and a process that reads a hit never imports ``flwr_datasets``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pfednas.config import compose, settings_from_cfg
from pfednas.data import deal_cache, partition
from pfednas.data.arrays import RawImages
from pfednas.data.partition import Repair, deal
from pfednas.data.registry import load_raw
from pfednas.data.spec import DataSpec


def spec_and_labels(overrides: list[str]) -> tuple[DataSpec, np.ndarray, RawImages]:
    spec = settings_from_cfg(compose(overrides)).data
    raw = load_raw(spec.name, spec.root, seed=spec.seed,
                   synthetic_samples=spec.synthetic_samples, natural_id=spec.natural_id)
    return spec, raw.labels, raw


def counted(spec: DataSpec, raw: RawImages, calls: list[int]) -> Callable[[], deal_cache.Dealt]:
    """``deal(spec, raw)``, each call counted in ``calls``."""
    def run() -> deal_cache.Dealt:
        calls.append(1)
        return deal(spec, raw)
    return run


def dealt_via(spec: DataSpec, raw: RawImages, calls: list[int],
              folder: Path) -> deal_cache.Dealt:
    """The partition of ``spec`` through the cache in ``folder``, each deal counted."""
    return deal_cache.cached_deal(spec, raw.labels, None, spec.num_clients,
                                  counted(spec, raw, calls), Repair, folder)


@pytest.mark.parametrize("overrides", [[], ["federation.num_clients=100", "dataset.alpha=0.05"],
                                       ["dataset.partitioner=shard"]],
                         ids=["dirichlet", "repaired", "shard"])
def test_a_hit_is_the_deal_and_its_repair_without_dealing(overrides: list[str],
                                                          tmp_path: Path) -> None:
    spec, labels, raw = spec_and_labels(overrides)
    calls: list[int] = []

    first = dealt_via(spec, raw, calls, tmp_path)
    again = dealt_via(spec, raw, calls, tmp_path)

    assert calls == [1] and len(list(tmp_path.glob("*.npz"))) == 1
    assert len(again[0]) == len(first[0])
    for a, b in zip(first[0], again[0], strict=True):
        assert a.dtype == b.dtype == np.int64 and np.array_equal(a, b)
    assert again[1] == first[1]
    assert (first[1] is not None) == ("dataset.alpha=0.05" in overrides)


def test_another_spec_or_other_labels_are_another_entry() -> None:
    spec, labels, _ = spec_and_labels([])
    other_spec, _, _ = spec_and_labels(["seed=1"])
    flipped = labels.copy()
    flipped[[0, 1]] = flipped[[1, 0]]

    keys = {deal_cache.entry_key(spec, labels, None),
            deal_cache.entry_key(other_spec, labels, None),
            deal_cache.entry_key(spec, flipped, None),
            deal_cache.entry_key(spec, labels, np.zeros(labels.size, dtype=np.int64))}

    assert len(keys) == 4


@pytest.mark.parametrize("damage", ["truncated", "garbage", "out_of_range", "wrong_dtype",
                                    "a_client_short"])
def test_an_entry_that_cannot_be_read_or_does_not_fit_is_dealt_again_and_replaced(
        damage: str, tmp_path: Path) -> None:
    spec, labels, raw = spec_and_labels([])
    calls: list[int] = []
    dealt = dealt_via(spec, raw, calls, tmp_path)
    (entry,) = tmp_path.glob("*.npz")
    if damage == "truncated":
        entry.write_bytes(entry.read_bytes()[:200])
    elif damage == "garbage":
        entry.write_bytes(b"not an npz")
    else:
        parts = {f"part_{i}": p for i, p in enumerate(dealt[0])}
        if damage == "out_of_range":
            parts["part_0"] = np.array([labels.size])
        elif damage == "wrong_dtype":
            parts["part_0"] = parts["part_0"].astype(np.float64)
        with entry.open("wb") as f:
            np.savez(f, **parts, moved=np.asarray(-1), received=np.zeros((0, 2), dtype=np.int64),
                     count=np.asarray(len(dealt[0]) - (damage == "a_client_short")))

    again = dealt_via(spec, raw, calls, tmp_path)

    assert calls == [1, 1]
    assert all(np.array_equal(a, b) for a, b in zip(dealt[0], again[0], strict=True))
    third = dealt_via(spec, raw, calls, tmp_path)
    assert calls == [1, 1] and all(np.array_equal(a, b)
                                   for a, b in zip(dealt[0], third[0], strict=True))


def test_off_or_an_unwritable_folder_deals_every_time(tmp_path: Path) -> None:
    spec, labels, raw = spec_and_labels([])
    calls: list[int] = []
    blocked = tmp_path / "file"
    blocked.write_text("a file where the folder would go")

    assert deal_cache.cache_dir({deal_cache.CACHE_ENV: "off"}) is None
    assert deal_cache.cache_dir({deal_cache.CACHE_ENV: str(tmp_path)}) == tmp_path / "partitions"
    assert deal_cache.cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/pfednas/partitions")
    for _ in range(2):
        parts, _ = dealt_via(spec, raw, calls, blocked / "partitions")
    assert calls == [1, 1] and len(parts) == 20
    assert os.listdir(tmp_path) == ["file"]


def test_a_process_reading_a_kept_partition_never_imports_flwr_datasets(tmp_path: Path) -> None:
    script = ("import sys; from pfednas.config import compose, settings_from_cfg; "
              "from pfednas.data import partition; "
              "parts = partition(settings_from_cfg(compose([])).data); "
              "print(sum(len(p) for p in parts), 'flwr_datasets' in sys.modules, "
              "'sklearn' in sys.modules)")
    env = dict(os.environ, **{deal_cache.CACHE_ENV: str(tmp_path)})

    first, second = (subprocess.run([sys.executable, "-c", script], env=env, text=True,
                                    capture_output=True, check=True, timeout=120).stdout.split()
                     for _ in range(2))

    total = str(sum(len(p) for p in partition(settings_from_cfg(compose([])).data)))
    assert first == [total, "True", "False"]  # dealt: flwr_datasets imported, sklearn never
    assert second == [total, "False", "False"]
