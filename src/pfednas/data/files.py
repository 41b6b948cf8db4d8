"""A user's own image dataset, read from its files in its native shape.

One reader serves a simulation over the user's data and a deployed silo's folder
(:mod:`pfednas.node.data`). :func:`read_files` takes

* a ``.npz`` file, or a folder holding ``data.npz``, with arrays

  - ``x``: images ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)`` with ``C`` in
    (1, 3) and ``H == W``; uint8 is read as 0–255, float as 0–1, and other integer
    arrays whose values lie in 0–255 as uint8;
  - ``y``: integer labels ``>= 0`` of shape ``(N,)``, kept as given;
  - optionally ``client`` (or another ``client_key``): an integer natural id per
    sample (a writer, a hospital), shape ``(N,)``;

* or an ``ImageFolder`` tree, as torchvision reads it: ``DIR/<class>/<image>.png``
  (:data:`IMAGE_SUFFIXES`). Folders named with digits keep that value as label,
  otherwise labels follow the sorted folder names (empty folders count). The
  images are colour (3 channels) where any file is colour (a mode other than
  :data:`GREY_MODES`), else grey, and all are resized (bilinear, aspect not kept)
  to the most common side among the files, an image's side being its larger edge
  (a tie: the larger side).

:func:`conform` converts images to a model's channels (grey → RGB by copying,
RGB → grey by the ITU-R 601-2 luma) and side (bilinear, with PIL: uint8 stays
uint8, float becomes float32); an npz at another side is resized like a folder's
images. ``read_files(..., channels=, size=)`` gives the same, but converts a
folder's images straight from each file, as PIL's ``convert`` and ``resize``
(one resize, not two): how a deployed silo reads its folder. Normalisation is the
caller's.

Nothing is allocated past the bounds of :mod:`pfednas.limits`: an ``.npz``'s arrays are
checked on their zip entries and ``.npy`` headers before they are inflated
(:mod:`pfednas.data.npz`), labels against the number of classes, and a folder's images
on their headers before any is decoded, then decoded one at a time. A file the reader
cannot take raises :class:`~pfednas.data.arrays.DataError`, one line naming the file.
Reads are cached per process under (resolved path, newest modification time), and their
arrays are read-only.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pfednas.data.arrays import DataError
from pfednas.data.npz import NpzError, npz_keys, read_npz_arrays
from pfednas.limits import MAX_DATA_BYTES, MAX_IMAGE_PIXELS, MAX_NUM_CLASSES

if TYPE_CHECKING:
    from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".tif", ".tiff", ".webp")
ARRAY_FILE = "data.npz"  # the arrays of a folder, in place of class sub-folders
CLIENT_KEY = "client"  # the npz array of natural ids, read where present
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2: grey from R, G, B


@dataclass(frozen=True)
class FileImages:
    """A dataset read from a user's files, before normalisation.

    Attributes
    ----------
    images : np.ndarray
        ``(N, C, H, W)`` with ``H == W``, uint8 (0–255) or float (0–1).
    labels : np.ndarray
        int64 ``(N,)``, each ``>= 0`` and below ``len(classes)``.
    scale : float
        255.0 for uint8 images, 1.0 for float ones.
    clients : np.ndarray | None
        int64 ``(N,)`` natural id of each sample, or None where the files give none.
    classes : tuple[str, ...]
        The name of each label: its folder's name, or ``str(label)``.
    files : tuple[str, ...]
        An image folder's: each image's file, relative to the folder (``daisy/1.png``);
        ``()`` for arrays.
    """

    images: np.ndarray
    labels: np.ndarray
    scale: float
    clients: np.ndarray | None
    classes: tuple[str, ...]
    files: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.ndim != 4 or self.images.shape[2] != self.images.shape[3]:
            raise ValueError(f"images must be (N, C, S, S), got {self.images.shape}")
        if self.labels.shape != (n,) or (self.clients is not None
                                         and self.clients.shape != (n,)):
            raise ValueError(f"labels and clients must have shape ({n},)")
        if n and int(self.labels.max()) >= len(self.classes):
            raise ValueError(f"label {int(self.labels.max())} has no name among "
                             f"{len(self.classes)} classes")
        if self.files and len(self.files) != n:
            raise ValueError(f"{len(self.files)} file names for {n} images")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[2])


def read_files(path: str | Path, *, client_key: str = CLIENT_KEY, channels: int | None = None,
               size: int | None = None) -> FileImages:
    """A ``.npz`` file, a folder holding ``data.npz``, or an ``ImageFolder`` tree; cached
    per process until a file under ``path`` changes.

    ``channels`` / ``size`` (None: the files' own) give the images those, as :func:`conform`
    does, but a folder's images each straight from its file (one resize, not two).
    """
    path = Path(path).expanduser().resolve()
    return _read_cached(str(path), file_stamp(path), client_key, channels, size)


@functools.lru_cache(maxsize=4)
def _read_cached(path: str, _stamp: int, client_key: str, channels: int | None,
                 size: int | None) -> FileImages:
    source = Path(path)
    if source.is_dir() and not (source / ARRAY_FILE).is_file():
        return read_image_folder(source, channels=channels, size=size)
    if source.is_dir():
        source = source / ARRAY_FILE
    elif source.suffix.lower() != ".npz":
        raise DataError(f"{source}: neither a .npz file nor a folder (data.npz, or "
                        "DIR/<class>/<image>.png)")
    data = read_npz(source, client_key=client_key)
    return conform(data, channels=channels or data.in_channels, size=size or data.image_size)


def file_stamp(path: str | Path) -> int:
    """The newest modification time (ns) of ``path`` and everything under it."""
    path = Path(path)
    try:
        stamp = path.stat().st_mtime_ns
        if path.is_dir():
            stamp = max([stamp, *(p.stat().st_mtime_ns for p in path.rglob("*"))])
    except OSError as err:
        raise DataError(f"{path}: cannot read ({_one_line(err)})") from err
    return stamp


def read_npz(path: str | Path, *, client_key: str = CLIENT_KEY) -> FileImages:
    """Arrays ``x``, ``y`` and, where present, ``client_key`` of a ``.npz`` file.

    The default key may be absent (``clients`` is then None); a key named otherwise
    must be there.
    """
    path = Path(path)
    try:
        arrays = read_npz_arrays(path, budget=MAX_DATA_BYTES, keys=("x", "y", client_key))
        missing = [k for k in ("x", "y") if k not in arrays]
        if client_key != CLIENT_KEY and client_key not in arrays:
            missing.append(client_key)
        if missing:
            raise DataError(f"{path}: no array {', '.join(map(repr, missing))} (it holds "
                            f"{', '.join(npz_keys(path)) or 'none'})")
    except NpzError as err:
        raise DataError(_one_line(err)) from err
    x, y, ids = arrays["x"], arrays["y"], arrays.get(client_key)
    images = _npz_images(path, x)
    labels = _npz_integers(path, "y", y, x.shape)
    if labels.size and labels.min() < 0:
        raise DataError(f"{path}: labels y must be >= 0, got {int(labels.min())}")
    if labels.size and labels.max() >= MAX_NUM_CLASSES:
        raise DataError(f"{path}: labels y must lie in 0..{MAX_NUM_CLASSES - 1} (one class "
                        f"each), got {int(labels.max())}")
    clients = None if ids is None else _npz_integers(path, client_key, ids, x.shape)
    classes = tuple(str(i) for i in range(int(labels.max()) + 1))
    return _frozen(FileImages(images=images, labels=labels, clients=clients, classes=classes,
                              scale=255.0 if images.dtype == np.uint8 else 1.0))


def _npz_images(path: Path, x: np.ndarray) -> np.ndarray:
    """``x`` as non-empty square ``(N, C, S, S)`` images, uint8 or float."""
    x = as_nchw(x)
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[2] != x.shape[3]:
        raise DataError(f"{path}: x must be square images (N, S, S), (N, S, S, C) or "
                        f"(N, C, S, S) with C in (1, 3), got {x.shape}")
    if not len(x):
        raise DataError(f"{path}: x holds no images")
    if x.dtype.kind in "iu" and x.dtype != np.uint8:
        if x.min() < 0 or x.max() > 255:
            raise DataError(f"{path}: integer x must lie in 0..255, got "
                            f"{int(x.min())}..{int(x.max())}")
        x = x.astype(np.uint8)
    if x.dtype != np.uint8 and x.dtype.kind != "f":
        raise DataError(f"{path}: x has dtype {x.dtype}; need uint8 (0-255) or float (0-1)")
    return x


def _npz_integers(path: Path, key: str, values: np.ndarray, x_shape: tuple[int, ...]
                  ) -> np.ndarray:
    """``values`` as int64, one per row of ``x``."""
    if values.shape != x_shape[:1] or values.dtype.kind not in "iu":
        raise DataError(f"{path}: {key} must be integers of shape ({x_shape[0]},), one per "
                        f"image of x {x_shape}, got {values.dtype} {values.shape}")
    return values.astype(np.int64)


def as_nchw(x: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` and ``(N, H, W, C)`` images as ``(N, C, H, W)``; others as given."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        return np.transpose(x, (0, 3, 1, 2))
    return x


def class_labels(class_dirs: list[str]) -> dict[str, int]:
    """Folder name -> label: integer names keep their value, others their sorted rank."""
    if class_dirs and all(name.isdigit() for name in class_dirs):
        return {name: int(name) for name in class_dirs}
    return {name: i for i, name in enumerate(sorted(class_dirs))}


def read_image_folder(root: str | Path, *, channels: int | None = None,
                      size: int | None = None) -> FileImages:
    """An ``ImageFolder`` tree, each file converted straight to ``channels`` and side
    ``size`` (None: 3 where any image is colour, else 1; the most common side).

    The files' headers are read first: an image over :data:`~pfednas.limits.MAX_IMAGE_PIXELS`
    pixels, or a tree whose images would take over
    :data:`~pfednas.limits.MAX_DATA_BYTES`, is refused before any is decoded; then the
    images are decoded one at a time.

    Not torchvision's ``ImageFolder`` / ``make_dataset``: its listing follows symbolic links
    (``os.walk(followlinks=True)``: a link loop never ends, a link reads outside the silo),
    its loader decodes every file whole with no pixel bound, and it ranks a folder ``10``
    before ``2`` where this reader keeps integer names' values."""
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    root = Path(root)
    class_dirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root}: no {ARRAY_FILE} and no class sub-folders (ImageFolder layout "
                        "DIR/<class>/<image>.png)")
    labels_of = class_labels(class_dirs)
    if max(labels_of.values()) >= MAX_NUM_CLASSES:
        raise DataError(f"{root}: class folder {max(labels_of, key=labels_of.__getitem__)!r} "
                        f"names label {max(labels_of.values())}; labels must lie in "
                        f"0..{MAX_NUM_CLASSES - 1}")
    files = [(file, labels_of[name]) for name in class_dirs
             for file in sorted((root / name).rglob("*"))
             if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file()]
    if not files:
        raise DataError(f"{root}: the class folders hold no images ({', '.join(IMAGE_SUFFIXES)})")
    headers = [_image_header(file) for file, _ in files]
    if channels is None:
        channels = 1 if all(mode in GREY_MODES for mode, _ in headers) else 3
    if size is None:
        sides = Counter(max(dims) for _, dims in headers)
        size = max(sides, key=lambda s: (sides[s], s))
    if len(files) * channels * size * size > MAX_DATA_BYTES:
        raise DataError(f"{root}: {len(files)} images of {channels} x {size} x {size} take "
                        f"more than the {MAX_DATA_BYTES:,} bytes a dataset may")
    mode = "L" if channels == 1 else "RGB"
    images = np.empty((len(files), channels, size, size), dtype=np.uint8)
    for i, (file, _) in enumerate(files):
        images[i] = _read_pixels(file, mode, size)
    names: dict[int, str] = {}
    for name, label in labels_of.items():  # "07" and "7" both label 7: named "07"
        names.setdefault(label, name)
    classes = tuple(names.get(i, str(i)) for i in range(max(labels_of.values()) + 1))
    labels = np.asarray([label for _, label in files], dtype=np.int64)
    return _frozen(FileImages(images=images, labels=labels, scale=255.0, clients=None,
                              classes=classes,
                              files=tuple(file.relative_to(root).as_posix() for file, _ in files)))


def _image_header(file: Path) -> tuple[str, tuple[int, int]]:
    """The mode and size of the image at ``file``, from its header (nothing decoded);
    refused over :data:`~pfednas.limits.MAX_IMAGE_PIXELS` pixels."""
    from PIL import Image

    try:
        with Image.open(file) as img:
            mode, (width, height) = img.mode, img.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DataError(f"{file}: cannot read image ({_one_line(err)})") from err
    if width * height > MAX_IMAGE_PIXELS:
        raise DataError(f"{file}: {width} x {height} pixels, more than the "
                        f"{MAX_IMAGE_PIXELS:,} an image may have")
    return mode, (width, height)


def _read_pixels(file: Path, mode: str, side: int) -> np.ndarray:
    """The image at ``file`` decoded, converted to ``mode`` and resized to ``side``."""
    from PIL import Image

    try:
        with Image.open(file) as img:
            img.load()
            return _pixels(file, img, mode, side)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DataError(f"{file}: cannot read image ({_one_line(err)})") from err


def _pixels(file: Path | None, picture: Image.Image, mode: str, side: int) -> np.ndarray:
    """``picture`` converted to ``mode`` ("L" or "RGB"), then bilinearly to ``side``, as
    uint8 ``(C, side, side)``."""
    from PIL import Image

    try:
        if picture.mode != mode:
            picture = picture.convert(mode)
        if picture.size != (side, side):
            picture = picture.resize((side, side), Image.Resampling.BILINEAR)
    except (OSError, ValueError) as err:
        raise DataError(f"{file}: cannot convert the image to {mode} ({_one_line(err)})") from err
    array = np.asarray(picture, dtype=np.uint8)
    return array[None] if array.ndim == 2 else np.transpose(array, (2, 0, 1))


def conform(images: FileImages, *, channels: int, size: int) -> FileImages:
    """``images`` with ``channels`` (1 or 3) and side ``size``; the same object where they
    already match (not cached: convert once per process where it costs)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    x = _match_channels(images.images, channels)
    if x.shape[2] != size:
        x = _resize(x, size)
    if x is images.images:
        return images
    x.setflags(write=False)
    return replace(images, images=x)  # uint8 stays uint8, float float: the same scale


def _match_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """Grey -> RGB by copying; RGB -> grey by the ITU-R 601-2 luma (uint8: rounded)."""
    if x.shape[1] == channels:
        return x
    if channels == 3:
        return np.repeat(x, 3, axis=1)
    weights = np.asarray(LUMA, dtype=np.float32).reshape(1, 3, 1, 1)
    grey = (x.astype(np.float32) * weights).sum(axis=1, keepdims=True)
    return grey.round().astype(np.uint8) if x.dtype == np.uint8 else grey


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    """Every image of ``(N, C, S, S)`` bilinearly to ``(N, C, size, size)``, with PIL:
    uint8 per image ("L" / "RGB"), float per channel ("F", float32)."""
    from PIL import Image

    if x.dtype == np.uint8:  # (S, S) -> "L", (S, S, 3) -> "RGB"
        planes = x[:, 0] if x.shape[1] == 1 else np.transpose(x, (0, 2, 3, 1))
        return np.stack([_pixels(None, Image.fromarray(np.ascontiguousarray(img)),
                                 "L" if x.shape[1] == 1 else "RGB", size) for img in planes])
    out = np.empty((*x.shape[:2], size, size), dtype=np.float32)
    for i, img in enumerate(x):
        for c, plane in enumerate(img):  # float32 (S, S) -> "F"
            picture = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32))
            out[i, c] = np.asarray(picture.resize((size, size), Image.Resampling.BILINEAR))
    return out


def _frozen(images: FileImages) -> FileImages:
    for array in (images.images, images.labels, images.clients):
        if array is not None:
            array.setflags(write=False)
    return images


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__
