"""Tests for pfednas.data: partitions, client splits, loaders, validation (CPU, offline)."""

from __future__ import annotations

import gzip
import pickle
import re
from dataclasses import replace
from pathlib import Path

import flwr_datasets
import numpy as np
import pytest

from pfednas.data import (
    DATASET_NAMES,
    ArrayDataset,
    ClientData,
    DataError,
    DataSpec,
    dataset_info,
    load_arrays,
    load_client_data,
    partition,
    split_counts,
    stratified_split,
    tuning_splits,
    validate_spec,
)
from pfednas.data.idx import FASHION_MNIST_DEFAULT_DIR, FASHION_MNIST_ENV
from pfednas.data.partition import (
    _dirichlet_draw,
    dirichlet_partition,
    partition_repair,
    repair_minimum,
)
from pfednas.data.registry import _cached_raw, load_raw
from pfednas.seeding import DATA_PARTITION, PARTITION_REPAIR, int_seed, numpy_rng

FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530


def _labels(spec: DataSpec) -> np.ndarray:
    return load_raw(spec.name, spec.root, seed=spec.seed).labels


def _dominant_share(spec: DataSpec) -> float:
    labels = _labels(spec)
    return float(np.mean([np.bincount(labels[p]).max() / p.size for p in partition(spec)]))


# --------------------------------------------------------------------------- partitions


def test_same_spec_gives_identical_partitions_and_other_seed_differs() -> None:
    # Prepare
    spec = DataSpec("digits", num_clients=10, alpha=0.5, seed=7)
    other_seed = DataSpec("digits", num_clients=10, alpha=0.5, seed=8)
    # Execute
    first = partition(spec)
    second = partition(DataSpec("digits", num_clients=10, alpha=0.5, seed=7))
    third = partition(other_seed)
    # Assert
    assert len(first) == 10
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert any(not np.array_equal(a, c) for a, c in zip(first, third, strict=True))


def test_small_alpha_gives_strong_label_skew() -> None:
    # Prepare
    skewed = DataSpec("digits", num_clients=10, alpha=0.1, seed=0)
    near_iid = DataSpec("digits", num_clients=10, alpha=100.0, seed=0)
    # Execute
    share_skewed = _dominant_share(skewed)
    share_iid = _dominant_share(near_iid)
    # Assert: 10 balanced classes -> 0.1 when IID
    assert share_skewed > 0.4
    assert share_iid < 0.15
    assert share_skewed > 3 * share_iid


def test_partitions_are_disjoint_cover_everything_and_respect_min_size() -> None:
    # Prepare
    spec = DataSpec("synthetic", num_clients=20, alpha=0.3, seed=1, min_partition_size=15)
    # Execute
    parts = partition(spec)
    # Assert
    joined = np.concatenate(parts)
    assert joined.size == np.unique(joined).size == spec.synthetic_samples
    assert min(p.size for p in parts) >= 15


def test_cap_keeps_a_stratified_subset_of_each_partition() -> None:
    # Prepare
    full = DataSpec("digits", num_clients=5, alpha=1.0, seed=3)
    capped = DataSpec("digits", num_clients=5, alpha=1.0, seed=3, max_samples_per_client=100)
    labels = _labels(full)
    # Execute
    full_parts, capped_parts = partition(full), partition(capped)
    # Assert
    for whole, sub in zip(full_parts, capped_parts, strict=True):
        assert sub.size == min(100, whole.size)
        assert np.isin(sub, whole).all()
        p_whole = np.bincount(labels[whole], minlength=10) / whole.size
        p_sub = np.bincount(labels[sub], minlength=10) / sub.size
        assert np.abs(p_whole - p_sub).max() <= 0.011  # rounding of at most one sample


def test_a_dirichlet_draw_no_retry_meets_is_repaired_with_the_fewest_moves() -> None:
    # Prepare: 2000 samples over 150 clients (>= 1500 needed) at α 0.01: every one of the
    # partitioner's ten draws leaves clients below 10 samples
    spec = DataSpec("synthetic", num_clients=150, alpha=0.01, seed=0)
    labels = _labels(spec)
    first = _dirichlet_draw(labels, 150, 0.01, 0, int_seed(0, DATA_PARTITION))

    # Execute
    parts = partition(spec)
    repair = partition_repair(spec)

    # Assert: every client has its minimum, the parts are disjoint and cover the draw, and
    # exactly the shortfall moved, to the clients that were short, deterministically
    assert repair is not None and min(len(p) for p in parts) == 10
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(labels.size))
    shortfall = {c: 10 - len(p) for c, p in enumerate(first) if len(p) < 10}
    assert dict(repair.received) == shortfall and repair.moved == sum(shortfall.values())
    assert repair.record()["moved_samples"] == repair.moved
    assert all(len(parts[c]) == len(first[c]) for c in range(150) if c not in shortfall
               and len(first[c]) <= 10)  # donors only ever gave from above the minimum
    again = dirichlet_partition(labels, num_clients=150, alpha=0.01, min_partition_size=10,
                                seed=int_seed(0, DATA_PARTITION),
                                repair_rng=lambda: numpy_rng(0, PARTITION_REPAIR))
    assert all(np.array_equal(a, b) for a, b in zip(again[0], parts, strict=True))
    with pytest.raises(ValueError, match=r"raise dataset\.alpha"):  # no repair asked for
        dirichlet_partition(labels, num_clients=150, alpha=0.01, min_partition_size=10,
                            seed=int_seed(0, DATA_PARTITION))


def test_a_draw_that_meets_the_minimum_is_kept_as_drawn() -> None:
    # Prepare
    spec = DataSpec("synthetic", num_clients=10, alpha=0.5, seed=0)
    labels = _labels(spec)

    # Execute
    parts, repair = dirichlet_partition(labels, num_clients=10, alpha=0.5,
                                        min_partition_size=10, seed=int_seed(0, DATA_PARTITION),
                                        repair_rng=lambda: numpy_rng(0, PARTITION_REPAIR))

    # Assert
    assert repair is None and partition_repair(spec) is None
    drawn = _dirichlet_draw(labels, 10, 0.5, 10, int_seed(0, DATA_PARTITION))
    assert all(np.array_equal(a, b) for a, b in zip(parts, drawn, strict=True))


def test_repair_takes_a_class_the_short_client_holds() -> None:
    # Prepare: client 1 holds two samples of class 2; client 0 holds classes 0 and 2
    labels = np.array([0, 0, 0, 2, 2, 2, 2, 2, 2])
    parts = [np.array([0, 1, 2, 3, 4, 5, 6]), np.array([7, 8])]

    # Execute
    repaired, repair = repair_minimum(parts, labels, 3, np.random.default_rng(0))

    # Assert: one sample moved, of class 2
    assert repair.moved == 1 and repair.received == ((1, 1),)
    assert labels[repaired[1]].tolist() == [2, 2, 2] and len(repaired[0]) == 6
    with pytest.raises(ValueError, match="cannot give 2 clients >= 5"):
        repair_minimum(parts, labels, 5, np.random.default_rng(0))


# --------------------------------------------------------------------------- client splits


def test_split_counts_reference_values() -> None:
    # Execute
    alloc = split_counts([1, 5, 10], (0.6, 0.2, 0.2))
    balanced = split_counts([3, 3, 3], (0.6, 0.2, 0.2))
    # Assert: singleton to train, exact shares where possible, totals 9.6/3.2/3.2 -> 10/3/3
    assert alloc.tolist() == [[1, 0, 0], [3, 1, 1], [6, 2, 2]]
    assert balanced.sum(axis=1).tolist() == [3, 3, 3]
    assert balanced.sum(axis=0).tolist() == [5, 2, 2]


def test_split_counts_never_leaves_a_positive_split_empty() -> None:
    # Execute: ten singleton classes would all go to train
    alloc = split_counts([1] * 10, (0.6, 0.2, 0.2))
    # Assert
    assert alloc.sum(axis=0).tolist() == [8, 1, 1]


def test_client_splits_are_disjoint_stratified_and_follow_fractions() -> None:
    # Prepare: synthetic images carry continuous noise, so every row is distinct
    spec = DataSpec("synthetic", num_clients=4, alpha=0.5, seed=11)
    labels = _labels(spec)
    part = partition(spec)[2]
    pooled, _ = load_arrays("synthetic", seed=11)
    # Execute
    data = load_client_data(spec, 2)
    # Assert: sizes follow the fractions
    n = part.size
    sizes = np.array([len(data.train), len(data.val), len(data.test)])
    assert sizes.sum() == n
    assert np.abs(sizes - np.array(spec.fractions) * n).max() <= 1.0
    # Assert: the three splits are disjoint and together are exactly the partition
    rows = np.concatenate([data.train.x, data.val.x, data.test.x]).reshape(n, -1)
    assert np.unique(rows, axis=0).shape[0] == n
    expected = pooled.x[part].reshape(n, -1)
    assert np.array_equal(np.unique(rows, axis=0), np.unique(expected, axis=0))
    # Assert: the test split keeps the client's label proportions
    client_p = np.bincount(labels[part], minlength=10) / n
    test_p = np.bincount(data.test.y, minlength=10) / len(data.test)
    assert 0.5 * np.abs(client_p - test_p).sum() < 0.05
    assert data.train.x.dtype == np.float32 and data.train.y.dtype == np.int64
    assert data.train.x.shape[1:] == (1, 8, 8)


def test_stratified_split_partitions_positions() -> None:
    # Prepare
    labels = np.repeat(np.arange(5), [1, 2, 7, 20, 50])
    # Execute
    train, val, test = stratified_split(labels, (0.6, 0.2, 0.2), np.random.default_rng(0))
    # Assert
    joined = np.concatenate([train, val, test])
    assert np.array_equal(np.sort(joined), np.arange(labels.size))
    assert [train.size, val.size, test.size] == [48, 16, 16]
    assert np.bincount(labels[test], minlength=5).tolist() == [0, 0, 2, 4, 10]
    assert 0 in labels[train]  # the singleton class stays in train


def test_tuning_splits_halve_val_into_select_and_score_and_never_read_test() -> None:
    # Prepare: a client with a validation split of 40 samples, 4 labels x 10
    rng = np.random.default_rng(3)
    val_y = np.repeat(np.arange(4), 10)
    split = lambda n, y: ArrayDataset(x=rng.normal(size=(n, 1, 2, 2)).astype(np.float32),  # noqa: E731
                                      y=np.asarray(y, dtype=np.int64))
    data = ClientData(train=split(60, np.arange(60) % 4), val=split(40, val_y),
                      test=split(40, val_y))
    # Execute
    tuned = tuning_splits(data, seed=7, client_id=2)
    # Assert: train as it was; val's rows in two disjoint, stratified halves; test unread
    assert tuned.train is data.train
    assert len(tuned.val) == len(tuned.test) == 20
    rows = lambda d: {r.tobytes() for r in d.x}  # noqa: E731
    assert rows(tuned.val) | rows(tuned.test) == rows(data.val)
    assert not rows(tuned.val) & rows(tuned.test)
    assert not (rows(tuned.val) | rows(tuned.test)) & rows(data.test)
    assert np.bincount(tuned.test.y).tolist() == [5, 5, 5, 5]
    # Assert: deterministic in (seed, client), another client draws other halves
    again, other = tuning_splits(data, 7, 2), tuning_splits(data, 7, 3)
    assert np.array_equal(again.test.x, tuned.test.x)
    assert not np.array_equal(other.test.x, tuned.test.x)
    with pytest.raises(ValueError, match="needs >= 2 validation samples"):
        tuning_splits(replace(data, val=split(1, [0])), 7, 2)


def test_client_data_is_deterministic_and_reuses_the_cached_pool() -> None:
    # Prepare
    spec = DataSpec("synthetic", num_clients=5, alpha=0.5, seed=5)
    load_client_data(spec, 0)
    misses_before = _cached_raw.cache_info().misses
    # Execute
    a = load_client_data(spec, 3)
    b = load_client_data(spec, 3)
    # Assert
    assert _cached_raw.cache_info().misses == misses_before
    assert np.array_equal(a.train.x, b.train.x) and np.array_equal(a.test.y, b.test.y)
    with pytest.raises(ValueError, match="client_id"):
        load_client_data(spec, 5)


def test_digits_are_scikit_learns_load_digits_read_without_importing_it() -> None:
    from sklearn.datasets import load_digits

    raw = load_raw("digits", None)
    bunch = load_digits()

    assert raw.images.shape == (1797, 1, 8, 8) and raw.images.dtype == np.uint8
    np.testing.assert_array_equal(raw.images[:, 0], bunch.images.astype(np.uint8))
    np.testing.assert_array_equal(raw.labels, bunch.target)
    assert raw.labels.dtype == np.int64


def test_synthetic_is_learnable_by_a_linear_model() -> None:
    # Prepare: a least-squares linear classifier on one-hot targets
    data, info = load_arrays("synthetic", seed=0)
    x = np.hstack([data.x.reshape(len(data), -1), np.ones((len(data), 1), np.float32)])
    onehot = np.eye(info.num_classes)[data.y]
    # Execute
    weights, *_ = np.linalg.lstsq(x[:1500], onehot[:1500], rcond=None)
    accuracy = float(np.mean((x[1500:] @ weights).argmax(axis=1) == data.y[1500:]))
    # Assert: chance is 0.1
    assert info.num_samples == 2000
    assert accuracy > 0.6


# --------------------------------------------------------------------------- IDX loader


def _idx_bytes(array: np.ndarray) -> bytes:
    magic = bytes([0, 0, 0x08, array.ndim])
    dims = np.asarray(array.shape, dtype=">u4").tobytes()
    return magic + dims + array.astype(np.uint8).tobytes()


def _write_fmnist(
    directory: Path, *, n_train: int = 12, n_test: int = 5, gz: bool = False
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) + 3) % 10,
    }
    directory.mkdir(parents=True, exist_ok=True)
    for base, array in arrays.items():
        payload = _idx_bytes(array)
        if gz:
            (directory / f"{base}.gz").write_bytes(gzip.compress(payload))
        else:
            (directory / base).write_bytes(payload)
    return arrays


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_fashion_mnist_loader_reads_idx_files(tmp_path: Path, gz: bool) -> None:
    # Prepare
    arrays = _write_fmnist(tmp_path / "fm", gz=gz)
    # Execute
    data, info = load_arrays("fashion_mnist", root=str(tmp_path / "fm"))
    # Assert: pooled train then test, normalised with the fixed mean / std
    raw = np.concatenate([arrays["train-images-idx3-ubyte"], arrays["t10k-images-idx3-ubyte"]])
    labels = np.concatenate([arrays["train-labels-idx1-ubyte"], arrays["t10k-labels-idx1-ubyte"]])
    assert data.x.shape == (17, 1, 28, 28) and info.num_samples == 17
    assert np.array_equal(data.y, labels)
    expected = (raw[:, None] / 255.0 - FMNIST_MEAN) / FMNIST_STD
    np.testing.assert_allclose(data.x, expected, rtol=0, atol=1e-5)


def test_fashion_mnist_directory_precedence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: env dir holds 12+5 samples, config dir 20+5
    _write_fmnist(tmp_path / "env")
    _write_fmnist(tmp_path / "cfg", n_train=20)
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path / "env"))
    # Execute
    from_env, _ = load_arrays("fashion_mnist")
    from_config, _ = load_arrays("fashion_mnist", root=str(tmp_path / "cfg"))
    # Assert
    assert len(from_env) == 17
    assert len(from_config) == 25


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


def _bad_magic(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[2] = 0x0D  # float
    path.write_bytes(bytes(data))


def _garbage_gz(path: Path) -> None:
    path.write_bytes(gzip.compress(b"x")[:-6])


@pytest.mark.parametrize(
    ("gz", "damage", "needle"),
    [
        (False, _truncate, "size mismatch"),
        (False, _bad_magic, "bad magic number"),
        (False, Path.unlink, "missing"),
        (True, _garbage_gz, "corrupt"),
        (True, _truncate, "corrupt"),
    ],
    ids=["truncated", "bad-magic", "missing", "corrupt-gz", "truncated-gz"],
)
def test_damaged_idx_file_raises_data_error_naming_it(
    tmp_path: Path, gz: bool, damage, needle: str
) -> None:
    # Prepare
    _write_fmnist(tmp_path, gz=gz)
    target = tmp_path / ("t10k-images-idx3-ubyte" + (".gz" if gz else ""))
    damage(target)
    # Execute
    with pytest.raises(DataError) as caught:
        load_arrays("fashion_mnist", root=str(tmp_path))
    # Assert
    message = str(caught.value)
    assert str(tmp_path / "t10k-images-idx3-ubyte") in message
    assert needle in message
    assert "apt-get install dataset-fashion-mnist" in message


def test_label_count_mismatch_raises_data_error(tmp_path: Path) -> None:
    # Prepare
    _write_fmnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(4)))
    # Execute / Assert
    with pytest.raises(DataError, match="4 labels but t10k-images-idx3-ubyte holds 5"):
        load_arrays("fashion_mnist", root=str(tmp_path))


def test_missing_fashion_mnist_directory_raises_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "nowhere"))):
        load_arrays("fashion_mnist", root=str(tmp_path / "nowhere"))


@pytest.mark.skipif(
    not Path(FASHION_MNIST_DEFAULT_DIR, "train-images-idx3-ubyte.gz").exists(),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_real_fashion_mnist_files(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    monkeypatch.delenv(FASHION_MNIST_ENV, raising=False)
    # Execute
    data, info = load_arrays("fashion_mnist")
    # Assert
    assert info == dataset_info("fashion_mnist")
    assert data.x.shape == (70_000, 1, 28, 28)
    assert np.bincount(data.y).tolist() == [7000] * 10
    assert abs(float(data.x.mean())) < 0.01 and abs(float(data.x.std()) - 1) < 0.01


# --------------------------------------------------------------------------- CIFAR loader


def _cifar_batch(n: int, label_key: bytes, num_classes: int, offset: int) -> dict[bytes, object]:
    data = (np.arange(n * 3072).reshape(n, 3072) + offset) % 256
    labels = [(i + offset) % num_classes for i in range(n)]
    batch: dict[bytes, object] = {b"data": data.astype(np.uint8), label_key: labels}
    if label_key == b"fine_labels":
        batch[b"coarse_labels"] = [label % 20 for label in labels]
    return batch


def _dump(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        pickle.dump(obj, fh)


def _write_cifar10(root: Path) -> None:
    folder = root / "cifar-10-batches-py"
    for i in range(1, 6):
        _dump(folder / f"data_batch_{i}", _cifar_batch(3, b"labels", 10, offset=i))
    _dump(folder / "test_batch", _cifar_batch(4, b"labels", 10, offset=9))
    _dump(folder / "batches.meta", {b"label_names": [b"c%d" % i for i in range(10)]})


def test_cifar10_local_pickle_layout(tmp_path: Path) -> None:
    # Prepare
    _write_cifar10(tmp_path)
    # Execute
    data, info = load_arrays("cifar10", root=str(tmp_path))
    inner, _ = load_arrays("cifar10", root=str(tmp_path / "cifar-10-batches-py"))
    # Assert: 5 x 3 train + 4 test, channel-major rows become (3, 32, 32)
    assert info.num_samples == 19 and data.x.shape == (19, 3, 32, 32)
    first = _cifar_batch(3, b"labels", 10, offset=1)
    red = np.asarray(first[b"data"])[0, :1024].reshape(32, 32) / 255.0
    np.testing.assert_allclose(data.x[0, 0], (red - 0.4914) / 0.2470, atol=1e-5)
    assert data.y[:3].tolist() == [1, 2, 3] and data.y[-4:].tolist() == [9, 0, 1, 2]
    assert np.array_equal(inner.x, data.x)


def test_cifar100_local_pickle_layout_uses_fine_labels(tmp_path: Path) -> None:
    # Prepare
    folder = tmp_path / "cifar-100-python"
    _dump(folder / "train", _cifar_batch(6, b"fine_labels", 100, offset=40))
    _dump(folder / "test", _cifar_batch(2, b"fine_labels", 100, offset=97))
    _dump(folder / "meta", {b"fine_label_names": [b"f"] * 100})
    # Execute
    data, info = load_arrays("cifar100", root=str(tmp_path))
    # Assert
    assert info.num_classes == 100 and data.x.shape == (8, 3, 32, 32)
    assert data.y.tolist() == [40, 41, 42, 43, 44, 45, 97, 98]


def test_missing_cifar_batch_raises_data_error_naming_it(tmp_path: Path) -> None:
    # Prepare
    _write_cifar10(tmp_path)
    missing = tmp_path / "cifar-10-batches-py" / "data_batch_4"
    missing.unlink()
    # Execute / Assert
    with pytest.raises(DataError, match=re.escape(str(missing))):
        load_arrays("cifar10", root=str(tmp_path))


def test_cifar_hub_failure_is_wrapped_in_data_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: no local folder; the hub is unreachable offline
    def unreachable(**_: object) -> None:
        raise ConnectionError("no network")

    monkeypatch.delenv("PFEDNAS_CIFAR_DIR", raising=False)
    monkeypatch.setattr(flwr_datasets, "FederatedDataset", unreachable)
    # Execute / Assert
    with pytest.raises(DataError, match=r"uoft-cs/cifar100.*dataset\.root"):
        load_arrays("cifar100")


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        (DataSpec("mnist", 10, 0.5, 0), "unknown dataset 'mnist'; known: digits"),
        (DataSpec("digits", 10, 0.0, 0), "alpha must be a finite number > 0"),
        (DataSpec("digits", 10, -1.0, 0), "alpha must be a finite number > 0"),
        (DataSpec("digits", 200, 0.5, 0), "too small for 200 clients"),
        (DataSpec("cifar10", 7000, 0.5, 0), "too small for 7000 clients"),
        (DataSpec("digits", 0, 0.5, 0), "num_clients must be >= 1"),
        (DataSpec("digits", 10, 0.5, 0, val_fraction=0.3), "must sum to 1"),
        (DataSpec("digits", 10, 0.5, 0, test_fraction=0.0, val_fraction=0.4), "must be > 0"),
        (DataSpec("synthetic", 30, 0.5, 0, synthetic_samples=200), "too small for 30"),
    ],
    ids=[
        "unknown",
        "alpha-zero",
        "alpha-negative",
        "too-many-clients",
        "cifar-too-many",
        "no-clients",
        "fractions-sum",
        "no-test",
        "synthetic-small",
    ],
)
def test_validate_spec_rejects_bad_input(spec: DataSpec, needle: str) -> None:
    with pytest.raises(ValueError, match=re.escape(needle)):
        validate_spec(spec)


def test_validate_spec_accepts_defaults_and_from_config_rejects_typos() -> None:
    # Prepare
    config = {"name": "fashion_mnist", "root": None, "alpha": 0.3, "max_samples_per_client": 600}
    # Execute
    spec = DataSpec.from_config(config, num_clients=100, seed=0)
    validate_spec(spec)
    # Assert
    assert spec.max_samples_per_client == 600 and spec.fractions == (0.6, 0.2, 0.2)
    with pytest.raises(ValueError, match="unknown dataset config keys"):
        DataSpec.from_config({**config, "alhpa": 1.0}, num_clients=100, seed=0)


def test_dataset_config_group_files_share_keys_and_are_valid(tmp_path: Path) -> None:
    # Prepare
    import yaml
    from omegaconf import OmegaConf

    from pfednas.config import compose
    from pfednas.data import DatasetOptions

    files = sorted((Path(__file__).parents[1] / "conf" / "dataset").glob("*.yaml"))
    raw = {f.stem: yaml.safe_load(f.read_text()) for f in files}
    configs = {n: OmegaConf.to_container(compose([f"dataset={n}"]).dataset) for n in raw}
    # Execute
    specs = {n: DataSpec.from_config(c, num_clients=10, seed=0)  # type: ignore[arg-type]
             for n, c in configs.items()}
    # Assert: each file names its dataset and builds on the one typed schema, restating none
    # of its defaults
    assert sorted(configs) == sorted(DATASET_NAMES)
    assert len({frozenset(c) for c in configs.values()}) == 1  # type: ignore[arg-type]
    defaults = DatasetOptions()
    for name, values in raw.items():
        assert values["defaults"] == ["dataset_defaults", "_self_"] and values["name"] == name
        assert all(getattr(defaults, k) != v for k, v in values.items()
                   if k not in ("defaults", "name"))
    own = tmp_path / "own.npz"  # dataset=own reads its facts from the files dataset.root names
    np.savez(own, x=np.zeros((200, 8, 8), np.uint8), y=np.arange(200) % 10)
    for name, spec in specs.items():
        assert spec.name == name
        validate_spec(spec if name != "own" else replace(spec, root=str(own)))
