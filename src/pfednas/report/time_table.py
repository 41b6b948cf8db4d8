"""The results page's time axis: each row's simulated time, its time to the strongest
baseline's accuracy, and its accuracy within FedAvg+FT's time (pure; definitions in
:mod:`pfednas.report.timeaxis`).

Per seed, for a row's runs against the same (α, seed)'s runs, like for like
(:func:`pfednas.report.timeaxis.of_its_kind`): a fine-tuned row against fine-tuned
evaluations and target, a row as published against the baseline's figure as published
(FedAvg+FT's is FedAvg's global model: the papers' "time to FedAvg's accuracy"):

* **time to target**: the target is the strongest baseline's final accuracy of the row's
  kind on that seed; the row's time is its first evaluation of that kind at or above it, as
  a ratio to the strongest baseline's own first evaluation there; a seed where the row never
  reached it counts as *not reached*;
* **within FedAvg+FT's time**: the budget is FedAvg+FT's simulated time for its R rounds
  on that seed; the row's accuracy is its last evaluation of its kind within it.

A row's figure is the mean over its seeds (a ratio only where every seed reached the
target), on the run's recorded devices and on the heavy-tailed spread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pfednas.report.collect import Run
from pfednas.report.timeaxis import (
    CurvePoint,
    accuracy_within,
    of_its_kind,
    run_curve,
    time_to,
)

RunKey = tuple[str, float, int]  # (bench label, α, seed)


@dataclass(frozen=True)
class TimeFigures:
    """One table row's time axis on one device spread (None: not measurable)."""

    seconds: float | None        # mean simulated time of the row's runs
    to_target: float | None      # mean ratio of the time to the target (all seeds reached)
    reached: int                 # seeds that reached the target
    seeds: int                   # seeds compared
    within: float | None         # mean accuracy within FedAvg+FT's time (every seed had one)
    target: float | None = None  # the accuracy timed to: mean over seeds of the baseline's


def mean_or_none(values: Sequence[float | None]) -> float | None:
    """The mean, or None where ``values`` is empty or holds a None."""
    if not values or any(v is None for v in values):
        return None
    return sum(v for v in values if v is not None) / len(values)


def row_figures(runs: Sequence[Run], best: Mapping[int, Run], reference: Mapping[int, Run],
                *, published: bool, heavy_tailed: bool) -> TimeFigures:
    """The time figures of one row: its ``runs`` (one per seed; ``published``: its figure
    without fine-tuning) against the strongest baseline's and FedAvg+FT's runs by seed."""
    seconds: list[float | None] = []
    ratios: list[float | None] = []
    within: list[float | None] = []
    targets: list[float] = []
    reached, compared = 0, True
    for run in runs:
        curve = run_curve(run, heavy_tailed=heavy_tailed, published=published)
        if not curve:
            return TimeFigures(None, None, 0, len(runs), None)
        seconds.append(curve[-1].seconds)
        goal_run, budget_run = best.get(run.seed), reference.get(run.seed)
        theirs = None if goal_run is None else of_its_kind(
            run_curve(goal_run, heavy_tailed=heavy_tailed, published=published) or [],
            published=published)
        budget = None if budget_run is None else run_curve(budget_run,
                                                           heavy_tailed=heavy_tailed)
        if not theirs or not budget:  # nothing to compare with: the time alone
            compared = False
            continue
        own = of_its_kind(curve, published=published)
        target = theirs[-1].accuracy
        targets.append(target)
        mine, base = time_to(own, target), time_to(theirs, target)
        if mine is not None and base is not None and base.seconds > 0:
            reached += 1
            ratios.append(mine.seconds / base.seconds)
        point: CurvePoint | None = accuracy_within(own, budget[-1].seconds)
        within.append(None if point is None else point.accuracy)
    if not compared:
        return TimeFigures(mean_or_none(seconds), None, 0, 0, None)
    ratio = mean_or_none(ratios) if reached == len(runs) else None
    return TimeFigures(mean_or_none(seconds), ratio, reached, len(runs), mean_or_none(within),
                       mean_or_none(list(targets)))


def time_cell(f: TimeFigures) -> str:
    """``0.45× (target 0.9464)`` (every seed reached the target accuracy: the mean over seeds
    of the baseline's final figure of the same kind, fine-tuned or not), ``not reached (1/3;
    target 0.9464)``, or ``—`` (no simulated time, or nothing to compare with)."""
    if f.seconds is None or f.seeds == 0:
        return "—"
    target = "" if f.target is None else f"target {f.target:.4f}"
    if f.to_target is None:
        return f"not reached ({f.reached}/{f.seeds}{'; ' + target if target else ''})"
    return f"{f.to_target:.2f}×" + (f" ({target})" if target else "")


def within_cell(f: TimeFigures) -> str:
    return "—" if f.within is None else f"{f.within:.4f}"


def seconds_cell(f: TimeFigures) -> str:
    if f.seconds is None:
        return "—"
    return f"{f.seconds:,.0f}" if f.seconds >= 100 else f"{f.seconds:.1f}"
