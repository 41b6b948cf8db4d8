"""Simulated wall-clock time of a round: the cost model on each client's hardware profile.

A client that trained in a round's training stage (its reply accepted) took

    t_i = train_macs_i / speed_i + 8 · (bytes_down_i + bytes_up_i) / bandwidth_i

``train_macs_i``: the cost model's training MACs of what it trained, as it reported them
(3 × the forward MACs per sample of the model × the samples through forward + backward,
``pfednas.train.TrainStats.macs``); ``speed_i``: its multiply-accumulates per second
(:attr:`pfednas.hardware.profile.ClientProfile.speed`); ``bytes_down_i`` / ``bytes_up_i``: the
arrays of its training message and of its accepted reply; ``bandwidth_i`` in bit/s.
The evaluation stage adds the training some evaluations do (Local's local epochs, the
protocol's fine-tuning F): ``train_macs_i / speed_i``, without traffic. A round takes the
slowest client of its training stage plus the slowest of its evaluation stage; a round in
which nobody trained takes 0.

Not counted: the server's own time (aggregation, distillation, its searches), the clients'
forward-only work (test and validation evaluations, HAPFNAS's subnet measurements, SPIDER's
perturbation evaluations, BatchNorm re-estimation) and the traffic of evaluations.

Pure functions over the rows a round records: the round loop writes each timed row's
``simulated_seconds`` and the round's total; the report re-times the same rows under another
spread of devices (:class:`LogNormalSlowdown`). No torch here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pfednas.hardware.profile import MBPS, ClientProfile
from pfednas.seeding import HARDWARE, HEAVY_TAILED_HARDWARE, numpy_rng

ROW_SECONDS = "simulated_seconds"  # a timed row's own time (train and evaluation rows)
TRAIN_MACS, BYTES_DOWN, BYTES_UP = "train_macs", "bytes_down", "bytes_up"
FINETUNED = "accuracy_no_ft"  # an evaluation row that fine-tuned before its test


def client_seconds(profile: ClientProfile, train_macs: float, bytes_moved: int = 0) -> float:
    """``train_macs`` at the client's speed + ``bytes_moved`` over its link."""
    return train_macs / profile.speed + 8.0 * bytes_moved / profile.bandwidth_bps


def timed_train_row(row: Mapping[str, Any], profile: ClientProfile, *, bytes_down: int,
                    bytes_up: int) -> dict[str, Any]:
    """A training row of an accepted reply with its traffic and its client's time."""
    macs = float(row.get(TRAIN_MACS, 0.0))
    return {**row, BYTES_DOWN: int(bytes_down), BYTES_UP: int(bytes_up),
            ROW_SECONDS: client_seconds(profile, macs, bytes_down + bytes_up)}


def timed_eval_row(row: Mapping[str, Any], profile: ClientProfile) -> dict[str, Any]:
    """An evaluation row with the time of the training it did first (none: unchanged)."""
    macs = float(row.get(TRAIN_MACS, 0.0))
    return {**row, ROW_SECONDS: client_seconds(profile, macs)} if macs > 0 else dict(row)


def stage_seconds(rows: Iterable[Mapping[str, Any]]) -> float:
    """The slowest timed row of a stage (0: none timed)."""
    return max((float(r[ROW_SECONDS]) for r in rows if ROW_SECONDS in r), default=0.0)


def round_seconds(train: Iterable[Mapping[str, Any]], evaluation: Iterable[Mapping[str, Any]],
                  *, finetuning: bool = True) -> float:
    """A round's simulated time from its timed rows: the slowest client of the training
    stage + the slowest of the evaluation stage; ``finetuning=False`` leaves out the
    evaluations that fine-tuned (the figure as published, without the protocol's F)."""
    evaluated = [r for r in evaluation if finetuning or FINETUNED not in r]
    return stage_seconds(train) + stage_seconds(evaluated)


def retimed_round_seconds(train: Iterable[Mapping[str, Any]],
                          evaluation: Iterable[Mapping[str, Any]],
                          profiles: Mapping[int, ClientProfile], *,
                          finetuning: bool = True) -> float:
    """:func:`round_seconds` of the same rows on other hardware: each timed row's
    ``train_macs`` and bytes at ``profiles[client_id]``."""
    def retimed_train(row: Mapping[str, Any]) -> dict[str, Any]:
        return timed_train_row(row, profiles[int(row["client_id"])],
                               bytes_down=int(row.get(BYTES_DOWN, 0)),
                               bytes_up=int(row.get(BYTES_UP, 0)))

    return round_seconds(
        [retimed_train(r) for r in train if ROW_SECONDS in r],
        [timed_eval_row(r, profiles[int(r["client_id"])]) for r in evaluation
         if ROW_SECONDS in r], finetuning=finetuning)


@dataclass(frozen=True)
class LogNormalSlowdown:
    """A heavier-tailed spread of devices than the default U(1, 4): each client's slowdown
    of a ``macs_per_second`` client is log-normal with median ``median`` and log-std
    ``sigma``, clipped to [``low``, ``high``]; every link ``bandwidth_mbps`` (the paper's
    100 Mbit/s). With the defaults (median 2, σ 1, [1, 64]) a quarter of the clients are
    at full speed, the mean slowdown is ≈ 3.3 and one client in 20 is over 10× slower.

    Drawn per (seed, client) from the ``heavy_tailed_hardware`` stream: a client's
    slowdown does not depend on how many clients there are.
    """

    median: float = 2.0
    sigma: float = 1.0
    low: float = 1.0
    high: float = 64.0
    macs_per_second: float = 1e9
    bandwidth_mbps: float = 100.0

    def __post_init__(self) -> None:
        if not (0 < self.low <= self.median <= self.high < math.inf and self.sigma >= 0
                and self.macs_per_second > 0 and self.bandwidth_mbps > 0):
            raise ValueError(f"need 0 < low <= median <= high (finite), sigma >= 0 and "
                             f"positive speed and bandwidth: {self}")

    def describe(self) -> str:
        return (f"log-normal slowdown (median {self.median:g}, σ {self.sigma:g}, clipped to "
                f"[{self.low:g}, {self.high:g}]), {self.bandwidth_mbps:g} Mbit/s")

    def slowdown(self, seed: int, client_id: int) -> float:
        rng = numpy_rng(seed, HARDWARE, HEAVY_TAILED_HARDWARE, client_id)
        drawn = float(rng.lognormal(math.log(self.median), self.sigma))
        return min(max(drawn, self.low), self.high)

    def profiles(self, num_clients: int, seed: int) -> dict[int, ClientProfile]:
        return {cid: ClientProfile(memory_bytes=math.inf, macs_per_second=self.macs_per_second,
                                   bandwidth_bps=self.bandwidth_mbps * MBPS,
                                   speed_factor=self.slowdown(seed, cid))
                for cid in range(num_clients)}


HEAVY_TAILED = LogNormalSlowdown()
