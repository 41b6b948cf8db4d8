"""The known datasets: static facts, normalisation, and where each one is loaded from.

Every dataset is returned *pooled*: its official train and test sets are
concatenated (train rows first), because pfednas re-partitions the whole pool
across clients with a Dirichlet split and then cuts each client's own
train / val / test splits (see ``partition.py``).

Directories, highest precedence first:

- ``fashion_mnist``: ``root`` argument (config ``dataset.root``) >
  environment variable ``PFEDNAS_FASHION_MNIST_DIR`` >
  ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``).
- ``cifar10`` / ``cifar100``: ``root`` > ``PFEDNAS_CIFAR_DIR`` > the Hugging Face
  hub through ``flwr_datasets`` (needs network or a warm hub cache).
- ``digits`` (scikit-learn, embedded) and ``synthetic`` (generated from the
  seed) need no files; ``root`` is ignored.
- ``own``: the user's files at ``root``, a ``.npz`` (``x``, ``y``, optionally a natural-id
  array) or an image folder with one sub-folder per class (:mod:`pfednas.data.files`); its
  classes, channels and side are read from them, its normalisation computed from the
  clients' training splits (:func:`pfednas.data.partition.data_normalisation`).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pfednas.data import cifar, files, idx, synthetic
from pfednas.data.arrays import (
    ArrayDataset,
    DataError,
    DatasetInfo,
    Normalisation,
    RawImages,
    normalise,
)


@dataclass(frozen=True)
class Source:
    info: DatasetInfo
    norm: Normalisation


# Fashion-MNIST's labels' names (Xiao et al., 2017)
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")

# Channel means / stds of the pooled images after dividing by ``scale``.
SOURCES: dict[str, Source] = {
    "digits": Source(
        DatasetInfo("digits", num_classes=10, in_channels=1, image_size=8, num_samples=1797,
                    class_names=tuple(str(i) for i in range(10))),
        Normalisation(scale=16.0, mean=(0.3053,), std=(0.3760,)),
    ),
    "fashion_mnist": Source(
        DatasetInfo(
            "fashion_mnist", num_classes=10, in_channels=1, image_size=28, num_samples=70_000,
            class_names=FASHION_MNIST_CLASSES,
        ),
        Normalisation(scale=255.0, mean=(0.2860,), std=(0.3530,)),
    ),
    "cifar10": Source(
        DatasetInfo("cifar10", num_classes=10, in_channels=3, image_size=32, num_samples=60_000,
                    class_names=cifar.CIFAR10_CLASSES),
        Normalisation(scale=255.0, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)),
    ),
    "cifar100": Source(
        DatasetInfo("cifar100", num_classes=100, in_channels=3, image_size=32,
                    num_samples=60_000, class_names=cifar.CIFAR100_CLASSES),
        Normalisation(scale=255.0, mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762)),
    ),
    "synthetic": Source(
        DatasetInfo(
            "synthetic",
            num_classes=synthetic.SYNTHETIC_CLASSES,
            in_channels=1,
            image_size=synthetic.SYNTHETIC_SIDE,
            num_samples=synthetic.DEFAULT_SYNTHETIC_SAMPLES,
        ),
        Normalisation(scale=1.0, mean=(0.0,), std=(0.5,)),
    ),
}
OWN = "own"  # the user's own files (dataset.root)
DATASET_NAMES: tuple[str, ...] = (*SOURCES, OWN)
_CIFAR_LAYOUTS = {"cifar10": cifar.CIFAR10, "cifar100": cifar.CIFAR100}


def _source(name: str) -> Source:
    if name == OWN:
        raise ValueError(f"dataset {OWN!r} has no fixed facts: they are read from its files")
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASET_NAMES)}")
    return SOURCES[name]


def dataset_info(
    name: str, *, synthetic_samples: int = synthetic.DEFAULT_SYNTHETIC_SAMPLES,
    root: str | None = None, natural_id: str = "client",
) -> DatasetInfo:
    """Facts about ``name``: static for a built-in dataset (no data loaded); for ``own``, read
    from the files at ``root`` (once per process).

    ``num_samples`` is the size of the standard pooled dataset (train + test);
    ``class_names`` each label's name (an image folder's class folders; none for
    ``synthetic``).
    """
    if name == OWN:
        files = own_files(root, natural_id)
        return DatasetInfo(OWN, files.num_classes, files.in_channels, files.image_size,
                           int(files.labels.size), class_names=files.classes)
    info = _source(name).info
    if name == "synthetic":
        return DatasetInfo(
            name,
            info.num_classes,
            info.in_channels,
            info.image_size,
            synthetic_samples,
        )
    return info


def normalisation(name: str) -> Normalisation:
    """A built-in dataset's fixed normalisation (``own``'s is computed from its data)."""
    return _source(name).norm


def own_files(root: str | None, natural_id: str = "client") -> files.FileImages:
    """The user's dataset at ``root``, read once per process (``DataError`` if unreadable)."""
    if not root:
        raise DataError(f"dataset={OWN} needs dataset.root: a .npz file or an image folder")
    return files.read_files(Path(root).expanduser(), client_key=natural_id)


def resolve_root(name: str, root: str | None) -> str | None:
    """The directory to read ``name`` from (None: no files / the hub)."""
    if name == "fashion_mnist":
        return root or os.environ.get(idx.FASHION_MNIST_ENV) or idx.FASHION_MNIST_DEFAULT_DIR
    if name in _CIFAR_LAYOUTS:
        return root or os.environ.get(cifar.CIFAR_ENV) or None
    if name == OWN and root:
        return str(Path(root).expanduser().resolve())
    return None


def _load_digits() -> RawImages:
    """scikit-learn's digits, read from the file its ``load_digits`` reads, as it reads it
    (each row 64 pixel values 0..16, then the label), without importing scikit-learn: that
    import is 1.4 s of the start of every process that reads digits (each ClientApp's)."""
    spec = importlib.util.find_spec("sklearn")  # finds the package, runs none of it
    if spec is None or spec.origin is None:
        raise DataError("dataset=digits is scikit-learn's: install scikit-learn")
    rows = np.loadtxt(Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz",
                      delimiter=",")
    images = rows[:, :-1].reshape(-1, 1, 8, 8).astype(np.uint8)
    return RawImages(images=images, labels=rows[:, -1].astype(np.int64))


def _load_raw(name: str, directory: str | None, seed: int, synthetic_samples: int,
              natural_id: str) -> RawImages:
    if name == OWN:
        own = own_files(directory, natural_id)
        return RawImages(images=own.images, labels=own.labels, clients=own.clients,
                         scale=own.scale)
    if name == "digits":
        return _load_digits()
    if name == "fashion_mnist":
        assert directory is not None
        return idx.load_fashion_mnist(directory)
    if name in _CIFAR_LAYOUTS:
        layout = _CIFAR_LAYOUTS[name]
        if directory is None:
            return cifar.load_cifar_hub(layout)
        return cifar.load_cifar_local(layout, directory)
    if name == "synthetic":
        return synthetic.make_synthetic(seed, synthetic_samples)
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASET_NAMES)}")


@functools.lru_cache(maxsize=2)
def _cached_raw(name: str, directory: str | None, seed: int, synthetic_samples: int,
                natural_id: str) -> RawImages:
    raw = _load_raw(name, directory, seed, synthetic_samples, natural_id)
    info = dataset_info(name, synthetic_samples=synthetic_samples, root=directory,
                        natural_id=natural_id)
    expected = (info.in_channels, info.image_size, info.image_size)
    if raw.images.shape[1:] != expected:
        raise DataError(f"{name}: images have shape {raw.images.shape[1:]}, expected {expected}")
    images = np.ascontiguousarray(raw.images)
    labels = np.ascontiguousarray(raw.labels, dtype=np.int64)
    images.setflags(write=False)  # shared by every client of this process
    labels.setflags(write=False)
    clients = None if raw.clients is None else np.ascontiguousarray(raw.clients, dtype=np.int64)
    if clients is not None:
        clients.setflags(write=False)
    return RawImages(images=images, labels=labels, clients=clients, scale=raw.scale)


def load_raw(
    name: str,
    root: str | None = None,
    *,
    seed: int = 0,
    synthetic_samples: int = synthetic.DEFAULT_SYNTHETIC_SAMPLES,
    natural_id: str = "client",
) -> RawImages:
    """Pooled, un-normalised, read-only images; cached per process.

    ``seed`` and ``synthetic_samples`` matter only for ``synthetic``, ``natural_id`` only for
    ``own``.
    """
    if name != OWN:
        _source(name)
        natural_id = "client"
    directory = resolve_root(name, root)
    if name != "synthetic":  # one cache entry per real dataset, whatever the seed
        seed, synthetic_samples = 0, synthetic.DEFAULT_SYNTHETIC_SAMPLES
    return _cached_raw(name, directory, seed, synthetic_samples, natural_id)


def load_arrays(
    name: str,
    root: str | None = None,
    *,
    seed: int = 0,
    synthetic_samples: int = synthetic.DEFAULT_SYNTHETIC_SAMPLES,
) -> tuple[ArrayDataset, DatasetInfo]:
    """The whole pooled dataset (official train then test rows), normalised float32.

    Raises ``DataError`` when files are missing or corrupt, ``ValueError`` for an
    unknown ``name``.
    """
    raw = load_raw(name, root, seed=seed, synthetic_samples=synthetic_samples)
    static = dataset_info(name, synthetic_samples=synthetic_samples)
    info = replace(static, num_samples=len(raw.labels))
    data = ArrayDataset(x=normalise(raw.images, normalisation(name)), y=raw.labels.copy())
    return data, info
