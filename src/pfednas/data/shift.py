"""Feature skew (covariate shift): every client's inputs pass through its own transformation.

The rotated-MNIST setting of clustered FL (IFCA, Ghosh et al., 2020) and the feature-shift
settings of PFLlib / FL-bench, for any label partition:

1. ``draw_shifts``: from the run seed (the caller passes ``numpy_rng(seed, FEATURE_SKEW)``),
   each client gets a :class:`ClientShift`: a rotation group (a balanced, seeded deal of the
   clients into ``k`` groups, group ``g`` rotated by ``g * 360 / k`` degrees) and, per
   client, a brightness offset, contrast factor, noise level, blur sigma and resolution
   scale drawn uniformly from the ranges :class:`FeatureSkew` sets.
2. ``apply_shift``: once, when a client's data is loaded, its images on the ``[0, 1]`` scale
   (``raw / scale``, before normalisation) are transformed; the pixel noise comes from the
   client's own stream, ``numpy_rng(seed, FEATURE_NOISE, client)``.

The same seed gives the same transformations and the same pixels.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

# The order in which draw_shifts gives each kind its own child generator; never reorder.
_KINDS = ("rotation", "brightness", "contrast", "noise", "blur", "resolution")


@dataclass(frozen=True)
class FeatureSkew:
    """The ``dataset.feature_skew`` options: how far clients' inputs may differ (all off by
    default). Every range is on the ``[0, 1]`` pixel scale."""

    # 0 or 1: off; k >= 2: clients dealt into k equal groups, group g rotated by g*360/k degrees
    rotation_groups: int = 0
    brightness: float = 0.0   # a client adds an offset drawn from [-b, b]; 0 <= b <= 1
    contrast: float = 0.0     # a client scales around each image's mean by [1-c, 1+c]; 0 <= c < 1
    noise: float = 0.0        # a client adds Gaussian noise, std drawn from [0, noise]
    blur: float = 0.0         # a client blurs with a Gaussian, sigma (pixels) from [0, blur]
    resolution: float = 1.0   # a client down- and upsamples by a side scale from [resolution, 1]


    @staticmethod
    def words(values: Mapping[str, Any]) -> str:
        """The options of ``values`` (a :class:`FeatureSkew`'s fields, or a saved config's
        ``dataset.feature_skew``) that are off their defaults, ``rotation_groups=4,
        noise=0.1``; ``""`` for none."""
        defaults = FeatureSkew()
        return ", ".join(f"{k}={v}" for k, v in values.items()
                         if getattr(defaults, str(k), v) != v)

    def problems(self) -> list[str]:
        """Every out-of-range option, each naming its key (empty: valid)."""
        problems: list[str] = []
        groups = self.rotation_groups
        if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 0:
            problems.append(_problem("rotation_groups", "an integer >= 0", groups))
        ranges = (
            ("brightness", "in [0, 1]", lambda v: 0 <= v <= 1),
            ("contrast", "in [0, 1)", lambda v: 0 <= v < 1),
            ("noise", ">= 0", lambda v: v >= 0),
            ("blur", ">= 0", lambda v: v >= 0),
            ("resolution", "in (0, 1]", lambda v: 0 < v <= 1),
        )
        for key, allowed, holds in ranges:
            value = getattr(self, key)
            if not (_is_finite_number(value) and holds(value)):
                problems.append(_problem(key, f"a finite number {allowed}", value))
        return problems

    @property
    def active(self) -> bool:
        return (self.rotation_groups >= 2 or self.brightness > 0 or self.contrast > 0
                or self.noise > 0 or self.blur > 0 or self.resolution < 1)


def _is_finite_number(value: object) -> bool:
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value))


def _problem(key: str, allowed: str, value: object) -> str:
    return f"dataset.feature_skew.{key} must be {allowed}, got {value!r}"


@dataclass(frozen=True)
class ClientShift:
    """One client's drawn transformation (the defaults are the identity)."""

    rotation: float = 0.0     # degrees, counter-clockwise
    brightness: float = 0.0   # added to every pixel
    contrast: float = 1.0     # factor around each image's mean
    noise: float = 0.0        # std of the added Gaussian pixel noise
    blur: float = 0.0         # Gaussian sigma in pixels
    resolution: float = 1.0   # side scale of the down- and upsampling
    group: int | None = None  # rotation group, where rotation_groups >= 2

    @property
    def identity(self) -> bool:
        return all(getattr(self, f.name) == f.default for f in fields(self) if f.name != "group")

    def record(self) -> dict[str, float | int]:
        """As ``summary.json`` keeps it: the fields that differ from the identity, and the
        rotation group where there is one."""
        kept: dict[str, float | int] = {
            f.name: float(getattr(self, f.name)) for f in fields(self)
            if f.name != "group" and getattr(self, f.name) != f.default
        }
        if self.group is not None:
            kept["group"] = int(self.group)
        return kept

    def label(self) -> str:
        """Short text for a plot axis, in the order applied: ``rot 90°, noise 0.05``."""
        parts = []
        if self.resolution != 1.0:
            parts.append(f"res {self.resolution:.2f}")
        if self.rotation != 0.0:
            parts.append(f"rot {self.rotation:g}°")
        if self.blur != 0.0:
            parts.append(f"blur {self.blur:.2g}")
        if self.contrast != 1.0:
            parts.append(f"contrast ×{self.contrast:.2f}")
        if self.brightness != 0.0:
            parts.append(f"bright {self.brightness:+.2f}")
        if self.noise != 0.0:
            parts.append(f"noise {self.noise:.2g}")
        return ", ".join(parts) or "none"


def draw_shifts(skew: FeatureSkew, num_clients: int,
                rng: np.random.Generator) -> tuple[ClientShift, ...]:
    """Every client's transformation, from the caller's ``numpy_rng(seed, FEATURE_SKEW)``.

    ``rng`` spawns one child generator per kind, always all of them and in a fixed order,
    so a kind's draws do not depend on which other kinds are on: adding noise leaves every
    client's rotation unchanged. Rotation groups deal a seeded permutation of the clients
    round-robin into ``k`` groups (sizes differ by at most one); every other kind that is
    on draws one uniform per client, and one that is off draws nothing.
    """
    problems = skew.problems()
    if problems:
        raise ValueError("; ".join(problems))
    if num_clients < 0:
        raise ValueError(f"num_clients must be >= 0, got {num_clients}")
    streams = dict(zip(_KINDS, rng.spawn(len(_KINDS)), strict=True))
    k = skew.rotation_groups
    groups: list[int | None] = [None] * num_clients
    if k >= 2:
        for position, client in enumerate(streams["rotation"].permutation(num_clients)):
            groups[int(client)] = position % k

    def uniform(kind: str, low: float, high: float, identity: float) -> np.ndarray:
        if low == high:
            return np.full(num_clients, identity)
        return streams[kind].uniform(low, high, size=num_clients)

    b, c = skew.brightness, skew.contrast
    brightness = uniform("brightness", -b, b, 0.0)
    contrast = uniform("contrast", 1 - c, 1 + c, 1.0)
    noise = uniform("noise", 0.0, skew.noise, 0.0)
    blur = uniform("blur", 0.0, skew.blur, 0.0)
    resolution = uniform("resolution", skew.resolution, 1.0, 1.0)
    return tuple(
        ClientShift(
            rotation=0.0 if g is None else g * 360.0 / k,
            brightness=float(brightness[i]), contrast=float(contrast[i]),
            noise=float(noise[i]), blur=float(blur[i]), resolution=float(resolution[i]),
            group=g,
        )
        for i, g in enumerate(groups)
    )


def apply_shift(images: np.ndarray, shift: ClientShift,
                rng: np.random.Generator) -> np.ndarray:
    """``images`` (float, ``(N, C, H, W)``, ``H == W``, on the ``[0, 1]`` scale) transformed.

    In order: resolution (area downsampling to side ``round(resolution * H)``, bilinear
    back up), rotation (multiples of 90° exactly by ``np.rot90``; other angles bilinear,
    corners filled with 0), blur (Gaussian over H and W), contrast (around each image's
    mean), brightness, noise (from ``rng``, the caller's ``numpy_rng(seed, FEATURE_NOISE,
    client)``), then clipped to ``[0, 1]``. Returns a new float32 array of the same shape
    (``images`` is never written); the identity returns ``images`` as float32, unchanged.
    """
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4 or x.shape[2] != x.shape[3]:
        raise ValueError(f"images must have shape (N, C, H, H), got {x.shape}")
    if shift.identity:
        return x
    x = _resample(x, shift.resolution)
    x = _rotate(x, shift.rotation)
    if shift.blur > 0:
        from scipy import ndimage  # here: a ClientApp without a blur or rotation skips SciPy

        x = ndimage.gaussian_filter(x, sigma=(0, 0, shift.blur, shift.blur))
    if shift.contrast != 1.0:
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        x = (x - mean) * np.float32(shift.contrast) + mean
    if shift.brightness != 0.0:
        x = x + np.float32(shift.brightness)
    if shift.noise > 0:
        x = x + rng.standard_normal(x.shape, dtype=np.float32) * np.float32(shift.noise)
    return np.clip(x, 0.0, 1.0).astype(np.float32, copy=False)


def _resample(x: np.ndarray, scale: float) -> np.ndarray:
    """Down to side ``round(scale * H)`` by area averaging, back up to ``H`` bilinearly."""
    side = x.shape[-1]
    small = max(1, round(scale * side))
    if small == side:
        return x
    m = (_bilinear_matrix(side, small) @ _area_matrix(side, small)).astype(np.float32)
    return m @ x @ m.T


def _area_matrix(size: int, small: int) -> np.ndarray:
    """``(small, size)``: output pixel ``i`` averages input span ``[i, i + 1) * size / small``."""
    edges = np.arange(small + 1) * (size / small)
    starts, ends = edges[:-1, None], edges[1:, None]
    pixels = np.arange(size)[None, :]
    overlap = np.clip(np.minimum(ends, pixels + 1) - np.maximum(starts, pixels), 0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def _bilinear_matrix(size: int, small: int) -> np.ndarray:
    """``(size, small)``: linear interpolation at half-pixel centres, clamped at the edges."""
    centres = np.clip((np.arange(size) + 0.5) * (small / size) - 0.5, 0, small - 1)
    low = np.floor(centres).astype(np.int64)
    high = np.minimum(low + 1, small - 1)
    frac = centres - low
    m = np.zeros((size, small))
    rows = np.arange(size)
    np.add.at(m, (rows, low), 1 - frac)
    np.add.at(m, (rows, high), frac)
    return m


def _rotate(x: np.ndarray, degrees: float) -> np.ndarray:
    """Counter-clockwise in the (H, W) plane; multiples of 90° are exact."""
    quarters, rest = divmod(degrees, 90.0)
    if rest == 0:
        return np.ascontiguousarray(np.rot90(x, int(quarters) % 4, axes=(2, 3)))
    from scipy import ndimage

    return ndimage.rotate(x, degrees, axes=(2, 3), reshape=False, order=1,
                          mode="constant", cval=0.0)
