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

  :mod:`pfednas.data.files` reads it (the reader a simulation over a user's own
  files uses too); the images are converted to the configured dataset's channels
  and size (the model is built from it) and normalised with its per-channel
  mean / std; uint8 data is read as 0–255, float data as 0–1. Only sample counts
  leave the silo (in the metrics of its replies), never the layout or the files.

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

from pathlib import Path

import numpy as np
from flwr.app import Context

from pfednas.config import RunSettings
from pfednas.data import ArrayDataset, ClientData, DataError, dataset_info, load_client_data
from pfednas.data.files import ARRAY_FILE as ARRAY_FILE  # re-exported: pfednas.delivery.predict
from pfednas.data.files import IMAGE_SUFFIXES as IMAGE_SUFFIXES
from pfednas.data.files import FileImages, file_stamp, read_files
from pfednas.data.files import as_nchw as as_nchw
from pfednas.data.files import class_labels as class_labels
from pfednas.data.partition import stratified_split
from pfednas.data.registry import normalisation
from pfednas.node.cache import cached_splits, node_cache_dir
from pfednas.seeding import SILO_SPLIT, numpy_rng

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


def read_silo(directory: Path, *, channels: int, size: int) -> FileImages:
    """``data.npz`` if present, else an ``ImageFolder`` tree, at ``channels`` and ``size``;
    read once per process (:func:`pfednas.data.files.read_files`)."""
    directory = Path(directory).expanduser().resolve()
    silo_stamp(directory)  # a silo is a folder
    return read_files(directory, channels=channels, size=size)


def silo_stamp(directory: Path) -> int:
    """The newest modification time in a silo folder (raises :class:`DataError` if none)."""
    if not directory.is_dir():
        raise DataError(f"silo data-dir {directory} is not a directory")
    return file_stamp(directory)
