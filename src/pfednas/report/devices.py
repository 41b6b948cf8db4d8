"""The ``devices`` block of the results page (``<!-- devices:devices -->``): does per-client
search pay where devices differ by an order of magnitude? (pure)

Methods fall into three families by what each client's model is:

* **one model**: one architecture for every client (FedAvg+FT, Local);
* **sliced models**: a model sized to each device without search (HeteroFL, FedRolex, the
  largest subnet each budget admits);
* **searched models**: the NAS methods (PerFedRLNAS, HAPFNAS).

Per α the block gives each family's strongest fine-tuned figure, the strongest searched one
against the strongest of each other family, and each NAS method against the two controls of
search (``largest_in_budget``, ``random_in_budget``: the same supernet and merge without the
policy), each paired by seed with its 95 % interval; a verdict that is a win, a loss or a tie
is marked where it holds after Holm's correction over the block's comparisons at that α.
Then accuracy by device tier: each method's mean client accuracy per level over the seeds,
what the largest devices gain and what the smallest pay. The answer sentence is rendered from
the same figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pfednas.options.facts import DEVICE_FAMILIES, FACTS
from pfednas.report.bench_results import BenchResults, Key
from pfednas.report.page import delta_text, display, unfinished_note
from pfednas.report.paired import (
    PairedDifference,
    holm,
    p_value,
    paired_difference,
    tie_holds,
)
from pfednas.report.table import FT_SUFFIX


def families() -> dict[str, tuple[str, ...]]:
    """Each family's methods, from the method table (as it is now), in its order."""
    return {family: tuple(m for m, f in FACTS.items() if f.device_family == family)
           for family in DEVICE_FAMILIES}


def controls() -> tuple[str, ...]:
    """The controls of search, from the method table, in its order."""
    return tuple(m for m, f in FACTS.items() if f.control)


@dataclass(frozen=True)
class Comparison:
    """One paired comparison of the block and whether its verdict holds after correction."""

    name: str
    other: str
    difference: PairedDifference | None
    holds: bool = False

    def line(self) -> str:
        mark = ""
        if self.difference is not None and self.difference.verdict in ("wins", "loses", "ties"):
            mark = " (holds after Holm)" if self.holds else " (does not hold after Holm)"
        return f"{self.name} against {self.other}: Δ {delta_text(self.difference)}{mark}"


def corrected(pairs: Sequence[tuple[str, str, Mapping[int, float], Mapping[int, float]]]
              ) -> list[Comparison]:
    """Each (name, other, a, b): ``a − b`` by seed; a win or loss holds where Holm's
    correction over the comparisons rejects it, a tie where its corrected interval stays
    within the margin."""
    differences = [paired_difference(a, b) for _, _, a, b in pairs]
    p_values = [p_value(a, b) for _, _, a, b in pairs]
    tested = [i for i, p in enumerate(p_values) if p is not None]
    rejected = dict(zip(tested, holm([p_values[i] for i in tested]), strict=True))  # type: ignore[misc]
    out = []
    for i, ((name, other, a, b), d) in enumerate(zip(pairs, differences, strict=True)):
        holds = False
        if d is not None and d.verdict in ("wins", "loses"):
            holds = rejected.get(i, False)
        elif d is not None and d.verdict == "ties":
            holds = tie_holds(a, b, len(tested))
        out.append(Comparison(name, other, d, holds))
    return out


# -- the figures of a preset --------------------------------------------------------------------
def fine_tuned(results: BenchResults, label: str, alpha: float) -> Key | None:
    """The key of ``label``'s fine-tuned figure at ``alpha`` (``<label>+ft``, else its only
    figure: Local's)."""
    keys = [k for k in results.by_seed if k[2] == alpha and k[1] in (label + FT_SUFFIX, label)]
    return next((k for k in keys if k[1].endswith(FT_SUFFIX)), keys[0] if keys else None)


def name_of(key: Key) -> str:
    label = key[1].removesuffix(FT_SUFFIX)
    return display(label) + ("+FT" if key[1].endswith(FT_SUFFIX) else "")


def mean(accs: Mapping[int, float]) -> float:
    return float(np.mean(list(accs.values())))


def strongest(results: BenchResults, labels: Sequence[str], alpha: float) -> Key | None:
    """The family's fine-tuned figure of highest mean accuracy at ``alpha``."""
    keys = [k for k in (fine_tuned(results, m, alpha) for m in labels) if k is not None]
    return max(keys, key=lambda k: mean(results.by_seed[k]), default=None)


def tier_means(results: BenchResults, label: str, alpha: float, field: str = "accuracy"
               ) -> dict[str, dict[int, float]]:
    """Tier label → seed → the tier's mean client ``field`` in that seed's run."""
    out: dict[str, dict[int, float]] = {}
    for (method, run_alpha, seed), run in results.runs.items():
        if method != label or run_alpha != alpha:
            continue
        for tier in run.summary.get("accuracy_by_tier") or []:
            if field in tier:
                out.setdefault(str(tier["tier"]), {})[seed] = float(tier[field])
    return out


def tier_order(results: BenchResults) -> list[str]:
    """The tiers, smallest budgets first (as every run's summary lists them)."""
    seen: dict[str, None] = {}
    for run in results.runs.values():
        for tier in run.summary.get("accuracy_by_tier") or []:
            seen.setdefault(str(tier["tier"]), None)
    return list(seen)


# -- rendering ----------------------------------------------------------------------------------
def setting(results: BenchResults, labels: Sequence[str], alpha: float
            ) -> tuple[dict[str, Key | None], list[Comparison]]:
    """At ``alpha``: each family's strongest fine-tuned figure, and the block's comparisons
    (the strongest searched against the strongest sliced and the strongest one model, then
    each NAS method against each control), corrected together."""
    members_of = families()
    best = {family: strongest(results, [m for m in members if m in labels], alpha)
            for family, members in members_of.items()}
    pairs = []
    searched = best["searched models"]
    for family in ("sliced models", "one model"):
        other = best[family]
        if searched is not None and other is not None:
            pairs.append((f"the strongest searched ({name_of(searched)})",
                          f"the strongest of {family} ({name_of(other)})",
                          results.by_seed[searched], results.by_seed[other]))
    for method in (m for m in members_of["searched models"] if m in labels):
        mine = fine_tuned(results, method, alpha)
        for control in (c for c in controls() if c in labels):
            theirs = fine_tuned(results, control, alpha)
            if mine is not None and theirs is not None:
                pairs.append((name_of(mine), name_of(theirs), results.by_seed[mine],
                              results.by_seed[theirs]))
    return best, corrected(pairs)


def render_devices(results: BenchResults) -> str:
    labels = [m for m in results.preset.methods if m not in results.preset.variants]
    alphas = sorted({k[2] for k in results.by_seed})
    lines: list[str] = []
    for alpha in alphas:
        best, comparisons = setting(results, labels, alpha)
        lines.append(f"**α {alpha:g}.** Strongest of each family (fine-tuned): " + "; ".join(
            f"{family}: {name_of(k)} {mean(results.by_seed[k]):.4f}"
            for family, k in best.items() if k is not None) + ".")
        lines += [f"- {c.line()}" for c in comparisons]
        if comparisons:
            lines.append(f"  (each interval one comparison's; Holm's correction over these "
                         f"{len(comparisons)} at α {alpha:g})")
        lines.append("")
        lines += tier_table(results, labels, alpha)
        sentence = answer(results, best, comparisons[:2], alpha)
        if sentence:
            lines += ["", sentence]
        lines.append("")
    body = "\n".join(lines).rstrip("\n") + "\n"
    return body + unfinished_note(results, labels)


def render_answer(results: BenchResults) -> str:
    """The README's block (``<!-- answer:devices -->``): the answer sentence of each α and
    what is still running."""
    labels = [m for m in results.preset.methods if m not in results.preset.variants]
    sentences = []
    for alpha in sorted({k[2] for k in results.by_seed}):
        best, comparisons = setting(results, labels, alpha)
        sentence = answer(results, best, comparisons[:2], alpha)
        if sentence:
            sentences.append(f"- {sentence}")
    return "\n".join(sentences) + "\n" + unfinished_note(results, labels)


def tier_table(results: BenchResults, labels: Sequence[str], alpha: float) -> list[str]:
    """Each method's fine-tuned accuracy by device tier (mean over seeds of the tier's mean),
    smallest devices first, and its mean model size there."""
    tiers = tier_order(results)
    if not tiers:
        return []
    out = ["| method (fine-tuned) | " + " | ".join(tiers) + " | largest − smallest |",
           "|" + "---|" * (len(tiers) + 2)]
    for label in labels:
        by_tier = tier_means(results, label, alpha)
        params = tier_means(results, label, alpha, "params")
        if not by_tier:
            continue
        cells = []
        for tier in tiers:
            if tier in by_tier:
                size = f" ({mean(params[tier]) / 1000:.1f}k)" if tier in params else ""
                cells.append(f"{mean(by_tier[tier]):.3f}{size}")
            else:
                cells.append("—")
        gap = (f"{mean(by_tier[tiers[-1]]) - mean(by_tier[tiers[0]]):+.3f}"
               if tiers[0] in by_tier and tiers[-1] in by_tier else "—")
        out.append(f"| {display(label)} | " + " | ".join(cells) + f" | {gap} |")
    return [*out, "", "Each cell: the tier's mean client accuracy after fine-tuning, mean over "
            "the seeds (mean parameters of its clients' models, thousands)."]


VERBS = {"wins": "beats", "loses": "loses to", "ties": "ties with",
         "inconclusive": "is inconclusive against"}


def answer(results: BenchResults, best: Mapping[str, Key | None],
           against: Sequence[Comparison], alpha: float) -> str:
    """The block's one sentence: the strongest searched figure against the strongest sliced
    one and the strongest one model, by how much, and on the smallest and largest tier."""
    if len(against) < 2 or any(c.difference is None for c in against):
        return ""
    sliced, one = against[0], against[1]
    searched = best["searched models"]
    other = best["sliced models"]
    tiers = tier_order(results)
    tier_text = ""
    if searched is not None and other is not None and tiers:
        mine = tier_means(results, searched[1].removesuffix(FT_SUFFIX), alpha)
        theirs = tier_means(results, other[1].removesuffix(FT_SUFFIX), alpha)
        parts = [f"{where} tier ({tier}) {mean(mine[tier]) - mean(theirs[tier]):+.3f}"
                 for where, tier in (("smallest", tiers[0]), ("largest", tiers[-1]))
                 if tier in mine and tier in theirs]
        tier_text = "; by tier against it, " + " and ".join(parts) if parts else ""
    def clause(c: Comparison, key: Key | None, what: str) -> str:
        assert c.difference is not None
        tested = c.difference.verdict in ("wins", "loses", "ties")
        flag = ", not after Holm's correction" if tested and not c.holds else ""
        return (f"{VERBS[c.difference.verdict]} {what} ({name_of(key) if key else '—'}, "
                f"{c.difference.mean:+.4f}{flag})")

    return (f"**Answer at α {alpha:g}:** where devices differ 16× in width, per-client search "
            f"({name_of(searched) if searched else '—'}) "
            f"{clause(sliced, other, 'per-client slicing')} and "
            f"{clause(one, best['one model'], 'one model')}{tier_text}.")
