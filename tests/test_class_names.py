"""Class names travel from the data to the kept model's spec and into `pfednas predict`'s
output, beside each class's number and each input's file (issue 63 item 7)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pfednas.data import dataset_info
from pfednas.data.files import read_files
from pfednas.delivery.predict import main as predict_main
from pfednas.edge.kept import class_names, read_spec
from pfednas.run.inprocess import run_inprocess

ANIMALS = ("cat", "dog", "fox")


def _image_folder(root: Path, classes: tuple[str, ...], per_class: int) -> Path:
    """``root/<class>/<i>.png``: 8 x 8 grey images, each animal at its own brightness."""
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            level = 40 + 80 * ANIMALS.index(name) + rng.integers(0, 30, (8, 8))
            Image.fromarray(level.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def test_the_builtin_datasets_name_their_classes() -> None:
    assert dataset_info("fashion_mnist").class_names[:2] == ("T-shirt/top", "Trouser")
    assert dataset_info("fashion_mnist").class_names[-1] == "Ankle boot"
    assert dataset_info("digits").class_names == tuple("0123456789")
    cifar100 = dataset_info("cifar100").class_names
    assert len(set(cifar100)) == 100 and list(cifar100) == sorted(cifar100)
    assert dataset_info("cifar10").class_names[0] == "airplane"
    assert dataset_info("synthetic").class_names == ()  # numbered classes: no names


def test_an_image_folder_names_its_classes_and_files(tmp_path: Path) -> None:
    folder = _image_folder(tmp_path / "images", ANIMALS, 2)

    images = read_files(folder)

    assert images.classes == ANIMALS
    assert images.files == ("cat/0.png", "cat/1.png", "dog/0.png", "dog/1.png", "fox/0.png",
                            "fox/1.png")
    assert images.labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_a_spec_without_class_names_reads_them_as_numbers() -> None:
    assert class_names({"task": {"num_classes": 3}}) == ("0", "1", "2")
    assert class_names({"task": {"num_classes": 2}, "class_names": ["a", "b"]}) == ("a", "b")
    with pytest.raises(ValueError, match="class_names"):
        class_names({"task": {"num_classes": 2}, "class_names": ["a"]})


def test_a_kept_model_names_its_classes_and_predict_writes_files_and_names(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare: FedAvg on the user's folder of three named classes, one short round
    data = _image_folder(tmp_path / "train", ANIMALS, 24)
    run = tmp_path / "run"
    run_inprocess(["method=fedavg", "dataset=own", f"dataset.root={data}",
                   "federation.num_clients=2", "federation.clients_per_round=2",
                   "federation.num_rounds=1", "federation.local_epochs=1",
                   "method.arch=min", "method.finetune_epochs=0"], run)
    # a folder of two of the three classes: "dog" is the model's class 1, "fox" its class 2
    unseen = _image_folder(tmp_path / "unseen", ("dog", "fox"), 3)
    model = run / "models" / "client_0"

    # Execute
    code = predict_main([str(model), "--data", str(unseen), "--out", str(tmp_path / "p.csv")])
    accuracy = capsys.readouterr().out.strip().splitlines()[-1]

    # Assert: the spec names the folder's classes; each prediction names its file and class;
    # the accuracy scores the folders by name (dog/ as class 1, not as the folder's first)
    _, spec = read_spec(run / "models", 0)
    assert spec["class_names"] == list(ANIMALS) and spec["num_classes"] == 3
    assert code == 0
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert [r["file"] for r in rows] == ["dog/0.png", "dog/1.png", "dog/2.png", "fox/0.png",
                                         "fox/1.png", "fox/2.png"]
    assert all(r["class_name"] == ANIMALS[int(r["class"])] for r in rows)
    right = sum(r["file"].split("/")[0] == r["class_name"] for r in rows)
    assert accuracy == f"accuracy {right / len(rows)!r}"
    assert json.loads((model / "spec.json").read_text())["class_names"] == list(ANIMALS)
