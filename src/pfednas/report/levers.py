"""The ``levers`` block of the results page: a method at its tuning's choice and each variant
that turns one lever on, one compact row each (a preset like ``fashion_mnist_levers``).

A row gives the accuracy after fine-tuning and as published (mean over the preset's seeds),
its difference to the method's own row, the subnets' size and the share of each client's
memory budget they use, and the simulated time of the run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pfednas.report.bench_results import BenchResults
from pfednas.report.collect import Run
from pfednas.report.paired import signed
from pfednas.report.table import budget_used
from pfednas.report.time_table import mean_or_none

COLUMNS = ("setting", "α", "acc +FT", "as published", "+FT − the method's", "params mean",
           "budget used (mean over clients)", "simulated s")


def _figure(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


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
    for alpha in preset.alphas:
        figures = {label: lever_row([results.runs[(label, alpha, s)] for s in preset.seeds])
                   for label in preset.methods if (label, alpha, preset.seeds[0]) in results.runs}
        for label, row in figures.items():
            base = preset.variants[label][0] if label in preset.variants else label
            mine, theirs = row["ft"], figures.get(base, {}).get("ft")
            setting = (f"`{label}` at its tuning's choice" if label not in preset.variants
                       else ", ".join(f"`{o}`" for o in preset.variants[label][1]))
            delta = ("—" if label == base or mine is None or theirs is None
                     else signed(mine - theirs))
            lines.append("| " + " | ".join([
                setting, f"{alpha:g}", _figure(mine, ".4f"), _figure(row["published"], ".4f"),
                delta, _figure(row["params"], ",.0f"), _figure(row["budget"], ".2f"),
                _figure(row["seconds"], ".1f")]) + " |")
    return "\n".join(lines) + "\n"
