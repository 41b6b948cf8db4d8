"""Array containers shared by every dataset loader and the partitioning code."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class DataError(Exception):
    """A dataset file is missing, truncated or corrupt, or a source is unreachable.

    The message names the offending path (or source) and how to obtain the data.
    """


@dataclass(frozen=True)
class ArrayDataset:
    """Images and labels held in memory.

    Attributes
    ----------
    x : np.ndarray
        float32, shape ``(N, C, H, W)``, normalised per channel with the
        dataset's fixed mean / std (see ``pfednas.data.registry``).
    y : np.ndarray
        int64, shape ``(N,)``, class ids in ``[0, num_classes)``.
    """

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if self.x.ndim != 4:
            raise ValueError(f"x must have shape (N, C, H, W), got {self.x.shape}")
        if self.y.shape != (self.x.shape[0],):
            raise ValueError(f"y has shape {self.y.shape}, expected ({self.x.shape[0]},)")

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class ClientData:
    """One client's local splits, disjoint and stratified by label."""

    train: ArrayDataset
    val: ArrayDataset
    test: ArrayDataset


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset, known without loading it."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    num_samples: int
    class_names: tuple[str, ...] = ()  # each label's name, where the dataset has them


@dataclass(frozen=True)
class RawImages:
    """Pooled images in their stored dtype (uint8 for real data), not yet normalised.

    Kept in this compact form in the per-process cache; a client normalises
    only its own rows (``normalise``), so K clients in one worker hold one
    copy of the pooled data, not K float copies.
    """

    images: np.ndarray  # (N, C, H, W), any real dtype
    labels: np.ndarray  # int64, (N,)
    clients: np.ndarray | None = None  # int64, (N,): each sample's natural client id (own)
    scale: float | None = None  # own data: 255 (uint8) or 1 (float); built-ins: Normalisation's


@dataclass(frozen=True)
class Normalisation:
    """``x = (raw / scale - mean[c]) / std[c]`` per channel ``c``."""

    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]


def normalise(images: np.ndarray, norm: Normalisation) -> np.ndarray:
    """Convert raw ``(N, C, H, W)`` images to normalised float32 (two in-place passes)."""
    std = np.asarray(norm.std, dtype=np.float64).reshape(1, -1, 1, 1)
    mean = np.asarray(norm.mean, dtype=np.float64).reshape(1, -1, 1, 1)
    x = np.array(images, dtype=np.float32, order="C", copy=True)
    x *= (1.0 / (norm.scale * std)).astype(np.float32)
    x -= (mean / std).astype(np.float32)
    return x


def select(raw: RawImages, indices: np.ndarray, norm: Normalisation) -> ArrayDataset:
    """The rows ``indices`` of ``raw`` as a normalised ``ArrayDataset``."""
    return ArrayDataset(
        x=normalise(raw.images[indices], norm),
        y=raw.labels[indices].astype(np.int64),
    )
