"""Run results: per-round JSONL, the summary, the final table (the app layer writes them)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pfednas.options.common import FINETUNE_SCOPES
from pfednas.records import RoundRecord

# per-client fields of an evaluation row that summary.json keeps (NAS methods: the
# architecture; where budgets exist its cost, the client's budget and whether it fits)
CLIENT_FIELDS = ("arch", "params", "flops", "memory_bytes", "budget_metric", "cost", "budget",
                 "within_budget", "accuracy_no_ft", "accuracy_ft_full", "accuracy_ft_head",
                 "sample_passes")


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
        **(extra or {}),
    }


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
         else "personalized acc (mean ± std)",
         f"{summary['personalized_acc_mean']:.4f} ± {summary['personalized_acc_std']:.4f}"),
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
    return "\n".join([line, *body, line])


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
        path = self.out_dir / "summary.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(summary, indent=2))
        tmp.replace(path)
        return path
