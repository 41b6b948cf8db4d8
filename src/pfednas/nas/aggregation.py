"""The aggregation rules: each method's mean, or a rule a strict minority cannot steer: the
clients' replies screened against the coordinate-wise median, then each coordinate's trimmed
mean or median over the kept clients that hold it. Pure numpy.

FedAvg's weighted mean (McMahan et al., 2017) follows any one client: a reply that adds a
constant ``s`` to every entry moves the mean by ``s`` times its weight share, round after
round. The coordinate-wise rules of Yin et al. ("Byzantine-Robust Distributed Learning:
Towards Optimal Statistical Rates", ICML 2018), Flower's ``FedTrimmedAvg`` and
``FedMedian``, take each coordinate from the values ``v_(1) ≤ … ≤ v_(c)`` of the ``c``
clients holding it (every client for a whole model; those whose subnet or slice contains
the entry for an overlap-aware merge):

    trimmed mean:  mean of v_(t+1) … v_(c−t),  t = ⌊β c⌋  (Flower's ``beta``, 0 ≤ β < ½)
    median:        v_((c+1)/2) for odd c, the mean of the two middle values for even c

With ``f`` of the ``c`` values from colluding clients and ``h`` the honest ones, the
trimmed mean with ``f ≤ t`` and the median with ``f < c/2`` lie within ``[min h, max h]``
(a kept or middle value has too few values beyond it for them all to be the colluders').
Within that range is not enough when few clients reply: of three, one that adds a constant
to every entry makes each coordinate's median the larger of the two honest values, round
after round (a FedAvg run on synthetic data: 0.68 against 0.91). A colluder is consistent
across coordinates, which no per-coordinate rule sees; so both robust rules first **screen**
the replies, as Bulyan (El Mhamdi et al., ICML 2018) screens with Krum before its trimmed
mean, here by the distance to the coordinate-wise median, which also serves subnets and
slices (Krum's pairwise scores fail at a strict minority of identical colluders when the
round has fewer than 2f + 3 clients):

    m_e   = median of coordinate e over the clients holding it; at an even count, of the two
            middle values the one nearer the server's value (their mean where as near)
    d_i   = RMS over client i's float entries of (x_i − m)          (BatchNorm statistics too)
    kept  = { i : d_i ≤ F · lower median of d },  F = SCREEN_FACTOR

then the rule over the kept clients. With ``f < c/2`` colluders: ``m`` lies within the honest
range in every coordinate; the lower median of ``d`` lies between the smallest and the largest
honest distance, so honest replies within a factor ``F`` of each other are all kept, and a
kept colluder lies within ``F`` times the largest honest distance of ``m``. At exactly half
(even ``c``, ``f = c/2``) ``m``'s update is no larger than the largest honest update of each
coordinate (both middle values farther from the server's value would leave every honest value
strictly between two neighbours in the sorted order), and the lower median of ``d`` may be the
colluders': they can keep honest replies out (the model stands still in that round), never
push a coordinate further than an honest client's own step plus ``F`` times their distance.

The robust rules weigh every client alike, as Flower's do: a client's sample count, which it
reports itself, does not move them (a weight of 0 leaves the client out). They serve float
arrays and integer arrays alike (BatchNorm's ``num_batches_tracked``, rounded back), so that
BatchNorm statistics are aggregated as robustly as weights. ``mean`` is each method's own
average, unchanged (:func:`pfednas.nas.fedavg.weighted_average`,
:func:`pfednas.nas.merge.overlap_average`).

Sums run in float64, element-wise in a fixed order (no BLAS reduction), so the result is
the same on every CPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pfednas.nas.fedavg import weighted_average

MEAN, TRIMMED_MEAN, MEDIAN = "mean", "trimmed_mean", "median"
RULES = (MEAN, TRIMMED_MEAN, MEDIAN)
CHUNK = 1 << 15  # coordinates sorted at a time: a chunk of k clients' values stays in cache
# a reply is kept while its distance to the coordinate-wise median is at most this × the
# round's lower median distance: a reply sized at the deployment's update norm bound lies
# about 10× an honest one's distance away (12× in benchmarks/bench_attack.py's run, where
# the honest distances of a round were within 1 % of each other)
SCREEN_FACTOR = 3.0


@dataclass(frozen=True)
class AggregationRule:
    """How the values of one coordinate from the clients holding it become one value:
    ``rule`` (:data:`RULES`) and the trimmed mean's ``trim_fraction`` (β, cut from each end)."""

    rule: str = MEAN
    trim_fraction: float = 0.2  # Flower's FedTrimmedAvg default

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"aggregation must be {'|'.join(RULES)}, got {self.rule!r}")
        if not 0 <= self.trim_fraction < 0.5:  # NaN too
            raise ValueError(f"trim_fraction must be in [0, 0.5), got {self.trim_fraction!r}")

    @property
    def robust(self) -> bool:
        """Whether the rule is coordinate-wise (not the method's own weighted mean)."""
        return self.rule != MEAN

    def cut(self, holders: np.ndarray) -> np.ndarray:
        """How many values the trimmed mean cuts from each end of a coordinate held by
        ``holders`` clients: ``⌊β c⌋`` (Flower's ``int(beta * n)``)."""
        return (self.trim_fraction * holders).astype(np.int64)


METHOD_MEAN = AggregationRule()  # each method's own (weighted) mean: the simulation default
CENTRE = AggregationRule(MEDIAN)  # the screen's reference point
Piece = tuple[int, Any, np.ndarray]
"""(tensor index, where in it: a tuple of slices or an index, the client's values there)."""
Entry = tuple[int, Any, np.ndarray]  # (client, where, values): one client's piece of a tensor


@dataclass(frozen=True)
class Merged:
    """An aggregation's result: the new arrays, and for each client whether the screen kept
    its reply (every one for the mean)."""

    arrays: list[np.ndarray]
    kept: list[bool]


def coordinate_values(values: np.ndarray, rule: AggregationRule,
                      held: np.ndarray | None = None,
                      reference: np.ndarray | None = None) -> np.ndarray:
    """Each coordinate's value under a robust ``rule``, over the clients holding it.

    Parameters
    ----------
    values:
        ``(k, n)``: client ``i``'s value of coordinate ``j`` at ``[i, j]`` (any float type:
        values are sorted in it, summed in float64).
    held:
        ``(k, n)`` booleans, whether client ``i`` holds coordinate ``j`` (None: all do).
    reference:
        ``(n,)``: the value the server holds of each coordinate: at an even count the median
        takes the middle value nearer it (the screen's centre); None: the two's mean.

    Returns
    -------
    np.ndarray
        ``(n,)`` float64; NaN where no client holds the coordinate.
    """
    if held is not None and not held.all():
        stack = np.where(held, values, np.inf).astype(_float_type(values.dtype))
        return _rules(stack, held.sum(axis=0).astype(np.int64), [(rule, reference)])[0]
    return _rules(values, None, [(rule, reference)])[0]


def _float_type(dtype: np.dtype) -> np.dtype:
    """The type values are sorted in: their own float type (sorting is exact), else float64."""
    return np.dtype(dtype) if np.issubdtype(dtype, np.floating) else np.dtype(np.float64)


def _rules(stack: np.ndarray, holders: np.ndarray | None,
           rules: Sequence[tuple[AggregationRule, np.ndarray | None]]) -> list[np.ndarray]:
    """Each ``(rule, reference)`` on a ``(k, n)`` stack (client ``i``'s value of coordinate
    ``j``, ``+inf`` where it does not hold it; ``holders``: how many do, None: all), each
    chunk of coordinates turned into rows and sorted once; ``stack`` is not changed."""
    if not all(rule.robust for rule, _ in rules):
        raise ValueError("coordinate_values takes a robust rule (trimmed_mean or median)")
    k, n = stack.shape
    dtype = _float_type(stack.dtype)
    out = [np.empty(n, np.float64) for _ in rules]
    for begin in range(0, n, CHUNK):
        part = slice(begin, min(begin + CHUNK, n))
        ordered = np.array(stack[:, part].T, dtype, order="C")  # (chunk, k): one row each
        ordered.sort(axis=1)  # held values first, +inf last
        count = np.full(len(ordered), k, np.int64) if holders is None else holders[part]
        for result, (rule, reference) in zip(out, rules, strict=True):
            result[part] = _apply(ordered, count, rule,
                                  None if reference is None else reference[part])
    return out


def _apply(rows: np.ndarray, holders: np.ndarray, rule: AggregationRule,
           reference: np.ndarray | None) -> np.ndarray:
    """``rule`` on each sorted row's ``holders`` first values."""
    if rule.rule == MEDIAN:
        return _median(rows, holders, reference)
    cut = rule.cut(holders)
    column = np.arange(rows.shape[1])
    keep = (column >= cut[:, None]) & (column < (holders - cut)[:, None])
    # the kept values summed along each row in float64 (numpy's own reduction, not BLAS: the
    # same sums on every CPU; no difference of running sums, which cancels)
    total = np.where(keep, rows, 0).sum(axis=1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(holders > 0, total / (holders - 2 * cut), np.nan)


def _median(rows: np.ndarray, holders: np.ndarray, reference: np.ndarray | None
            ) -> np.ndarray:
    """The middle value of each sorted row's ``holders`` first; at an even count, the middle
    value nearer ``reference`` (their mean where as near, or with no reference)."""
    at = np.arange(len(rows))
    low = rows[at, np.maximum(holders - 1, 0) // 2].astype(np.float64)
    high = rows[at, holders // 2].astype(np.float64)  # where no client holds it: NaN below
    with np.errstate(invalid="ignore", over="ignore"):
        mean = (low + high) / 2
        if reference is not None:
            near_low = np.abs(low - reference) < np.abs(high - reference)
            near_high = np.abs(high - reference) < np.abs(low - reference)
            mean = np.where(near_low, low, np.where(near_high, high, mean))
    return np.where(holders > 0, mean, np.nan)


def as_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float64 aggregated values in an array's dtype: integers rounded, floats cast."""
    if np.issubdtype(dtype, np.integer):
        return np.rint(values).astype(dtype)
    return values.astype(dtype)


def screen(distances: Sequence[float], factor: float = SCREEN_FACTOR) -> list[bool]:
    """Which replies are kept: ``d_i ≤ factor · (the ⌈k/2⌉-th smallest d)``."""
    if not distances:
        return []
    lower = float(np.sort(np.asarray(distances, np.float64))[(len(distances) - 1) // 2])
    return [bool(d <= factor * lower) for d in distances]


def robust_merge(current: Sequence[np.ndarray], clients: Sequence[Sequence[Piece]],
                 rule: AggregationRule, *, ties_to_current: bool = True) -> Merged:
    """``current`` updated by a robust ``rule`` from each client's pieces: the replies
    screened against the coordinate-wise median (:func:`screen`), then each entry's rule
    over the kept clients holding it; an entry no kept client holds keeps its value.

    ``ties_to_current``: the median's even-count ties go to the value nearer ``current``
    (the server's, as sent); False: their mean (``current`` then only shapes the result).
    Each tensor's values are sorted once for the centre and the rule over every client;
    only where the screen leaves a client out is the rule taken again over the kept.
    """
    if not rule.robust:
        raise ValueError("robust_merge takes a robust rule (trimmed_mean or median)")
    groups = _by_tensor(current, clients)
    every, distances = _over_every_client(current, groups, len(clients), rule,
                                          ties_to_current)
    kept = screen(distances)
    out = [np.array(a, copy=True) for a in current]
    for i, entries in groups.items():
        if all(kept[client] for client, _, _ in entries):
            _put(out[i], *every[i])
        elif chosen := [e for e in entries if kept[e[0]]]:
            stack, holders, where = _stacked(out[i], chosen)
            _put(out[i], _rules(stack, holders, [(rule, None)])[0],
                 None if holders is None else holders > 0, where)
    return Merged(out, kept)


def _by_tensor(current: Sequence[np.ndarray], clients: Sequence[Sequence[Piece]]
               ) -> dict[int, list[Entry]]:
    """Each tensor's pieces, in client order; a piece whose shape is not its region's is
    refused."""
    groups: dict[int, list[Entry]] = {}
    for client, pieces in enumerate(clients):
        for i, where, value in pieces:
            if current[i][where].shape != np.shape(value):
                raise ValueError(f"tensor {i}: region shape {current[i][where].shape} "
                                 f"!= array shape {np.shape(value)}")
            groups.setdefault(i, []).append((client, where, value))
    return groups


def _over_every_client(current: Sequence[np.ndarray], groups: dict[int, list[Entry]],
                       clients: int, rule: AggregationRule, ties_to_current: bool
                       ) -> tuple[dict[int, tuple[np.ndarray, np.ndarray | None, Any]],
                                  list[float]]:
    """Each tensor's ``rule`` over every client (with the entries it covers and where), and
    each client's RMS distance to the coordinate-wise median over its float entries."""
    total, count = np.zeros(clients), np.zeros(clients)
    every: dict[int, tuple[np.ndarray, np.ndarray | None, Any]] = {}
    for i, entries in groups.items():
        stack, holders, where = _stacked(current[i], entries)
        rules: list[tuple[AggregationRule, np.ndarray | None]] = [(rule, None)]
        floats = np.issubdtype(current[i].dtype, np.floating)
        if floats:
            reference = np.asarray(current[i][where], np.float64).reshape(-1)
            rules.append((CENTRE, reference if ties_to_current else None))
        results = _rules(stack, holders, rules)
        every[i] = (results[0], None if holders is None else holders > 0, where)
        if floats:  # each client's squared distance to the centre, over its entries
            square, held = _squares(stack, results[1], every=holders is None)
            clients_of = [client for client, _, _ in entries]
            np.add.at(total, clients_of, square)
            np.add.at(count, clients_of, held)
    return every, [float(np.sqrt(t / n)) if n else 0.0 for t, n in zip(total, count,
                                                                         strict=True)]


def _stacked(tensor: np.ndarray, entries: list[Entry]
             ) -> tuple[np.ndarray, np.ndarray | None, Any]:
    """The entries' values as a ``(k, n)`` stack, one row per entry: over their common
    region where they share one (every client holds every entry: ``holders`` None), else
    over the whole tensor, ``+inf`` where an entry's region leaves a coordinate out, with how
    many clients hold each coordinate."""
    first, k = entries[0][1], len(entries)
    dtype = _float_type(tensor.dtype)  # the gate holds each reply to the dtype it was sent
    if same_region(first, (where for _, where, _ in entries)):
        stack = np.empty((k, int(np.size(tensor[first]))), dtype)
        for row, (_, _, value) in enumerate(entries):
            stack[row] = np.ravel(value)
        return stack, None, first
    stack = np.full((k, tensor.size), np.inf, dtype)
    holders = np.zeros(tensor.size, np.int64)
    counts = holders.reshape(tensor.shape)
    for row, (_, where, value) in enumerate(entries):
        stack[row].reshape(tensor.shape)[where] = value
        counts[where] += 1
    return stack, holders, tuple(slice(None) for _ in tensor.shape)


def _squares(stack: np.ndarray, centre: np.ndarray, every: bool
             ) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a ``(k, n)`` stack, the sum of squared differences to ``centre`` over its
    held (finite) entries (``every``: all are), and how many it holds: the differences in the
    stack's type, their squares summed in float64 along each row (numpy's own reduction,
    not BLAS: the same sums on every CPU)."""
    total, held = np.zeros(len(stack)), np.zeros(len(stack))
    for begin in range(0, stack.shape[1], CHUNK):
        part = slice(begin, begin + CHUNK)
        with np.errstate(invalid="ignore", over="ignore"):
            diff = stack[:, part] - centre[part].astype(stack.dtype)
        if not every:
            finite = np.isfinite(stack[:, part])
            diff[~finite] = 0.0
            held += finite.sum(axis=1)
        total += np.square(diff).sum(axis=1, dtype=np.float64)
    if every:
        held[:] = stack.shape[1]
    return total, held


def same_region(first: Any, regions: Iterable[Any]) -> bool:
    """Whether every one of ``regions`` is the region ``first`` (a tuple of slices)."""
    if type(first) is not tuple:
        return False
    try:
        return all(where is first or where == first for where in regions)
    except ValueError:  # array indices inside: not comparable, take the general path
        return False


def _put(tensor: np.ndarray, merged: np.ndarray, covered: np.ndarray | None, where: Any
         ) -> None:
    """``tensor`` (in place) ← the merged values: on ``where`` (``covered`` None), else on
    the entries ``covered`` marks (flat over the whole tensor)."""
    if covered is None:
        region = tensor[where]
        tensor[where] = as_dtype(merged, tensor.dtype).reshape(np.shape(region))
        return
    mask = covered.reshape(tensor.shape)
    tensor[mask] = as_dtype(merged.reshape(tensor.shape)[mask], tensor.dtype)


def aggregate(updates: Sequence[tuple[Sequence[np.ndarray], float]], rule: AggregationRule,
              reference: Sequence[np.ndarray]) -> Merged:
    """Whole models, one list of arrays per client with its weight, aggregated by ``rule``:
    ``mean`` is :func:`~pfednas.nas.fedavg.weighted_average` (bit for bit); a robust rule is
    :func:`robust_merge` over the clients of weight > 0 (``reference``: what the server sent,
    in the same order).

    Raises ``ValueError`` on no updates, no client of weight > 0 or mismatched shapes.
    """
    if not rule.robust:
        return Merged(weighted_average(updates), [True] * len(updates))
    if not updates:
        raise ValueError("no updates to aggregate")
    if any(w < 0 for _, w in updates):
        raise ValueError(f"weights must be non-negative, got {[w for _, w in updates]}")
    holding = [i for i, (_, weight) in enumerate(updates) if weight > 0]
    if not holding:
        raise ValueError("no update of positive weight to aggregate")
    whole = [tuple(slice(None) for _ in np.shape(a)) for a in reference]
    merged = robust_merge(reference, [[(i, whole[i], a) for i, a in enumerate(updates[c][0])]
                                      for c in holding], rule)
    kept = [True] * len(updates)
    for client, keep in zip(holding, merged.kept, strict=True):
        kept[client] = keep
    return Merged(merged.arrays, kept)
