"""Run results: per-round JSONL, the summary, the final table (the app layer writes them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pfednas.strategies.base import RoundRecord


def summarize(*, method: str, dataset: str, records: list[RoundRecord], wall_seconds: float,
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's summary from its round records; personalized accuracy = last evaluation."""
    evaluated = [r for r in records if r.evaluation]
    if not evaluated:
        raise ValueError("no personalized evaluation took place")
    final = evaluated[-1].evaluation
    accs = np.array([row["accuracy"] for row in final])
    return {
        "method": method,
        "dataset": dataset,
        "num_clients_evaluated": len(final),
        "personalized_acc_mean": float(accs.mean()),
        "personalized_acc_std": float(accs.std()),
        "personalized_acc_min": float(accs.min()),
        "personalized_acc_p10": float(np.percentile(accs, 10)),
        **no_finetuning_stats(final),
        "per_client": [{"client_id": int(row["client_id"]), "accuracy": float(row["accuracy"]),
                        "num_params": int(row["num_params"]),
                        **({"accuracy_no_ft": float(row["accuracy_no_ft"])}
                           if "accuracy_no_ft" in row else {})} for row in final],
        "curve": [{"round": r.round, "acc_mean": float(np.mean([e["accuracy"]
                                                                for e in r.evaluation]))}
                  for r in evaluated],
        "rounds": len(records),
        "failures": int(sum(r.failures for r in records)),
        "wall_seconds": float(wall_seconds),
        "server_seconds": float(sum(r.server_seconds for r in records)),
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
        ("clients evaluated", str(summary["num_clients_evaluated"])),
        ("rounds", str(summary["rounds"])),
        ("wall time (s)", f"{summary['wall_seconds']:.1f}"),
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


def _mb(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


class ResultsWriter:
    """Writes ``metrics.jsonl`` (one line per round) and ``summary.json`` in ``out_dir``."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = out_dir / "metrics.jsonl"
        self.metrics_path.write_text("")

    def write_round(self, record: RoundRecord) -> None:
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(record.to_json()) + "\n")

    def write_summary(self, summary: dict[str, Any]) -> Path:
        path = self.out_dir / "summary.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(summary, indent=2))
        tmp.replace(path)
        return path
