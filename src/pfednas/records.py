"""What a run records: one :class:`RoundRecord` per round (a line of ``metrics.jsonl``).

A strategy's hooks return what their stage of a round produced (:class:`StageResult`);
the round loop (``pfednas.strategies.base.PersonalizedStrategy.run``) writes it into the
round's record, and the app layer writes the record to disk. No Flower, no torch here:
the results, checkpoint and report modules read records without a strategy.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pfednas.hardware.profile import fits

if TYPE_CHECKING:
    from pfednas.search import Arch, Cost

__all__ = ["BUDGET_METRICS", "RoundRecord", "StageResult", "arch_details", "cost_in"]


@dataclass
class RoundRecord:
    """What happened in one round (one line of ``metrics.jsonl``)."""

    round: int
    sampled: list[int] = field(default_factory=list)
    train: list[dict[str, Any]] = field(default_factory=list)
    evaluation: list[dict[str, Any]] = field(default_factory=list)
    failures: int = 0
    rejected: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    wall_seconds: float = 0.0
    server_seconds: float = 0.0
    server: dict[str, Any] = field(default_factory=dict)  # server-side measurements, if any
    # evaluation rounds: "quick" (fine-tuning skipped), "full", or "final" (the last round)
    eval_kind: str = ""
    eval_seconds: float = 0.0  # wall time of the round's evaluation stage
    clients_missing: list[int] = field(default_factory=list)  # sent an evaluation, no valid row
    # the round's time on the clients' simulated hardware (pfednas.hardware.simulated_time)
    simulated_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        accs = [e["accuracy"] for e in self.evaluation]
        out: dict[str, Any] = {
            "round": self.round, "sampled_clients": self.sampled, "train": self.train,
            "evaluation": self.evaluation, "failures": self.failures,
            "rejected": self.rejected,
            "bytes_up": self.bytes_up, "bytes_down": self.bytes_down,
            "wall_seconds": round(self.wall_seconds, 4),
            "server_seconds": round(self.server_seconds, 4),
            "simulated_seconds": self.simulated_seconds,  # exact: a resumed run sums the same
        }
        if accs:
            out["personalized_acc_mean"] = float(np.mean(accs))
            out["personalized_acc_std"] = float(np.std(accs))
        if self.eval_kind:
            out["eval_kind"] = self.eval_kind
            out["eval_seconds"] = round(self.eval_seconds, 4)
            out["clients_missing"] = self.clients_missing
        if self.server:
            out["server"] = self.server
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RoundRecord:
        return cls(round=int(data["round"]), sampled=list(data["sampled_clients"]),
                   train=list(data["train"]), evaluation=list(data["evaluation"]),
                   failures=int(data["failures"]), rejected=int(data.get("rejected", 0)),
                   bytes_up=int(data["bytes_up"]),
                   bytes_down=int(data["bytes_down"]), wall_seconds=float(data["wall_seconds"]),
                   server_seconds=float(data.get("server_seconds", 0.0)),
                   server=dict(data.get("server", {})),
                   eval_kind=str(data.get("eval_kind", "")),
                   eval_seconds=float(data.get("eval_seconds", 0.0)),
                   clients_missing=[int(c) for c in data.get("clients_missing", [])],
                   simulated_seconds=float(data.get("simulated_seconds", 0.0)))


@dataclass(frozen=True)
class StageResult:
    """What one stage of a round (training or evaluation) produced: the fields of the
    round's :class:`RoundRecord` it fills. A field left empty leaves the record's as it
    is (a record starts empty), so the training stage's rows survive the evaluation's.

    A stage usually fills its own fields (training: ``train``, ``server``; evaluation:
    ``evaluation``, ``eval_kind``, ``clients_missing``), but may fill others: HAPFNAS's
    search rounds measure subnets in evaluation messages and report them as ``train`` rows.
    """

    train: list[dict[str, Any]] = field(default_factory=list)
    evaluation: list[dict[str, Any]] = field(default_factory=list)
    server: dict[str, Any] = field(default_factory=dict)
    eval_kind: str = ""
    clients_missing: list[int] = field(default_factory=list)

    def written_into(self, record: RoundRecord) -> RoundRecord:
        """``record`` with the fields this stage filled."""
        return dataclasses.replace(record, **{f.name: getattr(self, f.name)
                                              for f in dataclasses.fields(self)
                                              if getattr(self, f.name)})


def arch_details(arch: Arch, cost: Cost, *, metric: str | None = None,
                 budget: float | None = None) -> dict[str, Any]:
    """A NAS method's evaluation-row fields: the architecture, its parameters, FLOPs and
    training memory, and where the client has a (finite) budget in ``metric``
    (params | flops | memory) the cost in that metric, the budget and whether it fits."""
    out: dict[str, Any] = {"arch": arch.to_str(), "params": int(cost.params),
                           "flops": int(cost.flops), "memory_bytes": int(cost.memory_bytes)}
    if metric is not None and budget is not None and math.isfinite(budget):
        value = cost_in(cost, metric)
        out.update(budget_metric=metric, cost=value, budget=float(budget),
                   within_budget=fits(budget, value))
    return out


BUDGET_METRICS = ("params", "flops", "memory")


def cost_in(cost: Cost, metric: str) -> float:
    """``cost`` in a budget's ``metric``: params | flops | memory (training-memory bytes)."""
    return float({"params": cost.params, "flops": cost.flops,
                  "memory": cost.memory_bytes}[metric])
