"""Run results: per-round JSONL, the summary, the final table (the app layer writes them)."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from pfednas.config import SIMULATION_ENV
from pfednas.options.common import FINETUNE_SCOPES
from pfednas.records import RoundRecord

# per-client fields of an evaluation row that summary.json keeps (NAS methods: the
# architecture; where budgets exist its cost, the client's budget and whether it fits; where
# the spread has discrete device levels the client's, its width rate)
CLIENT_FIELDS = ("arch", "params", "flops", "memory_bytes", "budget_metric", "cost", "budget",
                 "within_budget", "accuracy_no_ft", "accuracy_ft_full", "accuracy_ft_head",
                 "sample_passes", "level")


def client_row(row: dict[str, Any]) -> dict[str, Any]:
    out = {"client_id": int(row["client_id"]), "accuracy": float(row["accuracy"]),
           "num_params": int(row["num_params"])}
    out.update({k: row[k] for k in CLIENT_FIELDS if k in row})
    return out


def arch_counts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Distinct architectures and the share of clients within budget, where rows say."""
    out: dict[str, Any] = {}
    archs = [r["arch"] for r in rows if r.get("arch")]
    if archs:
        out["distinct_archs"] = len(set(archs))
    fits = [bool(r["within_budget"]) for r in rows if "within_budget" in r]
    if fits:
        out["within_budget_share"] = float(np.mean(fits))
    return out


# Accuracy by device tier: each distinct budget of a run is a tier where it has at most
# MAX_LEVELS of them (a spread of discrete device levels), else the clients are cut into
# QUANTILES groups of sorted budgets
MAX_LEVELS = 8
QUANTILES = 5
# the per-client fields a tier averages, where every budgeted row carries them
TIER_FIGURES = ("accuracy", "accuracy_no_ft", "accuracy_ft_full", "accuracy_ft_head", "params",
                "within_budget")
BUDGET_UNITS = {"memory": (2.0**20, "MiB"), "params": (1e6, "M params"),
                "flops": (1e6, "MFLOPs")}


def accuracy_by_tier(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The clients with a finite ``budget`` grouped by device tier, smallest budgets first:
    per tier its label (``r=1/4`` where the rows carry the device ``level``, else the budget,
    or ``Q1``..``Q5`` for budget quintiles), clients, budget range (in ``budget_metric``'s
    unit, bytes for memory), and the mean of each accuracy figure, of ``params`` and of
    ``within_budget`` (``within_budget_share``) that every budgeted row carries. [] where no
    row has a budget."""
    budgeted = budgeted_rows(rows)
    figures = tier_figures(budgeted)
    return [tier_summary(label, group, figures) for label, group in tier_groups(budgeted)]


def budgeted_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with a finite ``budget``."""
    return [r for r in rows if _finite(r.get("budget"))]


def tier_figures(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The ``TIER_FIGURES`` every one of ``rows`` carries (none for no rows)."""
    return [k for k in TIER_FIGURES if rows and all(k in r for r in rows)]


def tier_groups(rows: Sequence[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(label, rows) per tier of budgeted ``rows``: one per distinct budget up to
    ``MAX_LEVELS`` of them, else ``QUANTILES`` groups of the rows sorted by budget, as equal
    in size as possible (the first ones larger; none empty)."""
    ordered = sorted(rows, key=lambda r: (float(r["budget"]), int(r.get("client_id", 0))))
    values = sorted({float(r["budget"]) for r in ordered})
    if len(values) <= MAX_LEVELS:
        return [(level_label(g), g) for g in
                ([r for r in ordered if float(r["budget"]) == v] for v in values)]
    return [(f"Q{i}", g) for i, g in enumerate(split_even(ordered, QUANTILES), start=1)]


def split_even(items: Sequence[Any], parts: int) -> list[list[Any]]:
    """``items`` in order, cut into ``parts`` runs whose sizes differ by at most one (the
    larger first); fewer items than parts: one run each."""
    n = len(items)
    sizes = [n // parts + (i < n % parts) for i in range(parts)]
    starts = np.cumsum([0, *sizes])
    return [list(items[a:b]) for a, b in zip(starts[:-1], starts[1:], strict=True) if b > a]


def level_label(group: Sequence[dict[str, Any]]) -> str:
    """A discrete tier's label: its device level (``r=1/4``) where its rows carry one, else
    its budget (``3.25 MiB``)."""
    level = group_level(group)
    if level is not None:
        return f"r={rate_text(level)}"
    return budget_text(float(group[0]["budget"]), str(group[0].get("budget_metric", "memory")))


def group_level(group: Sequence[dict[str, Any]]) -> float | None:
    """The device level every row of a tier carries (None: a row has none, or they differ)."""
    levels = {float(r["level"]) if "level" in r else None for r in group}
    return levels.pop() if len(levels) == 1 else None


def rate_text(rate: float) -> str:
    """``1``, ``1/4``, ``3/8``: the fraction a width rate is (to 1/64), else its decimal."""
    fraction = Fraction(rate).limit_denominator(64)
    return str(fraction) if math.isclose(float(fraction), rate) else f"{rate:g}"


def budget_text(value: float, metric: str, *, unit: bool = True) -> str:
    scale, name = BUDGET_UNITS.get(metric, (1.0, metric))
    return f"{value / scale:.2f}" + (f" {name}" if unit else "")


def tier_summary(label: str, group: Sequence[dict[str, Any]],
                 figures: Sequence[str]) -> dict[str, Any]:
    """One tier's entry of ``accuracy_by_tier`` from its rows."""
    budgets = [float(r["budget"]) for r in group]
    out: dict[str, Any] = {"tier": label, "clients": len(group),
                           "budget_metric": str(group[0].get("budget_metric", "memory")),
                           "budget_min": min(budgets), "budget_max": max(budgets)}
    level = group_level(group)
    if level is not None:
        out["level"] = level
    out.update({("within_budget_share" if k == "within_budget" else k):
                float(np.mean([float(r[k]) for r in group])) for k in figures})
    return out


def tier_entry(per_client: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``{"accuracy_by_tier": [...]}`` where the clients have budgets, else ``{}``."""
    tiers = accuracy_by_tier(per_client)
    return {"accuracy_by_tier": tiers} if tiers else {}


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)


def summarize(*, method: str, dataset: str, records: list[RoundRecord], wall_seconds: float,
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's summary from its round records; personalized accuracy = last evaluation.

    ``clients_missing``: clients the last evaluation was sent to that gave no valid row
    (failed, rejected or past ``eval_timeout``); the accuracy is over the others only.
    """
    evaluated = [r for r in records if r.evaluation or r.clients_missing]
    if not evaluated or not evaluated[-1].evaluation:
        raise ValueError("no personalized evaluation took place"
                         if not evaluated else "no client replied to the final evaluation")
    last = evaluated[-1]
    final = last.evaluation
    accs = np.array([row["accuracy"] for row in final])
    per_client = [client_row(row) for row in final]
    return {
        "method": method,
        "dataset": dataset,
        "num_clients_evaluated": len(final),
        "clients_missing": list(last.clients_missing),
        "eval_kind": last.eval_kind,
        "personalized_acc_mean": float(accs.mean()),
        "personalized_acc_std": float(accs.std()),
        "personalized_acc_min": float(accs.min()),
        "personalized_acc_p10": float(np.percentile(accs, 10)),
        **no_finetuning_stats(final),
        **scope_stats(final),
        **arch_counts(per_client),
        **tier_entry(per_client),
        "per_client": per_client,
        "curve": [{"round": r.round, "acc_mean": float(np.mean([e["accuracy"]
                                                                for e in r.evaluation])),
                   "eval_kind": r.eval_kind}
                  for r in evaluated if r.evaluation],
        "rounds": len(records),
        "failures": int(sum(r.failures for r in records)),
        "wall_seconds": float(wall_seconds),
        "simulated_seconds": float(sum(r.simulated_seconds for r in records)),
        "server_seconds": float(sum(r.server_seconds for r in records)),
        "eval_seconds": _eval_seconds(records),
        "bytes_up": int(sum(r.bytes_up for r in records)),
        "bytes_down": int(sum(r.bytes_down for r in records)),
        "client_sample_passes": client_sample_passes(records),
        "client_forward_macs": client_forward_macs(records),
        **(extra or {}),
    }


def client_forward_macs(records: list[RoundRecord]) -> float:
    """The cost model's MACs of the clients' forward-only passes besides training, over every
    round: measurements on the validation split (a search's: PerFedRLNAS's reward, HAPFNAS's
    subnets, SPIDER's perturbations) and the re-estimations before them (what each training
    or measurement reply reported as ``forward_macs``; test evaluations are not counted)."""
    return float(sum(row.get("forward_macs", 0.0) for r in records for row in r.train))


def client_sample_passes(records: list[RoundRecord]) -> int:
    """Samples the clients put through forward + backward, over every round: training,
    fine-tuning and knowledge models (what each reply reported as ``sample_passes``)."""
    return int(sum(row.get("sample_passes", 0) for r in records
                   for row in (*r.train, *r.evaluation)))


def no_finetuning_stats(final: list[dict[str, Any]]) -> dict[str, float]:
    """The as-published (no fine-tuning) accuracy of a run that also fine-tuned: the
    ``personalized_acc_no_ft_*`` entries, when every final row carries ``accuracy_no_ft``."""
    if not final or not all("accuracy_no_ft" in row for row in final):
        return {}
    accs = np.array([row["accuracy_no_ft"] for row in final])
    return {"personalized_acc_no_ft_mean": float(accs.mean()),
            "personalized_acc_no_ft_std": float(accs.std()),
            "personalized_acc_no_ft_min": float(accs.min()),
            "personalized_acc_no_ft_p10": float(np.percentile(accs, 10))}


def scope_stats(final: list[dict[str, Any]]) -> dict[str, Any]:
    """A ``finetune_both`` run's accuracy after each fine-tuning scope:
    ``{"finetune_scopes": {"full": {"mean": .., "std": ..}, "head": {...}}}`` when every final
    row carries both (the tuning grid scores each scope from one run)."""
    keys = [f"accuracy_ft_{s}" for s in FINETUNE_SCOPES]
    if not final or not all(k in row for row in final for k in keys):
        return {}
    return {"finetune_scopes": {
        s: {"mean": float(np.mean([row[k] for row in final])),
            "std": float(np.std([row[k] for row in final]))}
        for s, k in zip(FINETUNE_SCOPES, keys, strict=True)}}
def _eval_seconds(records: list[RoundRecord]) -> dict[str, float]:
    """Wall seconds of the evaluation stages, by kind (quick / full / final)."""
    out: dict[str, float] = {}
    for r in records:
        if r.eval_kind:
            out[r.eval_kind] = out.get(r.eval_kind, 0.0) + r.eval_seconds
    return out


def format_table(summary: dict[str, Any]) -> str:
    rows = [
        ("method", summary["method"]),
        ("dataset", summary["dataset"]),
        ("personalized acc, fine-tuned (mean ± std)" if "personalized_acc_no_ft_mean" in summary
         else "personalized acc (mean ± std)", accuracy_text(summary)),
        ("min / 10th percentile",
         f"{summary['personalized_acc_min']:.4f} / {summary['personalized_acc_p10']:.4f}"),
        *_as_published_rows(summary),
        ("clients evaluated", _evaluated(summary)),
        *_arch_rows(summary),
        ("rounds", str(summary["rounds"])),
        ("wall time (s)", f"{summary['wall_seconds']:.1f}"),
        *_simulated_rows(summary),
        ("bytes up / down", f"{_mb(summary['bytes_up'])} / {_mb(summary['bytes_down'])}"),
    ]
    width = max(len(k) for k, _ in rows)
    line = "+" + "-" * (width + 2) + "+" + "-" * 26 + "+"
    body = [f"| {k.ljust(width)} | {v.ljust(24)} |" for k, v in rows]
    tiers = summary.get("accuracy_by_tier")
    return "\n".join([line, *body, line, *([tier_table(tiers)] if tiers else [])])


def accuracy_text(summary: dict[str, Any]) -> str:
    """The run's personalized accuracy as the table and the commands print it."""
    return f"{summary['personalized_acc_mean']:.4f} ± {summary['personalized_acc_std']:.4f}"


def tier_table(tiers: Sequence[dict[str, Any]]) -> str:
    """The console block of ``accuracy_by_tier``: a row per tier, a column per figure, under
    a title row (every line a table's, which the launcher passes to the console)."""
    title = "accuracy by device tier, smallest budgets first"
    rows = [tier_cells(t) for t in tiers]
    cells = [[name for name, _ in rows[0]], *([value for _, value in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    widths[-1] += max(0, len(title) - (sum(widths) + 3 * len(widths) - 3))
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
            for row in cells]
    top = "+" + "-" * (len(line) - 2) + "+"
    return "\n".join([top, f"| {title.ljust(len(line) - 4)} |", line, body[0], line,
                      *body[1:], line])


# the figures beside a tier's accuracy, with their column titles
TIER_COLUMNS = (("accuracy_no_ft", "as published"), ("accuracy_ft_full", "+FT full"),
                ("accuracy_ft_head", "+FT head"))


def tier_cells(tier: dict[str, Any]) -> list[tuple[str, str]]:
    """(column title, text) of what a tier holds; the tiers of one run hold the same."""
    metric = str(tier["budget_metric"])
    cells = [("tier", str(tier["tier"])), ("clients", str(tier["clients"])),
             (f"budget {BUDGET_UNITS.get(metric, (1.0, metric))[1]}", budget_range(tier)),
             ("acc +FT" if "accuracy_no_ft" in tier else "acc", f"{tier['accuracy']:.4f}"),
             *((title, f"{tier[k]:.4f}") for k, title in TIER_COLUMNS if k in tier)]
    if "params" in tier:
        cells.append(("params", f"{tier['params']:,.0f}"))
    if "within_budget_share" in tier:
        fits = round(tier["within_budget_share"] * tier["clients"])
        cells.append(("in budget", f"{fits}/{tier['clients']}"))
    return cells


def budget_range(tier: dict[str, Any]) -> str:
    """A tier's budget, or its range, in its metric's unit (MiB for memory)."""
    metric = str(tier["budget_metric"])
    low, high = (budget_text(float(tier[k]), metric, unit=False)
                 for k in ("budget_min", "budget_max"))
    return low if low == high else f"{low}–{high}"


def _as_published_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """A run that fine-tuned a method published without it shows both figures."""
    if "personalized_acc_no_ft_mean" not in summary:
        return []
    return [("as published, no fine-tuning",
             f"{summary['personalized_acc_no_ft_mean']:.4f} ± "
             f"{summary['personalized_acc_no_ft_std']:.4f}"),
            ("min / 10th pct., no fine-tuning",
             f"{summary['personalized_acc_no_ft_min']:.4f} / "
             f"{summary['personalized_acc_no_ft_p10']:.4f}")]
def _simulated_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The run's time on the clients' simulated hardware (absent from older summaries)."""
    if "simulated_seconds" not in summary:
        return []
    return [("simulated time (s)", f"{summary['simulated_seconds']:.1f}")]


def _evaluated(summary: dict[str, Any]) -> str:
    missing = summary.get("clients_missing") or []
    if not missing:
        return str(summary["num_clients_evaluated"])
    total = summary["num_clients_evaluated"] + len(missing)
    return f"{summary['num_clients_evaluated']} of {total} ({len(missing)} MISSING)"


def _arch_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    if "distinct_archs" in summary:
        rows.append(("distinct architectures", str(summary["distinct_archs"])))
    if "within_budget_share" in summary:
        fits = round(summary["within_budget_share"] * summary["num_clients_evaluated"])
        rows.append(("clients within budget",
                     f"{fits}/{summary['num_clients_evaluated']} "
                     f"({summary['within_budget_share']:.0%})"))
    return rows


def missing_clients_error(summary: dict[str, Any], *, allowed: bool) -> str | None:
    """Why the run must not pass as complete: its final evaluation missed clients."""
    missing = summary.get("clients_missing") or []
    if not missing or allowed:
        return None
    total = summary["num_clients_evaluated"] + len(missing)
    ids = ", ".join(str(c) for c in missing[:20]) + (" ..." if len(missing) > 20 else "")
    return (f"the final evaluation misses {len(missing)} of {total} clients (ids {ids}); the "
            f"personalized accuracy in summary.json is over the other "
            f"{summary['num_clients_evaluated']} only. Give evaluations more time "
            "(federation.eval_timeout), or accept it with federation.allow_missing_clients=true")


def _mb(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


RAN_AS = "ran_as"  # summary.json's record of how the run ran
SIMULATED, FLWR_RUN, DEPLOYED = "simulated", "flwr run", "deployed"


def how_it_runs() -> str:
    """How this process's run runs: ``simulated`` by the ``pfednas`` command (its launcher
    and its in-process runner set ``$PFEDNAS_SIMULATION``), ``flwr run`` on Flower's
    Simulation Runtime without it (``flwr run .``: the ServerApp runs in the process that
    drives the runtime's Ray), else ``deployed`` (a SuperLink's ServerApp process)."""
    if os.environ.get(SIMULATION_ENV, "") == "1":
        return SIMULATED
    ray = sys.modules.get("ray")  # imported by the Simulation Runtime, never by a deployment
    return FLWR_RUN if ray is not None and ray.is_initialized() else DEPLOYED


class ResultsWriter:
    """Writes ``metrics.jsonl`` (one line per round) and ``summary.json`` in ``out_dir``.

    ``metrics.jsonl`` starts with the ``previous`` rounds (those of a resumed run), replaced
    in one step: a run resumed into its own folder reads them before, and a crash at any
    moment leaves the old file or the new one, never a truncated one.
    """

    def __init__(self, out_dir: Path, previous: Sequence[RoundRecord] = ()) -> None:
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = out_dir / "metrics.jsonl"
        tmp = self.metrics_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(record.to_json()) + "\n" for record in previous))
        tmp.replace(self.metrics_path)

    def write_round(self, record: RoundRecord) -> None:
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(record.to_json()) + "\n")

    def write_summary(self, summary: dict[str, Any]) -> Path:
        """``summary.json``, with ``ran_as`` (:func:`how_it_runs`) where it has none."""
        path = self.out_dir / "summary.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({**summary, RAN_AS: summary.get(RAN_AS) or how_it_runs()},
                                  indent=2))
        tmp.replace(path)
        return path
