"""Partitioners by name, feature skew in a client's data, and the user's own dataset
(``dataset.partitioner``, ``dataset.feature_skew``, ``dataset=own``; CPU, offline)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pfednas.config import compose, settings_from_cfg
from pfednas.data import (
    PARTITIONERS,
    DataSpec,
    FeatureSkew,
    client_shifts,
    data_normalisation,
    load_client_data,
    partition,
    partition_record,
    spec_info,
    spec_problems,
)
from pfednas.data.partition import stratified_split
from pfednas.data.registry import load_raw
from pfednas.data.spec import sizing_names
from pfednas.seeding import CLIENT_SPLIT, numpy_rng

DIGITS = DataSpec("digits", 10, 0.5, 0)
# every partitioner with parameters that deal the 1,797 digits to 10 clients
BY_NAME: dict[str, dict[str, Any]] = {
    "iid": {},
    "dirichlet": {"alpha": 0.3},
    "pathological": {"classes_per_client": 2},
    "shard": {"shards_per_client": 2},
    "size": {"sizes": (100, 120, 140, 160, 180, 100, 120, 140, 160, 180)},
    "linear": {},
    "square": {"num_clients": 4},
    "exponential": {"num_clients": 3},
    "dirichlet_sizes": {"size_alpha": 0.5},
}


def _spec(name: str, **values: object) -> DataSpec:
    return replace(DIGITS, partitioner=name, **values)  # type: ignore[arg-type]


def _digest(parts: list[np.ndarray]) -> str:
    return hashlib.sha256(b"".join(p.tobytes() for p in parts)).hexdigest()


@pytest.mark.parametrize("name", list(BY_NAME))
def test_every_partitioner_deals_disjoint_seeded_parts_of_the_minimum_size(name: str) -> None:
    # Prepare
    spec = _spec(name, **BY_NAME[name])
    labels = load_raw("digits").labels

    # Execute
    parts = partition(spec)
    again = partition(replace(spec, min_partition_size=spec.min_partition_size))  # a new key
    other_seed = partition(replace(spec, seed=1))

    # Assert
    dealt = np.concatenate(parts)
    assert len(parts) == spec.num_clients
    assert np.unique(dealt).size == dealt.size and dealt.max() < labels.size
    assert min(p.size for p in parts) >= spec.min_partition_size
    assert _digest(parts) == _digest(again)
    assert _digest(parts) != _digest(other_seed)
    for client, indices in enumerate(parts):  # each client's splits are cut as before
        train, val, test = stratified_split(labels[indices], spec.fractions,
                                            numpy_rng(spec.seed, CLIENT_SPLIT, client))
        assert train.size + val.size + test.size == indices.size and test.size > 0


def test_the_name_list_is_the_set_the_partitioners_tested_cover() -> None:
    # Assert: natural_id is tested on a user's npz below
    from pfednas.data.partitioners import PARAMETERS

    assert set(PARTITIONERS) == set(BY_NAME) | {"natural_id"} == set(PARAMETERS)


def test_the_default_dirichlet_partition_is_unchanged() -> None:
    # Prepare: sha256 of partitions and a client's data as dealt before partitioners had names
    pinned = {
        DataSpec("digits", 20, 0.5, 0):
            "75a427f76fc2c5d2b090bd44d88be1f86ca7f4469bc8f845087aa523c750e496",
        DataSpec("digits", 30, 0.1, 3, max_samples_per_client=40):
            "9dca069807ba71b1206bc1aa2c9ef3fa2dc7ce645e37463f9ac4d5d50689f7d5",
        DataSpec("synthetic", 10, 0.3, 1):
            "79625f54e491fcd71eeca7660972e55eb8e14b1c365564f751f99db24d5ec1a4",
    }

    # Execute
    digests = {}
    for spec in pinned:
        digest = hashlib.sha256(b"".join(p.tobytes() for p in partition(spec)))
        data = load_client_data(spec, 1)
        digest.update(data.train.x.tobytes())
        digest.update(data.test.y.tobytes())
        digests[spec] = digest.hexdigest()

    # Assert
    assert digests == pinned


def test_each_partitioner_deals_what_its_name_says() -> None:
    # Prepare
    labels = load_raw("digits").labels

    def classes(spec: DataSpec) -> list[int]:
        return [np.unique(labels[p]).size for p in partition(spec)]

    def sizes(spec: DataSpec) -> list[int]:
        return [p.size for p in partition(spec)]

    # Execute
    iid, pathological = sizes(_spec("iid")), classes(_spec("pathological", classes_per_client=2))
    shard = partition(_spec("shard", shards_per_client=2, shard_size=50))
    size = sizes(_spec("size", **BY_NAME["size"]))
    linear, square = sizes(_spec("linear", num_clients=4)), sizes(_spec("square", num_clients=4))
    skewed = sizes(_spec("dirichlet_sizes", size_alpha=0.3))
    even = sizes(_spec("dirichlet_sizes", size_alpha=100.0))

    # Assert
    assert max(iid) - min(iid) <= 1 and sum(iid) == labels.size
    assert max(pathological) <= 2
    assert all(p.size == 100 and np.unique(labels[p]).size <= 4 for p in shard)
    assert size == list(BY_NAME["size"]["sizes"])
    assert linear[0] < linear[-1] and square[-1] / square[0] > linear[-1] / linear[0]
    assert sum(skewed) == labels.size and min(skewed) >= DIGITS.min_partition_size
    assert np.std(skewed) > 3 * np.std(even)


def test_natural_ids_in_a_users_npz_name_the_clients(tmp_path: Path) -> None:
    # Prepare: 5 sites with ids 3, 8, 11, 20, 42; each sample's site drawn
    rng = np.random.default_rng(0)
    sites = rng.choice([3, 8, 11, 20, 42], size=400)
    path = tmp_path / "sites.npz"
    np.savez(path, x=rng.integers(0, 256, (400, 10, 10), dtype=np.uint8),
             y=rng.integers(0, 4, 400), site=sites)
    spec = DataSpec("own", 5, 0.5, 0, root=str(path), partitioner="natural_id",
                    natural_id="site")

    # Execute
    parts = partition(spec)
    wrong_k = spec_problems(replace(spec, num_clients=4))

    # Assert: client k holds exactly the k-th smallest id's samples
    for k, site in enumerate([3, 8, 11, 20, 42]):
        assert np.array_equal(parts[k], np.flatnonzero(sites == site))
    assert wrong_k == []  # the count is checked when the data is dealt
    with pytest.raises(ValueError, match="names 5 clients but federation.num_clients=4"):
        partition(replace(spec, num_clients=4))
    with pytest.raises(ValueError, match=f"natural_id='client': {path} has no such array"):
        partition(replace(spec, natural_id="client", num_clients=5, seed=1))


@pytest.mark.parametrize(("values", "message"), [
    ({"partitioner": "zipf"}, "dataset.partitioner: unknown 'zipf'; known: iid, dirichlet"),
    ({"partitioner": "pathological", "classes_per_client": 0},
     "dataset.classes_per_client must be an integer in [2, 10]"),
    ({"partitioner": "pathological", "classes_per_client": 1},
     "dataset.classes_per_client must be an integer in [2, 10]"),
    ({"partitioner": "pathological", "classes_per_client": 11},
     "dataset.classes_per_client must be an integer in [2, 10]"),
    ({"partitioner": "shard", "shards_per_client": 0}, "dataset.shards_per_client must be"),
    ({"partitioner": "shard", "shard_size": 500}, "needs 10000 samples; the dataset has 1797"),
    ({"partitioner": "size", "sizes": (10, 10)}, "dataset.sizes must list num_clients=10"),
    ({"partitioner": "size", "sizes": (300,) * 10}, "dataset.sizes sum to 3000"),
    ({"partitioner": "dirichlet_sizes", "size_alpha": 0.0}, "dataset.size_alpha must be"),
    ({"partitioner": "natural_id"}, "dataset=own with an .npz holding a 'client' array"),
    ({"feature_skew": FeatureSkew(resolution=0.0)}, "dataset.feature_skew.resolution"),
    ({"name": "own"}, "dataset=own needs dataset.root"),
])
def test_a_bad_partitioner_or_parameter_is_named(values: dict[str, object],
                                                 message: str) -> None:
    # Execute
    problems = spec_problems(replace(DIGITS, **values))  # type: ignore[arg-type]

    # Assert
    assert any(message in p for p in problems), problems


def test_your_own_data_of_one_class_is_refused_naming_it(tmp_path: Path) -> None:
    # Prepare: every label 3 (an .npz), and one sub-folder of images
    rng = np.random.default_rng(0)
    npz = tmp_path / "one.npz"
    np.savez(npz, x=rng.integers(0, 256, (200, 8, 8), dtype=np.uint8), y=np.full(200, 3))
    folder = tmp_path / "folder"
    (folder / "cats").mkdir(parents=True)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(
            folder / "cats" / f"{i}.png")

    # Execute
    problems = {path: spec_problems(DataSpec("own", 4, 0.5, 0, root=str(path)))
                for path in (npz, folder)}

    # Assert
    assert problems[npz] == [f"dataset.root={npz} holds 1 class (3); a classifier needs at "
                             "least 2 (with one, every prediction is right)"]
    assert problems[folder] == [f"dataset.root={folder} holds 1 class (cats); a classifier "
                                "needs at least 2 (with one, every prediction is right)"]


def test_a_natural_client_of_one_class_is_refused_naming_it(tmp_path: Path) -> None:
    # Prepare: sites 5 and 9 hold both classes, site 7 class 1 only
    rng = np.random.default_rng(0)
    sites = np.repeat([5, 7, 9], 60)
    labels = np.where(sites == 7, 1, rng.integers(0, 2, sites.size))
    path = tmp_path / "sites.npz"
    np.savez(path, x=rng.integers(0, 256, (sites.size, 8, 8), dtype=np.uint8), y=labels,
             site=sites)
    spec = DataSpec("own", 3, 0.5, 0, root=str(path), partitioner="natural_id",
                    natural_id="site")

    # Execute
    problems = spec_problems(spec)

    # Assert: named by its id; dealt otherwise (iid), the same data is fine
    assert problems == [f"dataset.partitioner=natural_id: client site=7 holds one class in "
                        f"{path}; each client needs at least 2 (with one, its personalized "
                        "accuracy is 1.0 by construction)"]
    assert spec_problems(replace(spec, partitioner="iid")) == []


def test_pfednas_refuses_a_one_class_dataset_in_one_line_before_anything_starts(
        tmp_path: Path) -> None:
    from tests.conftest import run_pfednas

    # Prepare
    npz = tmp_path / "one.npz"
    np.savez(npz, x=np.zeros((800, 8, 8), dtype=np.uint8), y=np.zeros(800, dtype=np.int64))
    out = tmp_path / "run"

    # Execute
    result = run_pfednas(["dataset=own", f"dataset.root={npz}"], out, timeout=120)

    # Assert
    assert result.returncode == 2, result.stderr
    assert result.stderr == (f"pfednas: error: invalid data configuration: dataset.root={npz} "
                             "holds 1 class (0); a classifier needs at least 2 (with one, "
                             "every prediction is right)\n")
    assert not out.exists()


def test_a_partition_that_leaves_a_client_short_names_it_and_its_counts() -> None:
    # Prepare: exponential sizes over 6 clients leave client 0 with a handful of samples
    spec = _spec("exponential", num_clients=6)

    # Execute
    with pytest.raises(ValueError) as err:
        partition(spec)

    # Assert
    message = str(err.value)
    assert "partitioner 'exponential' leaves client 0 with" in message
    assert "(per label {" in message and "dataset.min_partition_size" in message
    assert "\n" not in message


def test_a_config_names_the_partitioner_and_its_skew_on_the_console_line() -> None:
    # Prepare
    from pfednas.settings import describe

    cfg = compose(["dataset.partitioner=pathological", "dataset.classes_per_client=3",
                   "dataset.feature_skew.rotation_groups=4"])

    # Execute
    line = describe(settings_from_cfg(cfg))

    # Assert
    assert "pathological classes_per_client=3, feature skew rotation_groups=4" in line


def test_a_rotation_group_client_sees_its_own_images_turned(tmp_path: Path) -> None:
    # Prepare
    plain = DataSpec("digits", 8, 0.5, 0)
    turned = replace(plain, feature_skew=FeatureSkew(rotation_groups=4))

    # Execute
    shifts = client_shifts(turned)
    record = partition_record(turned)

    # Assert: the same rows, each client's turned by its group's quarter turns
    assert sorted(s.rotation for s in shifts) == [0, 0, 90, 90, 180, 180, 270, 270]
    for client, shift in enumerate(shifts):
        before, after = load_client_data(plain, client), load_client_data(turned, client)
        quarter_turns = int(shift.rotation // 90)
        assert np.array_equal(before.train.y, after.train.y)
        assert np.allclose(np.rot90(before.train.x, quarter_turns, axes=(2, 3)), after.train.x,
                           atol=1e-5)
    assert record["partition"]["feature_skew"]["0"] == shifts[0].record()  # type: ignore[index]
    assert "feature_skew" not in partition_record(plain)["partition"]  # type: ignore[operator]


def test_a_users_image_folder_is_read_sized_and_normalised_on_its_training_splits(
        tmp_path: Path) -> None:
    # Prepare: 3 classes of 12x12 colour images, 40 each
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog", "owl"):
        (tmp_path / cls).mkdir()
        for i in range(40):
            pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / cls / f"{i}.png")
    spec = DataSpec("own", 4, 0.5, 0, root=str(tmp_path))

    # Execute
    info = spec_info(spec)
    norm = data_normalisation(spec)
    train = np.concatenate([load_client_data(spec, c).train.x for c in range(4)])
    test = np.concatenate([load_client_data(spec, c).test.x for c in range(4)])

    # Assert: classes, channels and side from the files; the training splits standardised
    assert (info.num_classes, info.in_channels, info.image_size, info.num_samples) == \
        (3, 3, 12, 120)
    assert norm.scale == 255.0 and len(norm.mean) == 3
    assert np.allclose(train.mean(axis=(0, 2, 3)), 0.0, atol=1e-4)
    assert np.allclose(train.std(axis=(0, 2, 3)), 1.0, atol=1e-3)
    assert not np.allclose(test.mean(axis=(0, 2, 3)), 0.0, atol=1e-4)
    assert sizing_names(spec) == ("own", "cifar10")


def test_a_users_dataset_runs_through_the_config_sized_like_its_nearest_builtin(
        tmp_path: Path) -> None:
    # Prepare: 28x28 grey images in an npz, like Fashion-MNIST
    path = tmp_path / "grey.npz"
    rng = np.random.default_rng(1)
    np.savez(path, x=rng.integers(0, 256, (600, 28, 28), dtype=np.uint8),
             y=rng.integers(0, 10, 600))

    # Execute
    settings = settings_from_cfg(compose(["dataset=own", f"dataset.root={path}",
                                          "federation.num_clients=10"]))
    fashion = settings_from_cfg(compose(["dataset=fashion_mnist"]))

    # Assert
    assert settings.search_space == fashion.search_space
    assert sizing_names(settings.data) == ("own", "fashion_mnist")


@pytest.mark.parametrize(("write", "message"), [
    (lambda p: np.savez(p / "bad.npz", x=np.zeros((5, 8, 8)), y=np.zeros(4, int)), "bad.npz"),
    (lambda p: ((p / "a").mkdir(), (p / "a" / "x.png").write_bytes(b"not a png")), "x.png"),
])
def test_unreadable_own_data_stops_the_job_with_one_line_naming_the_file(
        tmp_path: Path, write: object, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare
    from pfednas.cli import run_job

    write(tmp_path)  # type: ignore[operator]
    root = tmp_path / "bad.npz" if message == "bad.npz" else tmp_path

    # Execute
    with pytest.raises(SystemExit) as exit_:
        run_job(compose(["dataset=own", f"dataset.root={root}"]))

    # Assert
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and message in err
