"""The ``levers`` block of the results page: a method at its tuning's choice and each variant
that turns one lever on, one compact row each (a preset like ``fashion_mnist_levers``).

A row gives the accuracy after fine-tuning and as published (mean over the preset's seeds),
its difference to the method's own row, the subnets' size and the share of each client's
memory budget they use, and the simulated time of the run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pfednas.options.common import FINETUNE_SCOPES
from pfednas.report.bench_results import BenchResults
from pfednas.report.collect import Run
from pfednas.report.paired import signed
from pfednas.report.table import budget_used
from pfednas.report.time_table import mean_or_none

COLUMNS = ("setting", "α", "acc +FT", "as published", "+FT − the method's", "params mean",
           "budget used (mean over clients)", "simulated s")


def _figure(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def scope_figures(runs: Sequence[Run]) -> dict[str, float] | None:
    """The mean over runs of the accuracy after each fine-tuning scope (``full``, ``head``)
    where every run scored both (a tuning cell's ``finetune_both``), else None."""
    scopes = [run.summary.get("finetune_scopes") or {} for run in runs]
    if not scopes or any(not s for s in scopes):
        return None
    return {scope: float(np.mean([s[scope]["mean"] for s in scopes]))
            for scope in FINETUNE_SCOPES}


def lever_row(runs: Sequence[Run]) -> dict[str, float | None]:
    """One setting's figures, each the mean over its runs (one a seed)."""
    summaries = [run.summary for run in runs]
    return {
        "ft": mean_or_none([s["personalized_acc_mean"] for s in summaries]),
        "published": mean_or_none([s.get("personalized_acc_no_ft_mean") for s in summaries]),
        "params": mean_or_none([float(np.mean([r["num_params"] for r in s["per_client"]]))
                         for s in summaries]),
        "budget": mean_or_none([budget_used(s["per_client"]) for s in summaries]),
        "seconds": mean_or_none([s.get("simulated_seconds") for s in summaries]),
    }


def render_levers(results: BenchResults) -> str:
    """The method's row, then one row per variant (what it overrides), per α."""
    preset = results.preset
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    bases = {preset.variants[m][0] if m in preset.variants else m for m in preset.methods}
    for alpha in preset.alphas:
        labels = [label for label in preset.methods
                  if (label, alpha, preset.seeds[0]) in results.runs]
        runs = {label: [results.runs[(label, alpha, s)] for s in preset.seeds]
                for label in labels}
        figures = {label: lever_row(runs[label]) for label in labels}
        scopes = {label: scope_figures(runs[label]) for label in labels}
        for label, row in figures.items():
            base = preset.variants[label][0] if label in preset.variants else label
            setting = (f"`{label}` at its tuning's choice" if label not in preset.variants
                       else ", ".join(f"`{o}`" for o in preset.variants[label][1]))
            if label in preset.variants and len(bases) > 1:
                setting = f"`{base}` + {setting}"
            accuracy, delta = _accuracy_and_delta(
                row["ft"], figures.get(base, {}).get("ft"), scopes[label], scopes.get(base),
                own=label == base)
            lines.append("| " + " | ".join([
                setting, f"{alpha:g}", accuracy, _figure(row["published"], ".4f"),
                delta, _figure(row["params"], ",.0f"), _figure(row["budget"], ".2f"),
                _figure(row["seconds"], ".1f")]) + " |")
    return "\n".join(lines) + "\n"


def _accuracy_and_delta(mine: float | None, theirs: float | None,
                        my_scopes: dict[str, float] | None,
                        their_scopes: dict[str, float] | None, *, own: bool
                        ) -> tuple[str, str]:
    """The +FT cell and its difference to the method's row: ``full / head`` where the runs
    scored both scopes, else the one figure."""
    if my_scopes is not None:
        accuracy = " / ".join(f"{my_scopes[s]:.4f}" for s in FINETUNE_SCOPES)
        if own or their_scopes is None:
            return accuracy, "—"
        return accuracy, " / ".join(signed(my_scopes[s] - their_scopes[s])
                                     for s in FINETUNE_SCOPES)
    delta = "—" if own or mine is None or theirs is None else signed(mine - theirs)
    return _figure(mine, ".4f"), delta
