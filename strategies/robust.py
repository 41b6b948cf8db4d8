"""Bounding each client's update by the round's median update norm: pure functions.

A client's *update* is what it returned minus what the server sent it, on the
entries it returned (a whole model, or a subnet's slice of the supernet). Its
size is the root mean square over those float entries, ``r_i = ‖u_i‖ / √n_i``
(the L2 norm per entry: subnets of different sizes compare fairly; for
updates of one size it orders them as the L2 norm does). With a bound factor
``c``, every update with ``r_i > B`` is scaled down to ``r_i = B`` before any
average or merge sees it (norm clipping, Sun et al., "Can You Really Backdoor
Federated Learning?", 2019, with the round's median as the reference), where

    B = c · m_hi

``m_hi`` the upper median of the round's ``r`` (the ⌊k/2⌋+1-th smallest of k):

    u_i ← u_i · min(1, B / r_i),   returned_i ← sent_i + u_i

so ``‖u_i‖ ≤ B √n_i`` whatever client ``i`` returned, and a weighted average of
updates of one size lies within ``B √n`` of what was sent. With ``h`` the honest
replies' sizes and at most ⌊k/2⌋ replies colluding:

* they cannot deflate the honest updates: at least ⌈k/2⌉ sizes are honest, so the upper
  median is at least ``min h``, and every honest update within a factor ``c`` of the
  smallest honest one passes whole (each keeps a scale of at least ``c · min h / h_i``).
  Zero updates (a client returning what it got) cannot zero the bound, nor can sizes placed
  just above ``m_hi / c`` pull it down (issue 61, finding 9: the earlier
  ``max(m_hi, c · min(m_lo, m_hi))`` took the lower median of such sizes, and scaled an
  honest update to 0.79 at 2 colluders of 4, to 0.05 with a 20× honest spread);
* fewer than k/2 of them cannot loosen the bound: the upper median is then an honest
  size, ``B ≤ c · max h``. At exactly half (k even) the upper median may be a colluder's, so
  colluders may pass at ``c`` times their own smallest size; a robust aggregation's screen
  (:mod:`pfednas.nas.aggregation`, a deployment's default) then leaves them out, and the
  reply gate's magnitude check (:data:`pfednas.wire.validation.MAX_PARAM`) bounds every
  value they send.

Float arrays are
bounded; integer arrays (BatchNorm's ``num_batches_tracked``) pass unchanged —
the reply gate bounds them by their role. An update within the bound is
returned as the very same arrays (bit for bit).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def update_rms(returned: Sequence[np.ndarray], sent: Sequence[np.ndarray]) -> float:
    """Root mean square of ``returned - sent`` over every float entry (0.0 if none)."""
    if len(returned) != len(sent):
        raise ValueError(f"{len(returned)} arrays returned for {len(sent)} sent")
    total, count = 0.0, 0
    for new, old in zip(returned, sent, strict=True):
        if np.issubdtype(np.asarray(new).dtype, np.floating):
            diff = np.asarray(new, np.float64) - np.asarray(old, np.float64)
            total += float(np.sum(np.square(diff)))  # numpy's own reduction, not BLAS
            count += diff.size
    return float(np.sqrt(total / count)) if count else 0.0


def lower_median(values: Sequence[float]) -> float:
    """The ⌈n/2⌉-th smallest value (the median of an odd count, the lower middle of an even)."""
    if not values:
        raise ValueError("no values")
    return float(np.sort(np.asarray(values, np.float64))[(len(values) - 1) // 2])


def upper_median(values: Sequence[float]) -> float:
    """The ⌊n/2⌋+1-th smallest value (the median of an odd count, the upper middle of an even)."""
    if not values:
        raise ValueError("no values")
    return float(np.sort(np.asarray(values, np.float64))[len(values) // 2])


def reference_bound(norms: Sequence[float], factor: float) -> float:
    """The round's bound ``B = c · m_hi`` of the update sizes (``m_hi``: their upper median)."""
    return factor * upper_median(norms)


def clip_update(returned: Sequence[np.ndarray], sent: Sequence[np.ndarray],
                scale: float) -> list[np.ndarray]:
    """``sent + scale · (returned - sent)`` on float arrays, in their dtype; others as returned.

    ``scale == 0`` gives exactly what was sent (also where ``returned - sent`` overflows).
    """
    out = []
    for new, old in zip(returned, sent, strict=True):
        if np.issubdtype(np.asarray(new).dtype, np.floating) and scale == 0.0:
            out.append(np.asarray(old).astype(new.dtype))
        elif np.issubdtype(np.asarray(new).dtype, np.floating):
            diff = np.asarray(new, np.float64) - np.asarray(old, np.float64)
            out.append((np.asarray(old, np.float64) + scale * diff).astype(new.dtype))
        else:
            out.append(new)
    return out


def bound_updates(updates: Sequence[tuple[Sequence[np.ndarray], Sequence[np.ndarray]]],
                  factor: float) -> tuple[list[list[np.ndarray]], list[float]]:
    """Clip each ``(returned, sent)`` update to the round's :func:`reference_bound`.

    Returns the bounded returned arrays and each update's scale (1.0: untouched,
    the same array objects). ``factor`` must be > 0.
    """
    if not factor > 0:
        raise ValueError(f"the update norm bound factor must be > 0, got {factor}")
    if not updates:
        return [], []
    norms = [update_rms(returned, sent) for returned, sent in updates]
    bound = reference_bound(norms, factor)
    out, scales = [], []
    for (returned, sent), norm in zip(updates, norms, strict=True):
        if norm <= bound:
            out.append(list(returned))
            scales.append(1.0)
        else:
            scale = bound / norm
            out.append(clip_update(returned, sent, scale))
            scales.append(scale)
    return out, scales
