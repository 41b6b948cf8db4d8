"""The benchmark table: per-run numbers, their aggregation per (method, α), markdown and CSV.

Values a run's ``summary.json`` holds are taken from it unchanged (personalized
accuracy mean / std / 10th percentile, wall time, per-client parameters);
what it does not hold is derived from ``metrics.jsonl`` (traffic per client and
round, distinct architectures of the final evaluation).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pfednas.report.collect import Run


@dataclass(frozen=True)
class RunRow:
    """One run's numbers (one bench cell)."""

    method: str
    dataset: str
    alpha: float
    space: str
    seed: int
    path: str
    budget: str
    acc_mean: float
    acc_std: float
    acc_p10: float
    wall_seconds: float
    up_per_client_round: float
    down_per_client_round: float
    accuracies: tuple[float, ...]
    params: tuple[int, ...]
    distinct_archs: int | None


@dataclass(frozen=True)
class GroupRow:
    """One table row: the runs of one (dataset, method, α, search space) over seeds."""

    method: str
    dataset: str
    alpha: float
    space: str
    seeds: tuple[int, ...]
    budget: str
    acc_mean: float            # mean over seeds of the mean over clients
    acc_std_clients: float     # mean over seeds of the std over clients
    acc_std_seeds: float | None  # sample std over seeds of the mean (None for one seed)
    acc_p10: float             # mean over seeds of the 10th-percentile client accuracy
    wall_seconds: float
    up_per_client_round: float
    down_per_client_round: float
    params_mean: float
    params_min: int
    params_max: int
    distinct_archs: float | None


def percentile10(accuracies: Sequence[float]) -> float:
    """The worst-10 % client accuracy: the 10th percentile (as ``summary.json``'s ``p10``)."""
    return float(np.percentile(np.asarray(accuracies, dtype=np.float64), 10))


def distinct_archs(evaluation: Iterable[dict[str, Any]]) -> int | None:
    """How many different architectures the clients were evaluated with (None: no ``arch``)."""
    archs = {str(row["arch"]) for row in evaluation if row.get("arch")}
    return len(archs) if archs else None


def per_client_round(total: float, rounds: Iterable[dict[str, Any]]) -> float:
    """``total`` bytes divided by the client-round participations of ``metrics.jsonl``."""
    slots = sum(max(len(r.get("sampled_clients", [])), len(r.get("train", []))) for r in rounds)
    return total / slots if slots else math.nan


def budget_of(config: dict[str, Any]) -> str:
    fed = config["federation"]
    return (f"K={fed['num_clients']} N={fed['clients_per_round']} R={fed['num_rounds']} "
            f"E={fed['local_epochs']}")


def run_row(run: Run) -> RunRow:
    s = run.summary
    clients = s["per_client"]
    accs = tuple(float(c["accuracy"]) for c in clients)
    p10 = s.get("personalized_acc_p10")
    return RunRow(
        method=run.method, dataset=run.dataset, alpha=run.alpha, space=run.space, seed=run.seed,
        path=str(run.path), budget=budget_of(run.config),
        acc_mean=float(s["personalized_acc_mean"]), acc_std=float(s["personalized_acc_std"]),
        acc_p10=float(p10) if p10 is not None else percentile10(accs),
        wall_seconds=float(s["wall_seconds"]),
        up_per_client_round=per_client_round(s["bytes_up"], run.rounds),
        down_per_client_round=per_client_round(s["bytes_down"], run.rounds),
        accuracies=accs, params=tuple(int(c["num_params"]) for c in clients),
        distinct_archs=distinct_archs(run.evaluation()))


def group_key(row: RunRow) -> tuple[str, str, float, str]:
    return (row.dataset, row.method, row.alpha, row.space)


def aggregate(rows: Iterable[RunRow], method_order: Sequence[str] = ()) -> list[GroupRow]:
    """One :class:`GroupRow` per (dataset, method, α, space), seeds pooled.

    Sorted by dataset, α, then ``method_order`` (methods not in it last, by name).
    """
    groups: dict[tuple[str, str, float, str], list[RunRow]] = {}
    for row in rows:
        groups.setdefault(group_key(row), []).append(row)
    rank = {m: i for i, m in enumerate(method_order)}
    keys = sorted(groups, key=lambda k: (k[0], k[2], rank.get(k[1], len(rank)), k[1], k[3]))
    return [_group(sorted(groups[k], key=lambda r: r.seed)) for k in keys]


def _group(runs: list[RunRow]) -> GroupRow:
    first = runs[0]
    means = np.array([r.acc_mean for r in runs])
    params = np.array([p for r in runs for p in r.params])
    archs = [r.distinct_archs for r in runs if r.distinct_archs is not None]
    budgets = sorted({r.budget for r in runs})
    return GroupRow(
        method=first.method, dataset=first.dataset, alpha=first.alpha, space=first.space,
        seeds=tuple(r.seed for r in runs), budget=" | ".join(budgets),
        acc_mean=float(means.mean()),
        acc_std_clients=float(np.mean([r.acc_std for r in runs])),
        acc_std_seeds=float(means.std(ddof=1)) if len(runs) > 1 else None,
        acc_p10=float(np.mean([r.acc_p10 for r in runs])),
        wall_seconds=float(np.mean([r.wall_seconds for r in runs])),
        up_per_client_round=float(np.mean([r.up_per_client_round for r in runs])),
        down_per_client_round=float(np.mean([r.down_per_client_round for r in runs])),
        params_mean=float(params.mean()), params_min=int(params.min()),
        params_max=int(params.max()),
        distinct_archs=float(np.mean(archs)) if archs else None)


# -- rendering -----------------------------------------------------------------------------------
COLUMNS = ("method", "α", "space", "seeds", "personalized acc (mean ± std clients)",
           "± std seeds", "worst-10 % acc", "wall s", "KiB up / client·round",
           "KiB down / client·round", "params mean", "params min", "params max",
           "distinct archs")


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else format(value, fmt)


def _cells(g: GroupRow) -> list[str]:
    return [g.method, f"{g.alpha:g}", g.space, ",".join(map(str, g.seeds)),
            f"{g.acc_mean:.4f} ± {g.acc_std_clients:.4f}", _num(g.acc_std_seeds, ".4f"),
            f"{g.acc_p10:.4f}", f"{g.wall_seconds:.1f}",
            _num(g.up_per_client_round / 1024, ".1f"), _num(g.down_per_client_round / 1024, ".1f"),
            f"{g.params_mean:.0f}", str(g.params_min), str(g.params_max),
            _num(g.distinct_archs, "g")]


def markdown(groups: Sequence[GroupRow]) -> str:
    """One markdown table per dataset (budgets stated above each)."""
    parts = []
    for dataset in sorted({g.dataset for g in groups}):
        rows = [g for g in groups if g.dataset == dataset]
        budgets = sorted({g.budget for g in rows})
        parts.append(f"### {dataset} ({'; '.join(budgets)})\n")
        parts.append("| " + " | ".join(COLUMNS) + " |")
        parts.append("|" + "---|" * len(COLUMNS))
        parts.extend("| " + " | ".join(_cells(g)) + " |" for g in rows)
        parts.append("")
    return "\n".join(parts)


CSV_FIELDS = ("dataset", "method", "alpha", "space", "seeds", "budget", "acc_mean",
              "acc_std_clients", "acc_std_seeds", "acc_p10", "wall_seconds",
              "bytes_up_per_client_round", "bytes_down_per_client_round", "params_mean",
              "params_min", "params_max", "distinct_archs")


def _csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _blank_none(value: Any) -> Any:
    return "" if value is None else value


def to_csv(groups: Sequence[GroupRow]) -> str:
    return _csv(CSV_FIELDS, (
        [g.dataset, g.method, g.alpha, g.space, " ".join(map(str, g.seeds)),
         g.budget, g.acc_mean, g.acc_std_clients, _blank_none(g.acc_std_seeds), g.acc_p10,
         g.wall_seconds, g.up_per_client_round, g.down_per_client_round,
         g.params_mean, g.params_min, g.params_max, _blank_none(g.distinct_archs)]
        for g in groups))


RUN_CSV_FIELDS = ("dataset", "method", "alpha", "space", "seed", "budget", "acc_mean", "acc_std",
                  "acc_p10", "wall_seconds", "bytes_up_per_client_round",
                  "bytes_down_per_client_round", "distinct_archs", "path")


def runs_csv(rows: Sequence[RunRow]) -> str:
    """Every run on its own line, with the folder it was read from."""
    return _csv(RUN_CSV_FIELDS, (
        [r.dataset, r.method, r.alpha, r.space, r.seed, r.budget, r.acc_mean, r.acc_std,
         r.acc_p10, r.wall_seconds, r.up_per_client_round, r.down_per_client_round,
         _blank_none(r.distinct_archs), r.path]
        for r in sorted(rows, key=lambda r: (*group_key(r), r.seed))))
