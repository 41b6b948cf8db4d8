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

A robust ``rule`` (:mod:`pfednas.nas.aggregation`: the replies screened against the
coordinate-wise median, then each entry's trimmed mean or median over the kept clients
covering it) ignores the weights but 0, and treats BatchNorm statistics and integer buffers
alike (:func:`overlap_merge` also says which replies the screen kept).

Typical calls::

    overlap_average(supernet.state_arrays(),
                    [(supernet.regions(arch_i), arrays_i, n_i) for ...])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pfednas.nas.aggregation import (
    METHOD_MEAN,
    AggregationRule,
    Merged,
    robust_merge,
    same_region,
)

Region = tuple[int, tuple[slice, ...]]
Contribution = tuple[Sequence[Region], Sequence[np.ndarray], float]
"""(regions of the client's arch, its arrays in the same order, its weight ≥ 0)."""


def overlap_average(
    supernet_arrays: Sequence[np.ndarray], contributions: Sequence[Contribution],
    rule: AggregationRule = METHOD_MEAN,
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
    rule:
        ``mean`` (the weighted average above), or a robust rule
        (:func:`pfednas.nas.aggregation.robust_merge` over the contributions of weight > 0).

    Returns
    -------
    list of np.ndarray
        New supernet arrays, same shapes and dtypes.

    Notes
    -----
    Work is grouped per supernet tensor; a tensor whose covering clients all
    have the same region (every DARTS operation, BatchNorm buffers, equal
    widths) is averaged on that region only, without full-size float64
    temporaries.  Sums run in client order in float64, so the result is
    bit-for-bit the one of the plain per-entry definition.
    """
    is_int = [np.issubdtype(a.dtype, np.integer) for a in supernet_arrays]
    groups: dict[int, list[tuple[tuple[slice, ...], np.ndarray, float]]] = {}
    for regions, arrays, weight in contributions:
        if len(regions) != len(arrays):
            raise ValueError(f"{len(regions)} regions but {len(arrays)} arrays")
        if weight < 0:
            raise ValueError(f"negative weight {weight}")
        for (i, where), value in zip(regions, arrays, strict=True):
            if supernet_arrays[i][where].shape != np.shape(value):
                raise ValueError(
                    f"tensor {i}: region shape {supernet_arrays[i][where].shape} "
                    f"!= array shape {np.shape(value)}"
                )
            if is_int[i] or weight > 0:  # integer buffers: any weight; floats: weight > 0
                group = groups.get(i)
                if group is None:
                    groups[i] = [(where, value, weight)]
                else:
                    group.append((where, value, weight))
    if rule.robust:
        return overlap_merge(supernet_arrays, contributions, rule).arrays
    out = [np.array(a, copy=True) for a in supernet_arrays]
    for i, entries in groups.items():
        (_merge_max if is_int[i] else _merge_mean)(out[i], entries)
    return out


def overlap_merge(supernet_arrays: Sequence[np.ndarray], contributions: Sequence[Contribution],
                  rule: AggregationRule) -> Merged:
    """:func:`overlap_average`, and for each contribution whether a robust rule's screen kept
    it (every one for the mean; a robust rule leaves out the contributions of weight 0)."""
    if not rule.robust:
        return Merged(overlap_average(supernet_arrays, contributions), [True] * len(contributions))
    if any(weight < 0 for _, _, weight in contributions):
        raise ValueError(f"negative weight in {[w for _, _, w in contributions]}")
    holding = [c for c, (_, _, weight) in enumerate(contributions) if weight > 0]
    merged = robust_merge(supernet_arrays, [
        [(i, where, value) for (i, where), value in zip(contributions[c][0], contributions[c][1],
                                                        strict=True)]
        for c in holding], rule)
    kept = [True] * len(contributions)
    for c, keep in zip(holding, merged.kept, strict=True):
        kept[c] = keep
    return Merged(merged.arrays, kept)


def _same_region(entries: list[tuple[tuple[slice, ...], np.ndarray, float]]) -> bool:
    """Whether every entry has the same region (given as a tuple of slices)."""
    return same_region(entries[0][0], (where for where, _, _ in entries))


def _merge_mean(
    out: np.ndarray, entries: list[tuple[tuple[slice, ...], np.ndarray, float]]
) -> None:
    """``out[e] ← Σ w·x[e] / Σ w`` over the entries covering ``e`` (all weights > 0)."""
    if _same_region(entries):
        # one region: every entry of it is covered by all; the float64 sums run in client
        # order exactly as in the full-size form below (``0.0 +`` first, for signed zeros)
        where, value, weight = entries[0]
        total = np.add(weight * value, 0.0, dtype=np.float64)
        weights = np.float64(0.0) + np.float64(weight)
        for _, value, weight in entries[1:]:
            total += weight * value
            weights += np.float64(weight)
        out[where] = total / weights
        return
    total = np.zeros(out.shape, np.float64)
    coverage = np.zeros(out.shape, np.float64)
    for where, value, weight in entries:
        total[where] += weight * value
        coverage[where] += weight
    covered = coverage > 0
    np.divide(total, coverage, out=total, where=covered)
    np.copyto(out, total, casting="unsafe", where=covered)


def _merge_max(out: np.ndarray, entries: list[tuple[tuple[slice, ...], np.ndarray, float]]) -> None:
    """``out[e] ← max x[e]`` over the entries covering ``e`` (integer buffers)."""
    if _same_region(entries):
        where, value, _ = entries[0]
        best = np.asarray(value, out.dtype)
        for _, value, _ in entries[1:]:
            best = np.maximum(best, np.asarray(value, out.dtype))
        out[where] = best
        return
    best = np.full_like(out, np.iinfo(out.dtype).min)
    covered = np.zeros(out.shape, bool)
    for where, value, _ in entries:
        best[where] = np.maximum(best[where], np.asarray(value, out.dtype))
        covered[where] = True
    out[covered] = best[covered]

