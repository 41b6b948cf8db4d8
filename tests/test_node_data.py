"""A node's data from its node config: Dirichlet partitions, and a silo's own folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, RecordDict
from PIL import Image

from pfednas.config import compose, settings_from_cfg
from pfednas.data import DataError, load_client_data
from pfednas.node.data import client_id_of, node_client_data, silo_client_data

CLASS_COUNTS = {"0": 10, "3": 15, "7": 5}  # ImageFolder class folders -> images in each


def _context(node_config: dict[str, int | str]) -> Context:
    return Context(run_id=1, node_id=1, node_config=dict(node_config), state=RecordDict(),
                   run_config={})


def _settings(*overrides: str):  # type: ignore[no-untyped-def]
    return settings_from_cfg(compose(["federation.num_clients=3",
                                      "federation.clients_per_round=3", *overrides]))


def _image_folder(root: Path, counts: dict[str, int], size: int = 8, mode: str = "L") -> Path:
    """Tiny PNGs whose mean brightness encodes the label (so a test can check labels)."""
    rng = np.random.default_rng(0)
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        level = 20 * (sorted(counts).index(name) + 1)
        for i in range(count):
            pixels = np.clip(level + rng.integers(-3, 4, (size, size)), 0, 255).astype(np.uint8)
            image = Image.fromarray(pixels, mode="L").convert(mode)
            image.save(root / name / f"img_{i:03d}.png")
    return root


def test_partition_node_unchanged() -> None:
    settings = _settings()

    data = node_client_data(_context({"partition-id": 1, "num-partitions": 3}), settings)

    expected = load_client_data(settings.data, 1)
    assert np.array_equal(data.train.y, expected.train.y)
    assert np.array_equal(data.test.x, expected.test.x)


def test_client_id_from_partition_or_silo_id() -> None:
    assert client_id_of(_context({"partition-id": 2})) == 2
    assert client_id_of(_context({"client-id": 4, "data-dir": "/x"})) == 4
    with pytest.raises(ValueError, match="client-id"):
        client_id_of(_context({"data-dir": "/x"}))


def test_image_folder_silo_is_read_and_split_stratified(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "silo", CLASS_COUNTS)
    settings = _settings()
    context = _context({"client-id": 0, "data-dir": str(root)})

    data = node_client_data(context, settings)

    splits = (data.train, data.val, data.test)
    assert [len(s) for s in splits] == [18, 6, 6]  # 30 images, 60/20/20
    for split in splits:
        assert split.x.shape[1:] == (1, 8, 8) and split.x.dtype == np.float32
        assert sorted(set(split.y.tolist())) == [0, 3, 7]  # integer folder names keep labels
    per_class = {c: [int((s.y == c).sum()) for s in splits] for c in (0, 3, 7)}
    assert per_class == {0: [6, 2, 2], 3: [9, 3, 3], 7: [3, 1, 1]}
    # brightness encodes the folder: images and labels stayed together
    brightness = {c: float(data.train.x[data.train.y == c].mean()) for c in (0, 3, 7)}
    assert brightness[0] < brightness[3] < brightness[7]
    # the split is deterministic in (seed, client id) and differs between clients
    again = silo_client_data(root, settings, 0)
    other = silo_client_data(root, settings, 1)
    assert np.array_equal(again.test.x, data.test.x)
    assert not np.array_equal(other.test.x, data.test.x)


def test_named_class_folders_follow_sorted_order_and_are_resized(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "silo", {"cat": 10, "ant": 10}, size=12, mode="RGB")

    data = silo_client_data(root, _settings(), 0)

    assert data.train.x.shape[1:] == (1, 8, 8)  # RGB 12x12 -> digits' 1x8x8
    ant = data.train.x[data.train.y == 0].mean()  # "ant" sorts first: label 0
    cat = data.train.x[data.train.y == 1].mean()
    assert ant < cat  # the helper makes the first folder in sorted order the darkest


def test_npz_silo(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    (tmp_path / "silo").mkdir()
    x = rng.integers(0, 256, (40, 8, 8), dtype=np.uint8)
    y = np.repeat(np.arange(4), 10)
    np.savez(tmp_path / "silo" / "data.npz", x=x, y=y)

    data = silo_client_data(tmp_path / "silo", _settings(), 0)

    assert [len(s) for s in (data.train, data.val, data.test)] == [24, 8, 8]
    assert np.bincount(data.test.y).tolist() == [2, 2, 2, 2]


def test_bad_silos_name_the_problem(tmp_path: Path) -> None:
    settings = _settings()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="class sub-folders"):
        silo_client_data(tmp_path / "empty", settings, 0)
    with pytest.raises(DataError, match="not a directory"):
        silo_client_data(tmp_path / "missing", settings, 0)
    many = _image_folder(tmp_path / "many", {str(c): 1 for c in range(12)})
    with pytest.raises(DataError, match=r"labels must be in \[0, 10\)"):
        silo_client_data(many, settings, 0)


def test_partition_node_cache_returns_identical_splits(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings()
    context = _context({"partition-id": 2, "num-partitions": 3})
    monkeypatch.setenv("PFEDNAS_NODE_CACHE", str(tmp_path / "cache"))

    first = node_client_data(context, settings)  # computes and writes the cache
    second = node_client_data(context, settings)  # reads it

    assert len(list((tmp_path / "cache").glob("client-2-*.npz"))) == 1
    expected = load_client_data(settings.data, 2)
    for data in (first, second):
        for split in ("train", "val", "test"):
            assert np.array_equal(getattr(data, split).x, getattr(expected, split).x)
            assert np.array_equal(getattr(data, split).y, getattr(expected, split).y)
