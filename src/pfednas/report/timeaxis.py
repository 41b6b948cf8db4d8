"""The benchmark's time axis: how long a run took on simulated devices, and how fast it got there.

**Simulated time.** Every round records ``simulated_seconds``
(:mod:`pfednas.hardware.simulated_time`): the slowest client of its training stage,

    t_i = train_macs_i / speed_i + 8 · (bytes_down_i + bytes_up_i) / bandwidth_i,

plus the slowest client's training inside the evaluation stage (Local's local epochs, the
protocol's fine-tuning F), ``train_macs_i / speed_i``; 0 for a round without training. A
fine-tuned figure counts its own fine-tuning only: an evaluation that fine-tuned before the
one read is a measurement (it trains copies; no training and no later figure changes), so
its fine-tuning is left out of the later points and of the run's time
(:func:`measured_only`).
``train_macs_i`` is the cost model's count of what client *i* trained, reported by the
client: 3 × the forward multiply-accumulates per sample of the model it trained × the
samples it put through forward + backward. ``speed_i`` = 1e9 MAC/s ÷ the client's
slowdown; bytes are the arrays of its training message and of its accepted reply. Not
counted: the server's own time, forward-only client work (evaluations, HAPFNAS's subnet
measurements, SPIDER's perturbation evaluations), evaluation traffic. A run's simulated
time is the sum over its rounds.

**Devices.** The PerFedRLNAS paper states its links (100 Mbit/s up and down), its memory
budgets (U(2, 16) GB) and that "clients may have different computational speed"; it states
no distribution of speeds, and measures latency "for the whole system to reach the reported
accuracy including time spent on the client, transmission and the server" (Tables 2-3,
Fig. 6; Table 2, MobileNetV3 on CIFAR10 Dα = 0.3: 9.96 h to its 82.0 % against FedAvg's
19.12 h to 74.4 %, 0.52×). Two spreads here:

* *default* (recorded in the run): slowdown U(1, 4), 100 Mbit/s, drawn from the seeded
  ``hardware`` stream; PerFedRLNAS and HAPFNAS use their own profiles (the same draw with
  their default spread), the baselines the default spread's draw for the same seed, so
  every method of a seed runs on the same devices;
* *heavy-tailed* (recomputed here from each timed row's ``train_macs`` and bytes):
  :data:`pfednas.hardware.simulated_time.HEAVY_TAILED`, a log-normal slowdown with median 2 and
  σ 1, clipped to [1, 64], 100 Mbit/s, drawn per (seed, client) from the
  ``heavy_tailed_hardware`` stream. A quarter of the clients run at full speed, one in
  twenty is over 10× slower: a round waits for its slowest sampled client, so methods
  whose clients train less (smaller subnets, fewer epochs) gain most here.

**Curves.** A run's accuracy over simulated time is one point per evaluation round: (the
cumulative simulated seconds up to the end of that round, the mean accuracy over the
clients of that evaluation). The as-published curve of a run that fine-tuned takes
``accuracy_no_ft`` and leaves the fine-tuning's time out.
:func:`time_to` is the first point at or above a target accuracy; ``None`` means *not
reached*: no evaluation of the run reached it (between two evaluations the run is not
credited). Like for like (:func:`of_its_kind`): a fine-tuned figure's time counts only its
fine-tuned evaluations, against a fine-tuned target; a figure as published, every
evaluation's un-fine-tuned accuracy, against a target as published.
:func:`accuracy_within` is the last evaluation completed within a time budget (``None``:
none was). :func:`compare_time_to_target` and :func:`compare_within` compare
two runs of the same dataset, α and seed; by default the target is the reference's final
accuracy (the paper's "time to reach FedAvg's accuracy") and the budget the shorter of
the two runs' simulated times.

Pure functions over what a run wrote (its round records, summary and config); no torch.
Records written before the time axis carry no ``simulated_seconds``: their times are
``None`` (absent), never 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pfednas.hardware.profile import ClientProfile
from pfednas.hardware.simulated_time import (
    FINETUNED,
    HEAVY_TAILED,
    LogNormalSlowdown,
    retimed_round_seconds,
    round_seconds,
)
from pfednas.report.collect import Run

ROUND_SECONDS = "simulated_seconds"


@dataclass(frozen=True)
class CurvePoint:
    """One evaluation of a run on the time axis."""

    round: int
    seconds: float    # cumulative simulated seconds at the end of this round
    accuracy: float   # mean accuracy over the clients of this evaluation
    eval_kind: str = ""


def round_times(rounds: Sequence[Mapping[str, Any]], *,
                profiles: Mapping[int, ClientProfile] | None = None,
                finetuning: bool = True) -> list[float] | None:
    """Each round's simulated seconds: as recorded (``profiles`` None), or the same rows
    re-timed on ``profiles``; ``finetuning=False`` leaves out evaluations that fine-tuned.
    None when the records predate the time axis."""
    if not rounds or not all(ROUND_SECONDS in r for r in rounds):
        return None
    if profiles is None and finetuning:
        return [float(r[ROUND_SECONDS]) for r in rounds]
    return [from_rows(r, profiles=profiles, finetuning=finetuning) for r in rounds]


def from_rows(r: Mapping[str, Any], *, profiles: Mapping[int, ClientProfile] | None,
              finetuning: bool) -> float:
    """One round's simulated seconds computed from its timed rows (re-timed on ``profiles``
    where given)."""
    train, evaluation = r.get("train") or [], r.get("evaluation") or []
    return (round_seconds(train, evaluation, finetuning=finetuning) if profiles is None
            else retimed_round_seconds(train, evaluation, profiles, finetuning=finetuning))


def finetuning_times(rounds: Sequence[Mapping[str, Any]], *,
                     profiles: Mapping[int, ClientProfile] | None = None) -> list[float]:
    """Each round's seconds of fine-tuning for its evaluation (the slowest client's, the
    protocol's F): 0 for a round whose evaluation did not fine-tune (a quick one, Local's
    training). Computed from the rows, as recorded or re-timed on ``profiles``."""
    return [from_rows(r, profiles=profiles, finetuning=True)
            - from_rows(r, profiles=profiles, finetuning=False) for r in rounds]


def measured_only(rounds: Sequence[Mapping[str, Any]], *,
                  profiles: Mapping[int, ClientProfile] | None = None) -> list[float]:
    """Per round, the fine-tuning that only measured: each fine-tuned evaluation's but the
    run's last. It changes no training and no later figure (the evaluations are copies), so
    a fine-tuned figure's time and compute are its training and its own fine-tuning."""
    tuning = finetuning_times(rounds, profiles=profiles)
    evaluated = [i for i, r in enumerate(rounds) if r.get("evaluation")]
    last = evaluated[-1] if evaluated else None
    return [0.0 if i == last else s for i, s in enumerate(tuning)]


def total_seconds(rounds: Sequence[Mapping[str, Any]], *,
                  profiles: Mapping[int, ClientProfile] | None = None,
                  finetuning: bool = True) -> float | None:
    """The run's simulated time (None: records without it): its training and, with
    ``finetuning``, the fine-tuning of its final evaluation (not the measurements before)."""
    times = round_times(rounds, profiles=profiles, finetuning=finetuning)
    if times is None:
        return None
    if not finetuning:
        return float(sum(times))
    return float(sum(times)) - float(sum(measured_only(rounds, profiles=profiles)))


def accuracy_curve(rounds: Sequence[Mapping[str, Any]], *,
                   profiles: Mapping[int, ClientProfile] | None = None,
                   published: bool = False) -> list[CurvePoint] | None:
    """(cumulative simulated seconds, mean accuracy) at each evaluation round, in order.
    A fine-tuned evaluation's time is the training up to it and its own fine-tuning, not
    the fine-tunings of the evaluations before it (measurements: they change no training).
    ``published``: the as-published figure (``accuracy_no_ft`` where an evaluation
    fine-tuned, without the fine-tuning's time). None when the records carry no time."""
    times = round_times(rounds, profiles=profiles, finetuning=not published)
    if times is None:
        return None
    tuning = [0.0] * len(rounds) if published else finetuning_times(rounds, profiles=profiles)
    points, elapsed, measured = [], 0.0, 0.0
    for r, seconds, own in zip(rounds, times, tuning, strict=True):
        elapsed += seconds
        rows = r.get("evaluation") or []
        if rows:
            accs = [float(row[FINETUNED] if published and FINETUNED in row else row["accuracy"])
                    for row in rows]
            points.append(CurvePoint(round=int(r["round"]), seconds=elapsed - measured,
                                     accuracy=sum(accs) / len(accs),
                                     eval_kind=str(r.get("eval_kind", ""))))
            measured += own
    return points


def of_its_kind(curve: Sequence[CurvePoint], *, published: bool) -> list[CurvePoint]:
    """The evaluations of a curve that are of its figure's kind, the only ones a time axis
    compares: a fine-tuned figure's are the evaluations that fine-tuned (a quick one, before
    the last round, is not); a figure as published is what every evaluation measured without
    fine-tuning (its ``accuracy_no_ft`` where it fine-tuned)."""
    return list(curve) if published else [p for p in curve if p.eval_kind != "quick"]


def time_to(curve: Sequence[CurvePoint], target: float) -> CurvePoint | None:
    """The first evaluation at or above ``target`` accuracy; None: not reached."""
    return next((p for p in curve if p.accuracy >= target), None)


def accuracy_within(curve: Sequence[CurvePoint], seconds: float) -> CurvePoint | None:
    """The last evaluation completed within ``seconds`` of simulated time (its accuracy,
    and in ``round`` the rounds it had); None: no evaluation within the budget."""
    within = [p for p in curve if p.seconds <= seconds]
    return within[-1] if within else None


# -- runs --------------------------------------------------------------------------------------
def heavy_tailed_profiles(run: Run, spread: LogNormalSlowdown = HEAVY_TAILED
                          ) -> dict[int, ClientProfile]:
    """The run's K clients on the heavy-tailed spread, for the run's seed."""
    return spread.profiles(int(run.config["federation"]["num_clients"]), run.seed)


def profiles_for(run: Run, heavy_tailed: bool) -> dict[int, ClientProfile] | None:
    return heavy_tailed_profiles(run) if heavy_tailed else None


def run_seconds(run: Run, *, heavy_tailed: bool = False, published: bool = False
                ) -> float | None:
    """(a) The run's simulated time on the recorded devices or (``heavy_tailed``) on the
    heavy-tailed spread; ``published``: without the protocol's fine-tuning."""
    return total_seconds(run.rounds, profiles=profiles_for(run, heavy_tailed),
                         finetuning=not published)


def run_curve(run: Run, *, heavy_tailed: bool = False, published: bool = False
              ) -> list[CurvePoint] | None:
    """(b) The run's accuracy over simulated time (see :func:`accuracy_curve`)."""
    return accuracy_curve(run.rounds, profiles=profiles_for(run, heavy_tailed),
                          published=published)


@dataclass(frozen=True)
class TimeToTarget:
    """Two runs' first evaluations at or above ``target`` (None: not reached) and the
    ratio of their simulated seconds (method ÷ reference; None unless both reached it)."""

    target: float
    method: CurvePoint | None
    reference: CurvePoint | None

    @property
    def ratio(self) -> float | None:
        if self.method is None or self.reference is None or self.reference.seconds <= 0:
            return None
        return self.method.seconds / self.reference.seconds


@dataclass(frozen=True)
class AccuracyWithin:
    """Two runs' last evaluations within ``seconds`` of simulated time (None: none)."""

    seconds: float
    method: CurvePoint | None
    reference: CurvePoint | None


def comparable_curves(method: Run, reference: Run, *, heavy_tailed: bool, published: bool
                      ) -> tuple[list[CurvePoint], list[CurvePoint]]:
    """Both runs' curves, each of its figure's kind (:func:`of_its_kind`); ``ValueError``
    unless they share dataset, α and seed and both recorded their simulated time."""
    for what in ("dataset", "alpha", "seed"):
        if getattr(method, what) != getattr(reference, what):
            raise ValueError(f"runs of different {what}: {method.path} has "
                             f"{getattr(method, what)}, {reference.path} "
                             f"{getattr(reference, what)}")
    curves = []
    for run in (method, reference):
        curve = run_curve(run, heavy_tailed=heavy_tailed, published=published)
        if not curve:
            raise ValueError(f"{run.path}: its records carry no simulated time")
        curves.append(of_its_kind(curve, published=published))
    return curves[0], curves[1]


def compare_time_to_target(method: Run, reference: Run, *, target: float | None = None,
                           heavy_tailed: bool = False, published: bool = False
                           ) -> TimeToTarget:
    """(c) How fast each run reached ``target`` (default: the reference's final
    accuracy), on the recorded or the heavy-tailed devices."""
    mine, theirs = comparable_curves(method, reference, heavy_tailed=heavy_tailed,
                                     published=published)
    goal = theirs[-1].accuracy if target is None else float(target)
    return TimeToTarget(target=goal, method=time_to(mine, goal), reference=time_to(theirs, goal))


def compare_within(method: Run, reference: Run, *, seconds: float | None = None,
                   heavy_tailed: bool = False, published: bool = False) -> AccuracyWithin:
    """(d) Each run's accuracy within ``seconds`` of simulated time (default: the shorter
    of the two runs' times, the budget both had)."""
    mine, theirs = comparable_curves(method, reference, heavy_tailed=heavy_tailed,
                                     published=published)
    budget = min(mine[-1].seconds, theirs[-1].seconds) if seconds is None else float(seconds)
    if not math.isfinite(budget) or budget < 0:
        raise ValueError(f"a time budget must be a finite number >= 0, got {budget}")
    return AccuracyWithin(seconds=budget, method=accuracy_within(mine, budget),
                          reference=accuracy_within(theirs, budget))
