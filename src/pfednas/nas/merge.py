"""Overlap-aware averaging of nested subnets into a supernet.

One function serves PerFedRLNAS's aggregation (Yao & Li, "One-for-All
Personalized Federated NAS": each returned subnet is zero-filled to supernet
shape and every supernet entry is divided by the number of clients that
covered it) and HAPFNAS's heteroFedAvg (every parameter entry averaged over
the clients whose architecture contains it).  With weights, entry ``e`` becomes

    θ_e ← Σ_i w_i · 1[e ∈ region_i] · θ_{i,e}  /  Σ_i w_i · 1[e ∈ region_i]

and keeps its current value where no client (or only zero weight) covered it —
unlike the Plato reference, which merges into a freshly initialised proxy.

BatchNorm statistics: ``running_mean`` / ``running_var`` are float buffers and
are averaged exactly like weights, over the clients covering each channel.
Integer buffers (``num_batches_tracked``) stay integer: they take the *maximum*
over the covering clients (the BatchNorms here use a fixed momentum, so the
counter is bookkeeping only; summing would grow it with the number of clients).

Typical calls::

    overlap_average(supernet.state_arrays(),
                    [(supernet.regions(arch_i), arrays_i, n_i) for ...])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Region = tuple[int, tuple[slice, ...]]
Contribution = tuple[Sequence[Region], Sequence[np.ndarray], float]
"""(regions of the client's arch, its arrays in the same order, its weight ≥ 0)."""


def overlap_average(
    supernet_arrays: Sequence[np.ndarray], contributions: Sequence[Contribution]
) -> list[np.ndarray]:
    """Merge subnet arrays into the supernet, averaging each entry over its covering clients.

    Parameters
    ----------
    supernet_arrays:
        Current supernet state (``Supernet.state_arrays()`` order); not modified.
    contributions:
        ``(regions, arrays, weight)`` per client: ``regions[j] = (tensor index,
        slices)`` says where ``arrays[j]`` sits in ``supernet_arrays``
        (``Supernet.regions(arch)``); typically weight = number of samples.

    Returns
    -------
    list of np.ndarray
        New supernet arrays, same shapes and dtypes.
    """
    sums: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    maxima: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    is_int = [np.issubdtype(a.dtype, np.integer) for a in supernet_arrays]
    for regions, arrays, weight in contributions:
        if len(regions) != len(arrays):
            raise ValueError(f"{len(regions)} regions but {len(arrays)} arrays")
        if weight < 0:
            raise ValueError(f"negative weight {weight}")
        for (i, where), value in zip(regions, arrays, strict=True):
            base = supernet_arrays[i]
            if base[where].shape != np.shape(value):
                raise ValueError(
                    f"tensor {i}: region shape {base[where].shape} != array shape {np.shape(value)}"
                )
            if is_int[i]:
                _accumulate_max(maxima, i, base, where, value)
            elif weight > 0:
                _accumulate_sum(sums, i, base, where, value, weight)
    out = [np.array(a, copy=True) for a in supernet_arrays]
    for i, (total, coverage) in sums.items():
        covered = coverage > 0
        out[i][covered] = (total[covered] / coverage[covered]).astype(out[i].dtype)
    for i, (best, covered) in maxima.items():
        out[i][covered] = best[covered]
    return out


def _accumulate_sum(
    sums: dict[int, tuple[np.ndarray, np.ndarray]],
    i: int,
    base: np.ndarray,
    where: tuple[slice, ...],
    value: np.ndarray,
    weight: float,
) -> None:
    if i not in sums:
        sums[i] = (np.zeros(base.shape, np.float64), np.zeros(base.shape, np.float64))
    total, coverage = sums[i]
    total[where] += weight * value
    coverage[where] += weight


def _accumulate_max(
    maxima: dict[int, tuple[np.ndarray, np.ndarray]],
    i: int,
    base: np.ndarray,
    where: tuple[slice, ...],
    value: np.ndarray,
) -> None:
    if i not in maxima:
        maxima[i] = (np.full_like(base, np.iinfo(base.dtype).min), np.zeros(base.shape, bool))
    best, covered = maxima[i]
    best[where] = np.maximum(best[where], np.asarray(value, base.dtype))
    covered[where] = True
