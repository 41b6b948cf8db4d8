"""The ``shift`` block of the results page: what a preset's shift of the clients' inputs
(feature skew) costs each method, against the preset it shifts, paired by seed (pure).

A preset that names ``shifts: <other preset>`` runs the other's setting with every client's
inputs transformed (``dataset.feature_skew``), on the same seeds: the same label partitions,
splits and initial models, so each seed's accuracy with the shift pairs with its accuracy
without. Per figure the block gives both, the difference with its 95 % interval, and, for a
method that is not a baseline, its gap to the strongest baseline without and with the shift
(whether the per-client architecture paid more where the clients' inputs differ) and its
difference minus FedAvg+FT's, paired by seed (the interaction: whether the shift cost it less
than the one shared model, tested, not read off two separate intervals). Every figure
of a row is over the seeds both presets ran, so that the columns compare like with like when
one preset has more seeds than the other.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from pfednas.report.bench_results import BenchResults
from pfednas.report.page import (
    best_of,
    key_of,
    on_seeds,
    paired_against,
    published_too,
    row_name,
    shown_rows,
    unfinished_note,
)
from pfednas.report.paired import paired_difference, signed
from pfednas.report.table import FT_SUFFIX, REFERENCE, GroupRow, is_baseline


def _mean(accs: Mapping[int, float]) -> str:
    return f"{sum(accs.values()) / len(accs):.4f}" if accs else "—"


def _gap(results: BenchResults, g: GroupRow, seeds: Collection[int]) -> str:
    d = paired_against(results, g, best_of(results, g), seeds)
    return "—" if d is None else signed(d.mean)


def shift_of(with_: Mapping[int, float], without: Mapping[int, float]) -> dict[int, float]:
    """Each seed's accuracy with the shift minus without (the seeds both have)."""
    return {s: with_[s] - without[s] for s in set(with_) & set(without)}


def _interaction(shifted: BenchResults, plain: BenchResults, g: GroupRow,
                 with_: Mapping[int, float], without: Mapping[int, float]) -> str:
    """The figure's shift minus FedAvg+FT's shift, paired by seed (the interaction: whether
    the shift cost this method less than the one shared model), with its 95 % interval."""
    def reference(results: BenchResults) -> Mapping[int, float] | None:
        # FedAvg+FT of the same α, whatever space the figure's method searches
        return next((accs for key, accs in results.by_seed.items()
                     if (key[1], key[2]) == (REFERENCE + FT_SUFFIX, g.alpha)), None)

    ref_with, ref_without = reference(shifted), reference(plain)
    if ref_with is None or ref_without is None:
        return "—"
    d = paired_difference(shift_of(with_, without), shift_of(ref_with, ref_without))
    return "—" if d is None else f"{signed(d.mean)} [{signed(d.low)}, {signed(d.high)}] {d.words}"


def render_shift(shifted: BenchResults, plain: BenchResults) -> str:
    """One row per figure the two presets share (method, α, search space): its accuracy
    without and with the shift, the difference paired by seed [95 % CI], and a NAS
    figure's gap to its preset's strongest baseline, without → with; all over the seeds
    both presets ran."""
    labels = [m for m in shifted.preset.methods if m not in shifted.preset.variants]
    # the same (method, α, search space); the dataset's name differs by the shift it names
    before = {(g.method, g.alpha, g.space): g for g in plain.groups}
    lines = [f"| method | α | acc without (`bench={plain.preset.name}`) | acc with the shift "
             f"(`bench={shifted.preset.name}`) | Δ with − without, paired by seed [95 % CI] | "
             f"gap to the strongest baseline, without → with | its Δ − FedAvg+FT's Δ, paired by "
             f"seed [95 % CI] |", "|---|---|---|---|---|---|---|"]
    for g in shown_rows(shifted, labels):
        h = before.get((g.method, g.alpha, g.space))
        if h is None:
            continue
        with_, without = shifted.by_seed[key_of(g)], plain.by_seed[key_of(h)]
        seeds = set(with_) & set(without)
        d = paired_difference(with_, without)
        delta = "—" if d is None else (f"{signed(d.mean)} [{signed(d.low)}, {signed(d.high)}]"
                                       f" ({len(d.seeds)} seeds)")
        gap = ("—" if is_baseline(g)
               else f"{_gap(plain, h, seeds)} → {_gap(shifted, g, seeds)}")
        versus = "—" if is_baseline(g) else _interaction(shifted, plain, g, with_, without)
        lines.append("| " + " | ".join([
            row_name(g, published_too(shifted, g)), f"{g.alpha:g}",
            _mean(on_seeds(seeds, without)), _mean(on_seeds(seeds, with_)), delta, gap,
            versus]) + " |")
    if len(lines) == 2:
        return (f"No figure of `bench={shifted.preset.name}` has finished in both presets.\n"
                + unfinished_note(shifted, labels))
    return "\n".join(lines) + "\n" + unfinished_note(shifted, labels)
