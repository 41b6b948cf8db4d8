"""Which data a node trains on, from its node config.

Two kinds of node (``flower-supernode --node-config '...'``):

* **Partition node** (simulation and demos): ``partition-id=<i> num-partitions=<K>``
  picks client ``i``'s Dirichlet partition of the configured dataset, identical
  for every method.
* **Silo node** (cross-silo deployment): ``client-id=<i> data-dir=<PATH>`` reads the
  silo's own folder and splits it locally into train / val / test, stratified by
  label with the fractions of the ``dataset`` config. The folder holds either

  - ``data.npz`` with arrays ``x`` (``(N, H, W)``, ``(N, H, W, C)`` or
    ``(N, C, H, W)``) and ``y`` (``(N,)`` integer labels), or
  - images in class sub-folders, as torchvision's ``ImageFolder`` reads them
    (``DIR/<class>/<image>.png``; ``.png .jpg .jpeg .bmp .pgm .ppm .tif .tiff .webp``).
    Folders named ``0 .. C-1`` give those labels; otherwise labels follow the
    sorted folder names, so every silo must then list the same class folders
    (empty ones allowed).

  Images are converted to the configured dataset's channels and size (the
  model is built from it) and normalised with its per-channel mean / std;
  uint8 data is read as 0–255, float data as 0–1. Only sample counts leave the
  silo (in the metrics of its replies), never the layout or the files.

Paths come from the node's operator. In a deployment the dataset's folder is the
node config's ``data-root`` (else the dataset's environment variable or default
folder), and a run config that names another ``dataset.root`` is refused
(:func:`node_data_root`): whoever submits a run never chooses which files a node
reads. A simulation keeps ``dataset.root`` from the config.

In a deployment every message starts a fresh ClientApp process, so a node would
rebuild its splits (a partition: the Dirichlet partition of the whole dataset) each
time; with a cache folder (node config ``cache-dir``, see :mod:`pfednas.node.cache`)
they are kept there and reread instead.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flwr.app import Context

from pfednas.config import RunSettings
from pfednas.data import ArrayDataset, ClientData, DataError, dataset_info, load_client_data
from pfednas.data.partition import stratified_split
from pfednas.data.registry import normalisation
from pfednas.node.cache import cached_splits, node_cache_dir
from pfednas.seeding import SILO_SPLIT, numpy_rng

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".tif", ".tiff", ".webp")
ARRAY_FILE = "data.npz"
DATA_ROOT_KEY = "data-root"  # node config: the folder of the configured dataset's files


def client_id_of(context: Context) -> int:
    """The client id of this node: ``partition-id``, or ``client-id`` for a silo."""
    config = context.node_config
    for key in ("partition-id", "client-id"):
        if key in config:
            return int(config[key])
    raise ValueError("node config has neither 'partition-id' nor 'client-id': start the "
                     "SuperNode with --node-config 'partition-id=<i> num-partitions=<K>' or, "
                     "for a silo's own data, --node-config 'client-id=<i> data-dir=<PATH>'")


def node_data_root(context: Context, run_root: str | None) -> str | None:
    """``dataset.root`` of a deployed node: its node config ``data-root`` (None: the
    dataset's environment variable or default folder).

    Raises :class:`DataError` when the run config names a ``dataset.root`` other than
    that folder: the submitter of a run does not choose the files a node reads.
    """
    node_root = str(context.node_config.get(DATA_ROOT_KEY, "")).strip() or None
    if run_root and (node_root is None or Path(run_root).resolve() != Path(node_root).resolve()):
        raise DataError(
            f"run config dataset.root={run_root!r} is refused in a deployment: a node reads "
            f"only the folder its operator names in the node config ({DATA_ROOT_KEY}="
            f"{node_root!r}); drop dataset.root from the run, or start the SuperNode with "
            f"--node-config '... {DATA_ROOT_KEY}=\"<folder>\"'")
    return node_root


def node_client_data(context: Context, settings: RunSettings) -> ClientData:
    """The node's train/val/test splits (its partition, or its silo folder), through the
    node's cache folder when it has one."""
    client_id = client_id_of(context)
    cache = node_cache_dir(context)
    data_dir = str(context.node_config.get("data-dir", "")).strip()
    if data_dir:
        folder = Path(data_dir).expanduser().resolve()
        return cached_splits(cache, client_id, ("silo", settings.data, str(folder),
                                                silo_stamp(folder)),
                             lambda: silo_client_data(folder, settings, client_id))
    return cached_splits(cache, client_id, ("partition", settings.data),
                         lambda: load_client_data(settings.data, client_id))


@dataclass(frozen=True)
class SiloImages:
    """A silo's pooled images before normalisation: ``(N, C, H, W)`` and labels."""

    images: np.ndarray
    labels: np.ndarray
    scale: float  # 255 for uint8 sources, 1 for float sources


def silo_client_data(data_dir: str | Path, settings: RunSettings, client_id: int) -> ClientData:
    """Read a silo folder and split it like a partition (raises :class:`DataError`)."""
    spec = settings.data
    info = dataset_info(spec.name)
    silo = read_silo(Path(data_dir), channels=info.in_channels, size=info.image_size)
    if silo.labels.size and (silo.labels.min() < 0 or silo.labels.max() >= info.num_classes):
        raise DataError(f"{data_dir}: labels must be in [0, {info.num_classes}) for dataset "
                        f"{spec.name!r}, got {int(silo.labels.min())}..{int(silo.labels.max())}")
    if silo.labels.size < spec.min_partition_size:
        raise DataError(f"{data_dir}: {silo.labels.size} samples, fewer than "
                        f"dataset.min_partition_size ({spec.min_partition_size})")
    parts = stratified_split(silo.labels, spec.fractions,
                             numpy_rng(spec.seed, SILO_SPLIT, client_id))
    norm = normalisation(spec.name)
    mean = np.asarray(norm.mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(norm.std, dtype=np.float32).reshape(1, -1, 1, 1)

    def select(rows: np.ndarray) -> ArrayDataset:
        x = silo.images[rows].astype(np.float32) / np.float32(silo.scale)
        return ArrayDataset(x=np.ascontiguousarray((x - mean) / std, dtype=np.float32),
                            y=silo.labels[rows].astype(np.int64))

    train, val, test = (select(p) for p in parts)
    return ClientData(train=train, val=val, test=test)


def read_silo(directory: Path, *, channels: int, size: int) -> SiloImages:
    """``data.npz`` if present, else an ``ImageFolder`` tree; cached per process."""
    directory = Path(directory).expanduser().resolve()
    return _read_silo_cached(str(directory), channels, size, silo_stamp(directory))


def silo_stamp(directory: Path) -> int:
    """The newest modification time in a silo folder (raises :class:`DataError` if none)."""
    if not directory.is_dir():
        raise DataError(f"silo data-dir {directory} is not a directory")
    return max((p.stat().st_mtime_ns for p in directory.rglob("*")), default=0)


@functools.lru_cache(maxsize=4)
def _read_silo_cached(directory: str, channels: int, size: int, _stamp: int) -> SiloImages:
    path = Path(directory)
    if (path / ARRAY_FILE).is_file():
        return _read_npz(path / ARRAY_FILE, channels=channels, size=size)
    return _read_image_folder(path, channels=channels, size=size)


def _read_npz(path: Path, *, channels: int, size: int) -> SiloImages:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            x, y = np.asarray(arrays["x"]), np.asarray(arrays["y"])
    except (OSError, KeyError, ValueError) as err:
        raise DataError(f"{path}: cannot read arrays 'x' and 'y' ({err})") from err
    if y.ndim != 1 or x.shape[0] != y.shape[0] or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: need x with N rows and integer y of shape (N,), "
                        f"got x {x.shape} and y {y.shape} {y.dtype}")
    x = as_nchw(x)
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[2:] != (size, size):
        raise DataError(f"{path}: x must be (N, {size}, {size}[, C]) or (N, C, {size}, {size}) "
                        f"with C in (1, 3) for this dataset, got {x.shape}")
    x = _match_channels(x, channels)
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    return SiloImages(images=x, labels=y.astype(np.int64), scale=scale)


def as_nchw(x: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` and ``(N, H, W, C)`` images as ``(N, C, H, W)``; others as given."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        return np.transpose(x, (0, 3, 1, 2))
    return x


def _match_channels(x: np.ndarray, channels: int) -> np.ndarray:
    if x.shape[1] == channels:
        return x
    if channels == 3:
        return np.repeat(x, 3, axis=1)
    weights = np.asarray([0.299, 0.587, 0.114], dtype=np.float32).reshape(1, 3, 1, 1)
    gray = (x.astype(np.float32) * weights).sum(axis=1, keepdims=True)
    return gray.round().astype(np.uint8) if x.dtype == np.uint8 else gray


def class_labels(class_dirs: list[str]) -> dict[str, int]:
    """Folder name -> label: integer names keep their value, others their sorted rank."""
    if class_dirs and all(name.isdigit() for name in class_dirs):
        return {name: int(name) for name in class_dirs}
    return {name: i for i, name in enumerate(sorted(class_dirs))}


def _read_image_folder(root: Path, *, channels: int, size: int) -> SiloImages:
    from PIL import Image, UnidentifiedImageError

    class_dirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root}: no {ARRAY_FILE} and no class sub-folders (ImageFolder layout "
                        "DIR/<class>/<image>.png)")
    labels_of = class_labels(class_dirs)
    mode = "L" if channels == 1 else "RGB"
    images, labels = [], []
    for name in class_dirs:
        for file in sorted((root / name).rglob("*")):
            if file.suffix.lower() not in IMAGE_SUFFIXES or not file.is_file():
                continue
            try:
                with Image.open(file) as img:
                    picture = img.convert(mode)
                    if picture.size != (size, size):
                        picture = picture.resize((size, size), Image.Resampling.BILINEAR)
                    array = np.asarray(picture, dtype=np.uint8)
            except (OSError, UnidentifiedImageError) as err:
                raise DataError(f"{file}: cannot read image ({err})") from err
            images.append(array[None] if array.ndim == 2 else np.transpose(array, (2, 0, 1)))
            labels.append(labels_of[name])
    if not images:
        raise DataError(f"{root}: the class folders hold no images ({', '.join(IMAGE_SUFFIXES)})")
    return SiloImages(images=np.stack(images), labels=np.asarray(labels, dtype=np.int64),
                      scale=255.0)
