"""CIFAR-10 / CIFAR-100 from a local folder (python-pickle layout) or the Hugging Face hub.

Local layout, as extracted from the official ``cifar-10-python.tar.gz`` /
``cifar-100-python.tar.gz`` (https://www.cs.toronto.edu/~kriz/cifar.html):

- CIFAR-10: ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``
- CIFAR-100: ``cifar-100-python/{train, test, meta}`` (the 100 *fine* labels are used)

The directory given may be the extracted folder itself or its parent. Each
batch is a pickled dict with ``b"data"`` (N x 3072 uint8, channel-major) and
``b"labels"`` / ``b"fine_labels"``, read with a restricted unpickler (arrays,
lists, dicts, strings and numbers only: a file that would run code is refused).
Without a local folder the data comes through ``flwr_datasets.FederatedDataset``
from the hub (``uoft-cs/cifar10``, ``uoft-cs/cifar100``), which needs network
access or a warm hub cache.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pfednas.data.arrays import DataError, RawImages
from pfednas.data.restricted_pickle import RefusedPickle, load_data_pickle

CIFAR_ENV = "PFEDNAS_CIFAR_DIR"
_SIDE = 32


@dataclass(frozen=True)
class CifarLayout:
    name: str
    folder: str  # folder name inside the archive
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: bytes
    num_classes: int
    hub_id: str
    hub_label: str
    archive_url: str


# Each label's name, as the archives' meta files list them (CIFAR-100: the fine labels).
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
    "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm")

CIFAR10 = CifarLayout(
    name="cifar10",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_file="test_batch",
    meta_file="batches.meta",
    label_key=b"labels",
    num_classes=10,
    hub_id="uoft-cs/cifar10",
    hub_label="label",
    archive_url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
)
CIFAR100 = CifarLayout(
    name="cifar100",
    folder="cifar-100-python",
    train_files=("train",),
    test_file="test",
    meta_file="meta",
    label_key=b"fine_labels",
    num_classes=100,
    hub_id="uoft-cs/cifar100",
    hub_label="fine_label",
    archive_url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
)


def how_to_obtain(layout: CifarLayout, directory: str | Path | None) -> str:
    where = directory if directory is not None else "DIR"
    return (
        f"Download {layout.archive_url} and extract it so that {where}/{layout.folder} exists, "
        f"then pass dataset.root={where} (or set {CIFAR_ENV}={where})."
    )


def _fail(layout: CifarLayout, path: Path, problem: str) -> DataError:
    return DataError(
        f"{layout.name} file {path}: {problem}. {how_to_obtain(layout, path.parent.parent)}"
    )


def batch_folder(layout: CifarLayout, root: Path) -> Path:
    """The folder holding the batch files: ``root/<folder>`` or ``root`` itself."""
    nested = root / layout.folder
    if nested.is_dir():
        return nested
    if (root / layout.test_file).is_file():
        return root
    raise DataError(
        f"{layout.name}: no folder {nested} (nor batch files directly in {root}). "
        f"{how_to_obtain(layout, root)}"
    )


def _unpickle(layout: CifarLayout, path: Path) -> dict[bytes, object]:
    """A batch file's dict, read with a restricted unpickler: a file that would rebuild
    anything but arrays, lists, dicts, strings and numbers is refused, never run."""
    if not path.is_file():
        raise _fail(layout, path, "missing")
    try:
        with path.open("rb") as fh:
            batch = load_data_pickle(fh, encoding="bytes")
    except RefusedPickle as exc:
        raise _fail(layout, path, f"refused: {exc}") from exc
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, MemoryError) as exc:
        raise _fail(layout, path, f"unreadable or corrupt ({type(exc).__name__}: {exc})") from exc
    if not isinstance(batch, dict):
        raise _fail(layout, path, f"expected a pickled dict, got {type(batch).__name__}")
    return batch


def read_batch(layout: CifarLayout, path: Path) -> RawImages:
    batch = _unpickle(layout, path)
    if b"data" not in batch or layout.label_key not in batch:
        raise _fail(layout, path, f"missing key b'data' or {layout.label_key!r}")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[layout.label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * _SIDE * _SIDE:
        raise _fail(
            layout, path, f"expected uint8 data of shape (N, 3072), got {data.dtype} {data.shape}"
        )
    if labels.shape != (data.shape[0],):
        raise _fail(layout, path, f"{labels.shape[0]} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= layout.num_classes):
        raise _fail(layout, path, f"labels outside 0..{layout.num_classes - 1}")
    return RawImages(images=data.reshape(-1, 3, _SIDE, _SIDE), labels=labels)


def load_cifar_local(layout: CifarLayout, root: str | Path) -> RawImages:
    """Train batches then the test batch, pooled in that order."""
    folder = batch_folder(layout, Path(root))
    _unpickle(layout, folder / layout.meta_file)  # present and readable
    parts = [read_batch(layout, folder / name) for name in (*layout.train_files, layout.test_file)]
    return RawImages(
        images=np.concatenate([p.images for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
    )


def load_cifar_hub(layout: CifarLayout) -> RawImages:
    """Train then test split from the hub via ``flwr_datasets.FederatedDataset``."""
    try:
        from flwr_datasets import FederatedDataset

        fds = FederatedDataset(dataset=layout.hub_id, partitioners={"train": 1})
        splits = [fds.load_split(name).with_format("numpy") for name in ("train", "test")]
        images = np.concatenate([np.asarray(s["img"], dtype=np.uint8) for s in splits])
        labels = np.concatenate([np.asarray(s[layout.hub_label], dtype=np.int64) for s in splits])
    except Exception as exc:  # noqa: BLE001 -- any hub/network/cache failure means the same to the user
        raise DataError(
            f"{layout.name}: could not load {layout.hub_id} from the Hugging Face hub "
            f"({type(exc).__name__}: {exc}). Without network access use a local copy: "
            f"{how_to_obtain(layout, None)}"
        ) from exc
    if images.ndim != 4 or images.shape[1:] != (_SIDE, _SIDE, 3):
        raise DataError(
            f"{layout.name}: hub images have shape {images.shape}, expected (N, 32, 32, 3)"
        )
    return RawImages(images=np.ascontiguousarray(images.transpose(0, 3, 1, 2)), labels=labels)
