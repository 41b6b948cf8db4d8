"""The ``targets`` block of the results page: each method that is not a baseline against the
benchmark's targets, met (✓) or missed (✗), from the figures of its verdict line (pure).

The targets, per α, against the strongest baseline of the cell, paired by seed:

* its accuracy after fine-tuning ties with the strongest baseline's or beats it (the 95 %
  interval of the paired difference lies within ±``TIE_MARGIN``, or above 0; an
  inconclusive interval meets no target);
* its accuracy as published (no fine-tuning) within ``PUBLISHED_GAP`` of its +FT figure;
* no client's model over its budget;
* its training traffic over the whole run at most ``TRAFFIC_MAX`` × the strongest
  baseline's (training messages: evaluations are not what a method trains with);
* its simulated time to the strongest baseline's accuracy at most ``TIME_MAX`` × the
  strongest baseline's own (on the recorded devices; the heavy-tailed spread in brackets).
"""

from __future__ import annotations

from pfednas.report.bench_results import BenchResults
from pfednas.report.page import (
    best_of,
    paired_against,
    published_too,
    row_name,
    shown_rows,
    time_figures,
    traffic_ratio,
    unfinished_note,
)
from pfednas.report.table import FT_SUFFIX, GroupRow, is_baseline
from pfednas.report.time_table import time_cell

PUBLISHED_GAP = 0.03
TRAFFIC_MAX = 0.5
TIME_MAX = 0.5
COLUMNS = ("method", "α", "+FT ties with the strongest baseline or beats it",
           f"as published within {PUBLISHED_GAP:g} of +FT", "budget violations 0",
           f"training traffic over the run ≤ {TRAFFIC_MAX:g}× the strongest baseline's",
           f"time to its accuracy ≤ {TIME_MAX:g}× its own (heavy-tailed)")


def mark(met: bool | None, figure: str) -> str:
    """``✓ figure`` / ``✗ figure``; ``—`` where the target cannot be measured."""
    return "—" if met is None else ("✓ " if met else "✗ ") + figure


def target_cells(results: BenchResults, ft: GroupRow, published: GroupRow | None) -> list[str]:
    """The five targets of one method at one α (``ft``: its fine-tuned row, or its only
    one; ``published``: its row as published, if it has one)."""
    best = best_of(results, ft)
    if best is None:
        return ["—"] * 5
    d = paired_against(results, ft, best)
    accuracy = mark(None if d is None else d.meets_target,
                    "" if d is None else d.summary)
    gap = None if published is None else ft.acc_mean - published.acc_mean
    traffic = traffic_ratio(ft, best)
    plain, heavy = (time_figures(results, ft, heavy_tailed=h) for h in (False, True))
    reached = plain.to_target
    return [
        accuracy,
        mark(None if gap is None else gap <= PUBLISHED_GAP, "" if gap is None else f"{gap:.4f}"),
        mark(None if ft.budget_violations is None else ft.budget_violations == 0,
             f"{ft.budget_violations or 0:g}"),
        mark(None if traffic is None else traffic <= TRAFFIC_MAX,
             "" if traffic is None else f"{traffic:.3f}×"),
        mark(None if plain.seconds is None or plain.seeds == 0
             else reached is not None and reached <= TIME_MAX,
             f"{time_cell(plain)} ({time_cell(heavy)})"),
    ]


def render_targets(results: BenchResults) -> str:
    """One row per method that is not a baseline and α: its five targets."""
    preset = results.preset
    labels = [m for m in preset.methods if m not in preset.variants]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for alpha in preset.alphas:
        for label in labels:
            rows = [g for g in shown_rows(results, [label]) if g.alpha == alpha]
            if not rows or is_baseline(rows[0]):
                continue
            ft = next((g for g in rows if g.method.endswith(FT_SUFFIX)), rows[-1])
            published = next((g for g in rows if published_too(results, g)), None)
            name = row_name(ft, False).removesuffix("+FT")
            lines.append("| " + " | ".join([name, f"{alpha:g}",
                                            *target_cells(results, ft, published)]) + " |")
    return ("\n".join(lines) + "\n" if len(lines) > 2 else "No method to compare.\n") \
        + unfinished_note(results, labels)

