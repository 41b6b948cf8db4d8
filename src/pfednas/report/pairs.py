"""The ``pairs`` block of the results page: every figure of a method that is not a baseline
against every baseline of its α, paired by seed, with the 95 % interval, uncorrected, and
which wins survive a Bonferroni correction (pure).

The verdict compares each method with the strongest baseline only. A paper's own claim is
often against one named baseline (SPIDER's against Ditto, PerFedRLNAS's against FedAvg+FT),
which need not be the strongest here; this block shows every pair, so no comparison a
reader looks for is left out, and none is chosen afterwards.
"""

from __future__ import annotations

from pfednas.report.bench_results import BenchResults
from pfednas.report.page import (
    delta_text,
    holds_corrected,
    paired_against,
    published_too,
    row_name,
    shown_rows,
    unfinished_note,
)
from pfednas.report.paired import holds_after_bonferroni  # noqa: F401 (re-exported for tests)
from pfednas.report.table import is_baseline


def render_pairs(results: BenchResults) -> str:
    """One row per figure of a method that is not a baseline and α, one column per
    baseline: the figure's accuracy minus the baseline's, paired by seed [95 % CI]."""
    labels = [m for m in results.preset.methods if m not in results.preset.variants]
    rows = shown_rows(results, labels)
    baselines = [g for g in rows if is_baseline(g)]
    # a column per baseline figure (Ditto as published and Ditto+FT are two)
    columns = list(dict.fromkeys(g.method for g in baselines))
    names = {g.method: row_name(g, published_too(results, g)) for g in baselines}
    methods = [g for g in rows if not is_baseline(g)]
    if not columns or not methods:
        return "No method to compare.\n" + unfinished_note(results, labels)
    lines = ["| method | α | " + " | ".join(f"Δ against {names[c]}" for c in columns) + " |",
             "|" + "---|" * (2 + len(columns))]
    comparisons = {a: len(columns) * sum(g.alpha == a for g in methods)
                   for a in {g.alpha for g in methods}}
    for g in methods:
        at = {b.method: b for b in baselines if b.alpha == g.alpha}
        lines.append("| " + " | ".join([
            row_name(g, published_too(results, g)), f"{g.alpha:g}",
            *(delta_text(paired_against(results, g, at.get(c)))
              + (" †" if c in at and holds_corrected(results, g, at[c], comparisons[g.alpha])
                 else "")
              for c in columns)]) + " |")
    counts = "; ".join(f"{n} at α {a:g}" for a, n in sorted(comparisons.items()))
    return ("\n".join(lines) + f"\n\nEach interval is one comparison's, uncorrected ({counts}); "
            "† marks a win that still holds after a Bonferroni correction over the "
            "comparisons of its α.\n" + unfinished_note(results, labels))

