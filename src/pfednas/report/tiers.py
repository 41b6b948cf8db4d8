"""Accuracy by device tier across runs: each method's clients, every seed's, grouped by their
budgets as each run's ``summary.json`` groups them (:func:`pfednas.app.results.accuracy_by_tier`:
a tier per discrete device level, else budget quintiles), pooled over seeds by tier label.

Pure functions of what :mod:`pfednas.report.collect` read; the plot is
:func:`pfednas.report.plots.tier_accuracy`, the files are written by :mod:`pfednas.report.cli`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pfednas.app.results import (
    BUDGET_UNITS,
    budget_text,
    budgeted_rows,
    tier_figures,
    tier_groups,
    tier_summary,
)
from pfednas.report.collect import Run
from pfednas.report.table import section_heading


@dataclass(frozen=True)
class TierSeries:
    """One method's clients against their budgets (every seed's) and its tiers' means."""

    method: str
    budget_metric: str
    budgets: np.ndarray     # each client's budget, in the metric's unit (MiB for memory)
    accuracies: np.ndarray  # each client's accuracy (fine-tuned where the run has the pair)
    tiers: list[dict[str, Any]]  # pooled_tiers, smallest budgets first
    tier_budgets: np.ndarray  # each tier's clients' mean budget, in the metric's unit

    @property
    def unit(self) -> str:
        return BUDGET_UNITS.get(self.budget_metric, (1.0, self.budget_metric))[1]


def pooled_tiers(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """The tiers of ``runs`` (one method's seeds), each seed's clients grouped as its summary
    groups them and pooled by tier label: the ``accuracy_by_tier`` entries of every seed's
    clients of a tier, and ``budget_mean``, their mean budget; by it, smallest first. []
    where no client has a budget."""
    by_label: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        for label, group in tier_groups(budgeted_rows(run.summary["per_client"])):
            by_label.setdefault(label, []).extend(group)
    figures = tier_figures([r for group in by_label.values() for r in group])
    tiers = [{**tier_summary(label, group, figures),
              "budget_mean": float(np.mean([float(r["budget"]) for r in group]))}
             for label, group in by_label.items()]
    return sorted(tiers, key=lambda t: t["budget_mean"])


def tier_series(method: str, runs: Sequence[Run]) -> TierSeries | None:
    """``method``'s clients and pooled tiers over ``runs`` (None: no client has a budget)."""
    tiers = pooled_tiers(runs)
    if not tiers:
        return None
    metric = str(tiers[0]["budget_metric"])
    scale = BUDGET_UNITS.get(metric, (1.0, metric))[0]
    rows = [r for run in runs for r in budgeted_rows(run.summary["per_client"])]
    return TierSeries(method=method, budget_metric=metric,
                      budgets=np.array([float(r["budget"]) / scale for r in rows]),
                      accuracies=np.array([float(r["accuracy"]) for r in rows]), tiers=tiers,
                      tier_budgets=np.array([t["budget_mean"] / scale for t in tiers]))


COLUMNS = ("method", "α", "space", "seeds", "tier", "clients", "budget", "acc (+FT where a pair)",
           "as published", "params mean", "within budget")


def _cells(run: Run, seeds: str, tier: dict[str, Any]) -> list[str]:
    metric = str(tier["budget_metric"])
    low, high = (budget_text(float(tier[k]), metric) for k in ("budget_min", "budget_max"))
    share = tier.get("within_budget_share")
    alpha = f"{run.alpha:g}" if run.reads_alpha else "—"
    return [run.row_name, alpha, run.space, seeds, str(tier["tier"]),
            str(tier["clients"]), low if low == high else f"{low} – {high}",
            f"{tier['accuracy']:.4f}",
            f"{tier['accuracy_no_ft']:.4f}" if "accuracy_no_ft" in tier else "—",
            f"{tier['params']:,.0f}" if "params" in tier else "—",
            "—" if share is None else f"{share:.0%}"]


def tier_markdown(groups: Sequence[Sequence[Run]]) -> str:
    """The report's section: one table per dataset, federation size and way of running, a row
    per tier of each group of runs (runs that differ only in their seed); "" where no run's
    clients have budgets."""
    lines: list[str] = []
    heading = ""
    for runs in groups:
        tiers = pooled_tiers(runs)
        if not tiers:
            continue
        first = runs[0]
        if section_heading(first.dataset, first.budget, first.ran_as) != heading:
            heading = section_heading(first.dataset, first.budget, first.ran_as)
            lines += ["", heading, "", "| " + " | ".join(COLUMNS) + " |",
                      "|" + "---|" * len(COLUMNS)]
        seeds = ",".join(str(s) for s in sorted({r.seed for r in runs}))
        lines += ["| " + " | ".join(_cells(runs[0], seeds, t)) + " |" for t in tiers]
    if not lines:
        return ""
    return ("\n## Accuracy by device tier\n\nEach client's personalized accuracy by its device "
            "tier: a tier per distinct budget where a run has at most 8 (device levels, "
            "labelled by width rate r where the clients have one), else budget quintiles "
            "(Q1 the smallest budgets); seeds pooled, means over their clients.\n"
            + "\n".join(lines) + "\n")
