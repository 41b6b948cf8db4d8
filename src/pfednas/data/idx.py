"""Fashion-MNIST from its IDX files, read and validated with numpy.

The four files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``) are looked up in one
directory, each either plain or gzip-compressed (``.gz``); the plain file wins
when both exist. Debian's ``dataset-fashion-mnist`` package ships the ``.gz``
files in ``/usr/share/datasets/fashion-mnist``.

IDX layout: two zero bytes, a type byte (``0x08`` = unsigned byte), the number
of dimensions, then one big-endian uint32 per dimension, then the data.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from pfednas.data.arrays import DataError, RawImages

FASHION_MNIST_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_ENV = "PFEDNAS_FASHION_MNIST_DIR"
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
IMAGE_SIDE = 28
NUM_CLASSES = 10
_UBYTE = 0x08


def how_to_obtain(directory: str | Path) -> str:
    return (
        "Obtain Fashion-MNIST with `apt-get install dataset-fashion-mnist` (installs it in "
        f"{FASHION_MNIST_DEFAULT_DIR}) or download the four IDX files "
        f"({', '.join(f + '.gz' for f in FASHION_MNIST_FILES)}) from "
        f"https://github.com/zalandoresearch/fashion-mnist into {directory}; choose the "
        f"directory with dataset.root or the {FASHION_MNIST_ENV} environment variable."
    )


def _fail(path: Path, problem: str) -> DataError:
    return DataError(f"Fashion-MNIST file {path}: {problem}. {how_to_obtain(path.parent)}")


def find_file(directory: Path, base: str) -> Path:
    """The plain or ``.gz`` file named ``base`` in ``directory``."""
    for candidate in (directory / base, directory / f"{base}.gz"):
        if candidate.is_file():
            return candidate
    raise _fail(directory / base, "missing (looked for it plain and with .gz)")


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise _fail(path, f"unreadable or corrupt ({type(exc).__name__}: {exc})") from exc


def parse_idx(data: bytes, path: Path) -> np.ndarray:
    """Decode an unsigned-byte IDX payload, checking its header against its size."""
    if len(data) < 4:
        raise _fail(path, f"truncated: {len(data)} bytes, shorter than the IDX magic number")
    if data[0] != 0 or data[1] != 0 or data[2] != _UBYTE:
        raise _fail(path, f"bad magic number 0x{data[:4].hex()} (not an unsigned-byte IDX file)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise _fail(path, f"truncated or invalid header ({ndim} dimensions, {len(data)} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        raise _fail(
            path,
            f"size mismatch: header says shape {shape} ({expected} bytes) "
            f"but the data has {len(data)} bytes (truncated or corrupt)",
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_idx(path: Path) -> np.ndarray:
    return parse_idx(_read_bytes(path), path)


def _read_pair(directory: Path, images_base: str, labels_base: str) -> RawImages:
    images_path = find_file(directory, images_base)
    labels_path = find_file(directory, labels_base)
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise _fail(images_path, f"expected images of shape (N, 28, 28), got {images.shape}")
    if labels.ndim != 1:
        raise _fail(labels_path, f"expected a 1-D label file, got shape {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise _fail(
            labels_path,
            f"{labels.shape[0]} labels but {images_path.name} holds {images.shape[0]} images",
        )
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        raise _fail(labels_path, f"label {int(labels.max())} outside 0..{NUM_CLASSES - 1}")
    return RawImages(images=images[:, None, :, :], labels=labels.astype(np.int64))


def load_fashion_mnist(directory: str | Path) -> RawImages:
    """Train and test files pooled (train rows first, then the 10,000 test rows)."""
    root = Path(directory)
    if not root.is_dir():
        raise DataError(f"Fashion-MNIST directory {root} does not exist. {how_to_obtain(root)}")
    train = _read_pair(root, FASHION_MNIST_FILES[0], FASHION_MNIST_FILES[1])
    test = _read_pair(root, FASHION_MNIST_FILES[2], FASHION_MNIST_FILES[3])
    return RawImages(
        images=np.concatenate([train.images, test.images]),
        labels=np.concatenate([train.labels, test.labels]),
    )
