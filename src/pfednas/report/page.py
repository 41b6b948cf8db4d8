"""The results page's blocks, rendered from a preset's cells (pure): its accuracy table and
its cost and time table (``table``), its variants' rows (``variants``), one verdict line per
figure of a method that is not a baseline (``verdict``). :mod:`pfednas.report.document`
finds the blocks in a Markdown file and fills them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from pfednas.options.facts import FACTS
from pfednas.report.bench_results import BenchResults, Key
from pfednas.report.collect import Run
from pfednas.report.paired import (
    PairedDifference,
    holds_after_bonferroni,
    holm,
    p_value,
    paired_difference,
    signed,
    tie_holds,
)
from pfednas.report.table import (
    COMPUTE_MARGIN,
    FT_SUFFIX,
    REFERENCE,
    GroupRow,
    best_baseline,
    group_key,
    is_baseline,
    reported_groups,
)
from pfednas.report.time_table import (
    TimeFigures,
    row_figures,
    seconds_cell,
    time_cell,
    within_cell,
)


def display(method: str) -> str:
    """How the page names a registry method (its own name where the table has none)."""
    facts = FACTS.get(method)
    return facts.display if facts is not None else method


# -- rendering (pure) -----------------------------------------------------------------------------
def label_of(g: GroupRow) -> str:
    """The bench method (registry method or variant) a row belongs to."""
    return g.method.removesuffix(FT_SUFFIX)


def row_name(g: GroupRow, published_too: bool) -> str:
    """``PerFedRLNAS+FT``, ``PerFedRLNAS (as published)``, ``FedAvg+FT · `fedavg_fth```, ..."""
    label = label_of(g)
    base = g.base_method or label
    name = display(base)
    facts = FACTS.get(base)
    if facts is not None and facts.own_ft:
        pass
    elif g.method.endswith(FT_SUFFIX) or (facts is not None and facts.ft_named
                                          and g.finetune_epochs > 0):
        name += "+FT"
    elif published_too:
        name += " (as published)"
    return name if label == base else f"{name} · `{label}`"


def key_of(g: GroupRow) -> Key:
    return group_key(g)


def on_seeds(seeds: Collection[int], accs: Mapping[int, float]) -> dict[int, float]:
    """``accs`` on ``seeds`` only."""
    return {s: a for s, a in accs.items() if s in seeds}


def paired_against(results: BenchResults, g: GroupRow, other: GroupRow | None,
                   seeds: Collection[int] | None = None) -> PairedDifference | None:
    """``g``'s accuracy minus ``other``'s, paired by seed, on ``seeds`` where given (None: no
    ``other``, or fewer than two common seeds)."""
    if other is None:
        return None
    mine, theirs = results.by_seed[key_of(g)], results.by_seed[key_of(other)]
    if seeds is not None:
        mine, theirs = on_seeds(seeds, mine), on_seeds(seeds, theirs)
    return paired_difference(mine, theirs)


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def delta_text(d: PairedDifference | None) -> str:
    """``−0.0123 [−0.0200, −0.0046] loses``; ``—`` without two common seeds."""
    if d is None:
        return "—"
    return f"{signed(d.mean)} [{signed(d.low)}, {signed(d.high)}] {d.words}"


def compared_rows(results: BenchResults, alpha: float) -> list[GroupRow]:
    """The rows compared with the strongest baseline at ``alpha`` (those that are not a
    baseline's): the comparisons a correction for multiple comparisons counts."""
    labels = [m for m in results.preset.methods if m not in results.preset.variants]
    return [g for g in shown_rows(results, labels) if g.alpha == alpha and not is_baseline(g)]


def holds_corrected(results: BenchResults, g: GroupRow, other: GroupRow,
                    comparisons: int) -> bool:
    """Whether ``g`` still beats ``other`` after a Bonferroni correction over
    ``comparisons``, paired by seed."""
    return holds_after_bonferroni(results.by_seed[key_of(g)], results.by_seed[key_of(other)],
                                  comparisons)


def corrected_note(results: BenchResults, g: GroupRow, best: GroupRow) -> str:
    """Whether ``g``'s verdict against ``best`` holds after Holm's correction over the
    comparisons of its α (every row compared with the strongest baseline there): a win or a
    loss where its paired t-test survives Holm's step, a tie where its interval widened for
    them (Bonferroni) stays within the margin; "" where the verdict is inconclusive."""
    d = paired_against(results, g, best)
    if d is None or d.verdict == "inconclusive":
        return ""
    rows = compared_rows(results, g.alpha)
    mine, theirs = results.by_seed[key_of(g)], results.by_seed[key_of(best)]
    if d.verdict == "ties":
        holds = tie_holds(mine, theirs, len(rows))
    else:
        tested = [(h, p_value(results.by_seed[key_of(h)], theirs)) for h in rows]
        kept = [(h, p) for h, p in tested if p is not None]
        rejected = holm([p for _, p in kept])
        holds = any(h is g and r for (h, _), r in zip(kept, rejected, strict=True))
    return (f" (uncorrected; {'holds' if holds else 'does not hold'} after Holm's correction "
            f"over the {len(rows)} comparisons at α {g.alpha:g})")


def _params(g: GroupRow) -> str:
    if g.params_min == g.params_max:
        return f"{g.params_min:,}"
    return f"{g.params_mean:,.0f} ({g.params_min:,}–{g.params_max:,})"


def _memory(g: GroupRow) -> str:
    """Training memory in MiB, mean (min–max) over the clients of every seed."""
    if g.memory_mean is None or g.memory_min is None or g.memory_max is None:
        return "—"
    mib = 2.0 ** 20
    if g.memory_min == g.memory_max:
        return f"{g.memory_min / mib:.1f}"
    return f"{g.memory_mean / mib:.1f} ({g.memory_min / mib:.1f}–{g.memory_max / mib:.1f})"


def _compute(g: GroupRow) -> str:
    ratio = g.compute_ratio_fedavg_ft
    if ratio is None:
        return "—"
    return f"{ratio:.2f}" + (" !" if ratio > COMPUTE_MARGIN else "")


COLUMNS = ("method", "α", "acc (mean ± std over seeds)", "worst-10 %", "err ÷ FedAvg+FT",
           "err ÷ best baseline", "Δ acc − best baseline, paired by seed [95 % CI]")
COST_COLUMNS = ("method", "α", "client compute ÷ FedAvg(+FT)", "client MACs ÷ FedAvg(+FT)",
                "forward-only MACs ÷ trained",
                "training traffic (all messages) ÷ best baseline", "params mean (min–max)",
                "training memory MiB mean (min–max)", "budget used (cost ÷ budget)", "simulated s",
                "server s (its search)",
                "time to best baseline's acc ÷ its time", "acc within FedAvg+FT's time",
                "wall s (load)")


def shown_rows(results: BenchResults, labels: Sequence[str]) -> list[GroupRow]:
    """The reported rows of ``labels``: α, then ``labels``' order, a figure as published
    before its +FT; a figure without fine-tuning only for a method published without it."""
    rank = {label: i for i, label in enumerate(labels)}
    return sorted((g for g in reported_groups(results.groups) if label_of(g) in rank),
                  key=lambda g: (g.alpha, rank[label_of(g)], g.method.endswith(FT_SUFFIX)))


def best_of(results: BenchResults, g: GroupRow) -> GroupRow | None:
    return best_baseline([h for h in results.groups if (h.dataset, h.alpha) == (g.dataset,
                                                                                g.alpha)])


def published_too(results: BenchResults, g: GroupRow) -> bool:
    """Whether the row is a figure as published whose runs also report it fine-tuned."""
    return any(h.method == g.method + FT_SUFFIX and h.alpha == g.alpha for h in results.groups)


def table_rows(results: BenchResults, labels: Sequence[str]) -> list[tuple[GroupRow, str]]:
    """The accuracy table's rows of ``labels`` (:func:`shown_rows`), each with its line."""
    out = []
    for g in shown_rows(results, labels):
        best = best_of(results, g)
        accuracy = f"{g.acc_mean:.4f} ± " + ("—" if g.acc_std_seeds is None
                                             else f"{g.acc_std_seeds:.4f}")
        if g is best:
            accuracy, delta = f"**{accuracy}**", "best baseline"
        else:
            delta = delta_text(paired_against(results, g, best))
        out.append((g, "| " + " | ".join([
            row_name(g, published_too(results, g)), f"{g.alpha:g}", accuracy,
            f"{g.acc_p10:.3f}", _ratio(g.err_ratio_fedavg_ft), _ratio(g.err_ratio_best_baseline),
            delta]) + " |"))
    return out


def time_figures(results: BenchResults, g: GroupRow, *, heavy_tailed: bool) -> TimeFigures:
    """The row's time axis against its α's strongest baseline and FedAvg+FT, seed by seed."""
    best = best_of(results, g)
    runs = [results.runs[(label_of(g), g.alpha, s)] for s in g.seeds
            if (label_of(g), g.alpha, s) in results.runs]
    if len(runs) != len(g.seeds):
        return TimeFigures(None, None, 0, len(g.seeds), None)

    def of(label: str | None) -> dict[int, Run]:
        return {s: results.runs[(label, g.alpha, s)] for s in g.seeds
                if label is not None and (label, g.alpha, s) in results.runs}

    return row_figures(runs, of(None if best is None else label_of(best)), of(REFERENCE),
                       published=published_too(results, g), heavy_tailed=heavy_tailed)


def traffic_ratio(g: GroupRow, best: GroupRow | None, *, training: bool = True
                  ) -> float | None:
    """The row's training traffic over the whole run ÷ the strongest baseline's (``training``
    false: every message's, evaluations' included; None: no baseline).

    The whole run, not bytes per participation: a round that reaches every client (a
    method's own phase) counts at what it moves, not diluted by its extra participations.
    Training messages alone by default: a method that evaluates every client with the whole
    model (FedAvg+FT) is not charged for its evaluations in a training comparison."""
    mine, theirs = ((g.bytes_train, best.bytes_train) if training and best is not None
                    else (g.bytes_total, best.bytes_total if best is not None else 0.0))
    if best is None or theirs <= 0:
        return None
    return mine / theirs


def _traffic(g: GroupRow, best: GroupRow | None) -> str:
    """``0.83× (0.92×)``: training traffic ÷ the baseline's (every message's)."""
    ratio, whole = traffic_ratio(g, best), traffic_ratio(g, best, training=False)
    if ratio is None:
        return "—"
    return f"{ratio:.2f}×" + ("" if whole is None else f" ({whole:.2f}×)")


def _forward(g: GroupRow) -> str:
    """The clients' forward-only MACs besides training (a search's measurements) ÷ the MACs
    they trained (``—``: runs from before the count, or nothing trained)."""
    if g.forward_macs is None or g.client_macs <= 0:
        return "—"
    return f"{g.forward_macs / g.client_macs:.2f}"


def _server(g: GroupRow) -> str:
    """The server's own compute over the run, seconds on the machine that ran it (HAPFNAS's
    distillation, predictors and evolution; every method's aggregation): beside the
    simulated time, which counts the clients' alone."""
    return "—" if g.server_seconds is None else f"{g.server_seconds:.1f}"


def cost_rows(results: BenchResults, labels: Sequence[str]) -> list[str]:
    """The cost and time table's lines: compute (sample-passes and MACs, fine-tuning
    included), traffic over the run (training messages, and all), size, the share of each
    client's budget its model uses (methods with budgets), the simulated time axis on the
    recorded devices (and, in brackets, the heavy-tailed spread), the wall time."""
    out = []
    for g in shown_rows(results, labels):
        plain, heavy = (time_figures(results, g, heavy_tailed=h) for h in (False, True))
        wall = f"{g.wall_seconds:.0f}" + ("" if g.load_mean is None else f" ({g.load_mean:.1f})") \
            + ("" if g.at_once == 1 else f", {g.at_once} cells at once")
        out.append("| " + " | ".join([
            row_name(g, published_too(results, g)), f"{g.alpha:g}", _compute(g),
            _ratio(g.macs_ratio_fedavg_ft), _forward(g), _traffic(g, best_of(results, g)),
            _params(g),
            _memory(g), _ratio(g.budget_used),
            f"{seconds_cell(plain)} ({seconds_cell(heavy)})", _server(g),
            f"{time_cell(plain)} ({time_cell(heavy)})",
            f"{within_cell(plain)} ({within_cell(heavy)})", wall]) + " |")
    return out


def verdict_counts(results: BenchResults, rows: Sequence[GroupRow]) -> str:
    """``α 0.1: 3 lose, 2 inconclusive, 0 tie, 0 win``: the rows that are not a baseline's, by
    the interval of their paired difference to the best baseline (uncorrected)."""
    parts = []
    for alpha in sorted({g.alpha for g in rows}):
        cell = [h for h in results.groups if h.alpha == alpha]
        best = best_baseline(cell)
        counts = {"loses": 0, "inconclusive": 0, "ties": 0, "wins": 0}
        for g in rows:
            if g.alpha != alpha or best is None or is_baseline(g):
                continue
            d = paired_against(results, g, best)
            if d is not None:
                counts[d.verdict] += 1
        parts.append(f"α {alpha:g}: {counts['loses']} lose, {counts['inconclusive']} "
                     f"inconclusive, {counts['ties']} tie, {counts['wins']} win")
    return "; ".join(parts)


def render_rows(results: BenchResults, labels: Sequence[str]) -> str:
    rows = table_rows(results, labels)
    bests = []
    for alpha in results.preset.alphas:
        best = best_baseline([g for g in results.groups if g.alpha == alpha])
        if best is not None:
            bests.append(f"α {alpha:g} {row_name(best, False)}")
    footer = (f"Best baseline (variants included): {'; '.join(bests)}. The rows of methods "
              f"that are not baselines, against it (each interval uncorrected): "
              f"{verdict_counts(results, [g for g, _ in rows])}." if bests
              else "No baseline in this preset.")
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS),
             *(line for _, line in rows), "", footer,
             "", "| " + " | ".join(COST_COLUMNS) + " |", "|" + "---|" * len(COST_COLUMNS),
             *cost_rows(results, labels)]
    return "\n".join(lines) + "\n"


def unfinished_note(results: BenchResults, labels: Sequence[str]) -> str:
    """``Not in these figures yet, ...: FedNAS (2 of 6 cells); ...`` for the methods of
    ``labels`` whose cells have not all finished, ``Cells not all run yet, ...: α 0.1: 24 of
    40 cells, shown on seeds 0, 1, 2`` for the α not all run, or ``""``."""
    alphas = "; ".join(f"α {alpha:g}: {done} of {total} cells, "
                       + (f"shown on seeds {', '.join(map(str, shown))}" if shown else
                          "not shown")
                       for alpha, done, total, shown in results.pending_alphas)
    if alphas:
        return f"\nCells not all run yet, these figures are interim: {alphas}.\n"
    names = ", ".join(f"{display(m)} ({done} of {total} cells)"
                      for m, done, total in results.unfinished if m in labels)
    if not names:
        return ""
    return (f"\nNot in these figures yet, their cells not all run: {names}; the best "
            f"baseline is the strongest of those shown.\n")


def render_table(results: BenchResults) -> str:
    """The preset's registry methods (not its variants)."""
    preset = results.preset
    seeds = ", ".join(map(str, preset.seeds))
    so_far = "; ".join(f"α {alpha:g}: {', '.join(map(str, shown))} so far"
                       for alpha, _, _, shown in results.pending_alphas if shown)
    seeds += f" ({so_far})" if so_far else ""
    budgets = "; ".join(sorted({g.budget for g in results.groups}))
    labels = [m for m in preset.methods if m not in preset.variants]
    return (f"Seeds {seeds}; {budgets}.\n\n" + render_rows(results, labels)
            + unfinished_note(results, labels))


def render_variants(results: BenchResults) -> str:
    """What each variant of the preset changes, then its rows."""
    preset = results.preset
    labels = [m for m in preset.methods if m in preset.variants]
    if not labels:
        return "No variants.\n"
    legend = []
    for label in labels:
        method, overrides = preset.variants[label]
        legend.append(f"- `{label}`: {display(method)} with "
                      + ", ".join(f"`{o}`" for o in overrides))
    return ("\n".join(legend) + "\n\n" + render_rows(results, labels)
            + unfinished_note(results, labels))


def render_verdict(results: BenchResults) -> str:
    """One line per figure of a method that is not a baseline, per α: its paired difference
    to the strongest baseline with the 95 % interval, and what it costs against it."""
    labels = [m for m in results.preset.methods if m not in results.preset.variants]
    lines = []
    for g in shown_rows(results, labels):
        best = best_of(results, g)
        if is_baseline(g) or best is None:
            continue
        d = paired_against(results, g, best)
        plain, heavy = (time_figures(results, g, heavy_tailed=h) for h in (False, True))
        violations = "—" if g.budget_violations is None else f"{g.budget_violations:g}"
        note = corrected_note(results, g, best)
        lines.append(
            f"- **{row_name(g, published_too(results, g))}**, α {g.alpha:g}, against "
            f"{row_name(best, False)}: Δ {delta_text(d)}{note}; training traffic (all "
            f"messages) {_traffic(g, best)}, "
            f"params {g.params_mean / best.params_mean:.2f}×; time to its accuracy "
            f"{time_cell(plain)} (heavy-tailed devices {time_cell(heavy)}); budget "
            f"violations {violations}.")
    return ("\n".join(lines) + "\n" if lines else "No method to compare.\n") \
        + unfinished_note(results, labels)
