"""The benchmark table: per-run numbers, their aggregation over seeds, markdown and CSV.

Values a run's ``summary.json`` holds are taken from it unchanged (personalized
accuracy mean / std / 10th percentile, wall time, per-client parameters);
what it does not hold is derived from ``metrics.jsonl`` (traffic per client and
round, distinct architectures of the final evaluation).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from pfednas.options.facts import FACTS
from pfednas.report.collect import SIMULATED, Run, budget_of
from pfednas.report.timeaxis import run_seconds


@dataclass(frozen=True)
class RunRow:
    """One run's numbers (one bench cell)."""

    method: str
    dataset: str
    alpha: float
    space: str
    seed: int
    path: str
    budget: str
    acc_mean: float
    acc_std: float
    acc_p10: float
    wall_seconds: float
    up_per_client_round: float
    down_per_client_round: float
    accuracies: tuple[float, ...]
    params: tuple[int, ...]
    distinct_archs: int | None
    finetune_epochs: int = 0
    sample_passes: int = 0
    budget_violations: int | None = None
    load_mean: float | None = None   # the machine's mean 1-minute load while it ran (bench)
    at_once: int = 1                 # how many bench cells ran side by side with it
    commit: str = ""                 # the code it ran (bench)
    base_method: str = ""            # the registry method a bench variant runs ("": ``method``)
    # simulated time on the run's devices and on the heavy-tailed spread (report.timeaxis;
    # None: records from before the time axis)
    simulated_seconds: float | None = None
    simulated_seconds_heavy: float | None = None
    bytes_total: float = 0.0         # every message's arrays over the whole run, up and down
    bytes_train: float = 0.0         # the training messages' (accepted replies and their sends)
    server_seconds: float | None = None  # the server's own compute (its search), this CPU
    client_macs: float = 0.0         # per client, what it trained (its own fine-tuning too)
    # per client, its forward-only passes besides training (a search's measurements; None:
    # a run from before they were counted)
    forward_macs: float | None = None
    budget_used: float | None = None  # mean over clients of its model's cost ÷ its budget
    memory: tuple[int, ...] = ()  # each client's model's training memory, bytes (): not recorded
    ran_as: str = SIMULATED          # simulated, flwr run or deployed (Run.ran_as)
    options: tuple[tuple[str, str], ...] = ()  # Run.options: what else sets it apart
    variant: str = ""                # Run.variant: what tells it from others of its row
    reads_alpha: bool = True         # whether α dealt its data (a Dirichlet partition)


@dataclass(frozen=True)
class GroupRow:
    """One table row: the runs that differ only in their seed (:func:`group_key`)."""

    method: str
    dataset: str
    alpha: float
    space: str
    seeds: tuple[int, ...]
    budget: str
    acc_mean: float            # mean over seeds of the mean over clients
    acc_std_clients: float     # mean over seeds of the std over clients
    acc_std_seeds: float | None  # sample std over seeds of the mean (None for one seed)
    acc_p10: float             # mean over seeds of the 10th-percentile client accuracy
    wall_seconds: float
    up_per_client_round: float
    down_per_client_round: float
    params_mean: float
    params_min: int
    params_max: int
    distinct_archs: float | None
    finetune_epochs: int = 0
    sample_passes: float = 0.0      # client sample-passes (forward + backward), mean over seeds
    budget_violations: float | None = None
    err_ratio_fedavg_ft: float | None = None      # NAS rows: error ÷ FedAvg+FT's (same cell)
    err_ratio_best_baseline: float | None = None  # NAS rows: error ÷ the best baseline's
    compute_ratio_fedavg_ft: float | None = None  # client sample-passes ÷ FedAvg+FT's
    load_mean: float | None = None  # mean over seeds of each run's mean 1-minute load
    at_once: int = 1                # the most bench cells any of its runs ran beside (itself too)
    base_method: str = ""           # the registry method a bench variant runs ("": ``method``)
    simulated_seconds: float | None = None        # mean over seeds (None: a seed lacks it)
    simulated_seconds_heavy: float | None = None  # the same on the heavy-tailed spread
    bytes_total: float = 0.0  # mean over seeds of the run's bytes, up and down, all messages
    bytes_train: float = 0.0  # the same, of its training messages only (evaluation's left out)
    server_seconds: float | None = None  # mean over seeds of the server's own compute seconds
    client_macs: float = 0.0  # mean over seeds of the MACs a client trained (its fine-tuning too)
    macs_ratio_fedavg_ft: float | None = None  # client_macs ÷ FedAvg+FT's
    forward_macs: float | None = None  # mean over seeds (None: a seed's run did not count them)
    budget_used: float | None = None  # mean over seeds of the clients' mean cost ÷ budget
    # the clients' models' training memory, bytes, over every seed's clients (None: a seed's
    # run did not record it)
    memory_mean: float | None = None
    memory_min: int | None = None
    memory_max: int | None = None
    ran_as: str = SIMULATED
    options: tuple[tuple[str, str], ...] = ()
    variant: str = ""
    reads_alpha: bool = True


REFERENCE = "fedavg"
FT_SUFFIX = "+ft"
COMPUTE_MARGIN = 1.25  # client compute above this × FedAvg+FT's is marked


def percentile10(accuracies: Sequence[float]) -> float:
    """The worst-10 % client accuracy: the 10th percentile (as ``summary.json``'s ``p10``)."""
    return float(np.percentile(np.asarray(accuracies, dtype=np.float64), 10))


def distinct_archs(evaluation: Iterable[dict[str, Any]]) -> int | None:
    """How many different architectures the clients were evaluated with (None: no ``arch``)."""
    archs = {str(row["arch"]) for row in evaluation if row.get("arch")}
    return len(archs) if archs else None


def per_client_round(total: float, rounds: Iterable[dict[str, Any]]) -> float:
    """``total`` bytes divided by the client-round participations of ``metrics.jsonl``."""
    slots = sum(max(len(r.get("sampled_clients", [])), len(r.get("train", []))) for r in rounds)
    return total / slots if slots else math.nan


def finetune_epochs_of(config: dict[str, Any]) -> int:
    return int((config.get("method") or {}).get("finetune_epochs") or 0)


def budget_violations(evaluation: Iterable[dict[str, Any]]) -> int | None:
    """Clients whose final architecture is over their budget (None: the method has none)."""
    rows = [r for r in evaluation if "within_budget" in r or "over_budget" in r]
    if not rows:
        return None
    return sum(int(not r["within_budget"]) if "within_budget" in r else int(r["over_budget"])
               for r in rows)


def run_row(run: Run) -> RunRow:
    """The run's row; for a run that fine-tuned a method published without fine-tuning
    (evaluation rows with ``accuracy_no_ft``) this is the ``<method>+ft`` row."""
    return run_rows(run)[-1]


def training_bytes(rounds: Sequence[Mapping[str, Any]]) -> float:
    """The bytes of a run's training messages, down and up: each accepted training reply's
    and what was sent for it (the rows' ``bytes_down``, ``bytes_up``); evaluations, searches'
    measurements and rejected replies are left out."""
    return float(sum(int(row.get("bytes_down", 0)) + int(row.get("bytes_up", 0))
                     for r in rounds for row in r.get("train") or []))


def run_rows(run: Run) -> list[RunRow]:
    """One row per figure the run produced: ``<method>`` and, when it fine-tuned a model
    the paper does not fine-tune, also ``<method>+ft`` (one run, both numbers)."""
    s = run.summary
    clients = s["per_client"]
    final = run.evaluation()
    accs = tuple(float(c["accuracy"]) for c in clients)
    p10 = s.get("personalized_acc_p10")
    passes = int(s.get("client_sample_passes", 0))
    base = RunRow(
        method=run.method, dataset=run.dataset, alpha=run.alpha, space=run.space, seed=run.seed,
        path=str(run.path), budget=budget_of(run.config),
        acc_mean=float(s["personalized_acc_mean"]), acc_std=float(s["personalized_acc_std"]),
        acc_p10=float(p10) if p10 is not None else percentile10(accs),
        wall_seconds=float(s["wall_seconds"]),
        up_per_client_round=per_client_round(s["bytes_up"], run.rounds),
        down_per_client_round=per_client_round(s["bytes_down"], run.rounds),
        accuracies=accs, params=tuple(int(c["num_params"]) for c in clients),
        distinct_archs=distinct_archs(final), finetune_epochs=finetune_epochs_of(run.config),
        sample_passes=passes, budget_violations=budget_violations(final),
        load_mean=_float_or_none(run.cell.get("load_mean")),
        at_once=int(run.cell.get("cells_at_once") or 1),
        commit=str(run.cell.get("commit") or ""), base_method=str(s["method"]),
        simulated_seconds=run_seconds(run), simulated_seconds_heavy=run_seconds(
            run, heavy_tailed=True),
        bytes_total=float(s["bytes_up"]) + float(s["bytes_down"]),
        bytes_train=training_bytes(run.rounds),
        server_seconds=_float_or_none(s.get("server_seconds")),
        client_macs=trained_macs(run.rounds, ("train", "evaluation")) / len(clients),
        forward_macs=(None if s.get("client_forward_macs") is None
                      else float(s["client_forward_macs"]) / len(clients)),
        budget_used=budget_used(clients) if chosen_within_budgets(run.config) else None,
        memory=training_memory(clients), ran_as=run.ran_as, options=run.options,
        variant=run.variant, reads_alpha=run.reads_alpha)
    if "personalized_acc_no_ft_mean" not in s:
        return [base]
    # a run that fine-tuned: its evaluations' passes are fine-tunings; the fine-tuned figure
    # costs its training and its own (the final) fine-tuning, the figure as published its
    # training alone; a fine-tuned evaluation before the last only measured
    published = tuple(float(c["accuracy_no_ft"]) for c in clients)
    tuning = sum(int(row.get("sample_passes", 0)) for r in run.rounds
                 for row in r.get("evaluation") or [])
    own = sum(int(row.get("sample_passes", 0)) for row in final)
    trained = trained_macs(run.rounds, ("train",))
    finetuned = replace(base, method=run.method + FT_SUFFIX, sample_passes=passes - tuning + own,
                        client_macs=(trained + trained_macs([{"evaluation": final}],
                                                            ("evaluation",))) / len(clients))
    as_published = replace(
        base, acc_mean=float(s["personalized_acc_no_ft_mean"]),
        acc_std=float(s["personalized_acc_no_ft_std"]),
        acc_p10=float(s["personalized_acc_no_ft_p10"]), accuracies=published,
        finetune_epochs=0, sample_passes=passes - tuning,
        client_macs=trained / len(clients),
        simulated_seconds=run_seconds(run, published=True),
        simulated_seconds_heavy=run_seconds(run, heavy_tailed=True, published=True))
    return [as_published, finetuned]


def trained_macs(rounds: Iterable[dict[str, Any]], stages: Sequence[str]) -> float:
    """The multiply-accumulates the clients trained (``train_macs``: forward and backward) in
    the records' ``stages``: ``train`` the federated rounds, ``evaluation`` the fine-tunings."""
    return float(sum(float(row.get("train_macs", 0.0)) for r in rounds for stage in stages
                     for row in r.get(stage) or []))


def chosen_within_budgets(config: dict[str, Any]) -> bool:
    """Whether the run's models were chosen against the clients' budgets: every run but a
    fixed-architecture baseline's that names its architecture (``method.arch=max``, an
    explicit one) instead of ``fits_all``, whose share of a budget it never read is not a
    figure of its."""
    arch = (config.get("method") or {}).get("arch")
    return arch is None or arch == "fits_all"


def budget_used(per_client: Sequence[dict[str, Any]]) -> float | None:
    """The mean over clients of the cost of its model ÷ its budget (None: no budgets)."""
    shares = [float(r["cost"]) / float(r["budget"]) for r in per_client
              if r.get("budget") and r.get("cost") is not None]
    return float(np.mean(shares)) if shares else None


def training_memory(per_client: Sequence[dict[str, Any]]) -> tuple[int, ...]:
    """Each client's model's training memory (the cost model's ``memory_bytes``); () where a
    client's row does not record it."""
    if not per_client or any("memory_bytes" not in r for r in per_client):
        return ()
    return tuple(int(r["memory_bytes"]) for r in per_client)


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


# (dataset, row's method, α, search space, federation size, how it ran, its other options)
Key = tuple[str, str, float, str, str, str, tuple[tuple[str, str], ...]]


def group_key(row: RunRow | GroupRow) -> Key:
    """A row's key: runs pool where they differ in nothing but their seed."""
    return (row.dataset, row.method, row.alpha, row.space, row.budget, row.ran_as, row.options)


def section_of(row: RunRow | GroupRow) -> tuple[str, str, str]:
    """The table a row is in, its rows compared with each other: (dataset, federation size,
    how it ran)."""
    return (row.dataset, row.budget, row.ran_as)


def aggregate(rows: Iterable[RunRow], method_order: Sequence[str] = ()) -> list[GroupRow]:
    """One :class:`GroupRow` per :func:`group_key`, seeds pooled.

    Sorted by table (:func:`section_of`), α, then ``method_order`` (methods not in it last,
    by name).
    """
    groups: dict[Key, list[RunRow]] = {}
    for row in rows:
        groups.setdefault(group_key(row), []).append(row)
    rank = {m: i for i, m in enumerate(method_order)}
    keys = sorted(groups, key=lambda k: (k[0], k[4], k[5], k[2],
                                         rank.get(k[1].removesuffix(FT_SUFFIX), len(rank)),
                                         k[1], k[3], k[6]))
    return with_ratios([_group(sorted(groups[k], key=lambda r: r.seed)) for k in keys])


def with_ratios(groups: list[GroupRow]) -> list[GroupRow]:
    """Each NAS row's error ÷ FedAvg+FT's and ÷ the best baseline's, and every row's client
    compute ÷ FedAvg+FT's, within the same table (:func:`section_of`) and α. Like for
    like, a figure as published (the same runs report it fine-tuned too) has its compute ÷
    FedAvg's as published, its training without the fine-tunings, where FedAvg's runs
    report that pair.

    A bench variant of a baseline (e.g. ``fedavg_fth``: FedAvg+FT fine-tuning its head only)
    is a baseline too: the best baseline is the strongest of them all, variants included,
    so a baseline at full strength is the one the NAS rows are measured against. FedAvg+FT's
    ratio stays against ``fedavg`` itself (the papers' FedAvg+FT)."""
    out = []
    for g in groups:
        cell = [h for h in groups
                if (section_of(h), h.alpha) == (section_of(g), g.alpha)]
        # FedAvg+FT: the fine-tuned row of a run that reports the pair, else (cells from
        # before every fine-tuning method reported it) the run's one row
        reference = next((h for h in cell if h.method == REFERENCE + FT_SUFFIX),
                         next((h for h in cell if h.method == REFERENCE), None))
        best = best_baseline(cell)
        nas = not is_baseline(g)
        spent = reference
        if reference is not None and reference.method.endswith(FT_SUFFIX) \
                and any(h.method == g.method + FT_SUFFIX for h in cell):
            spent = next((h for h in cell if h.method == REFERENCE), reference)
        out.append(replace(
            g,
            err_ratio_fedavg_ft=_ratio(1 - g.acc_mean, _error(reference)) if nas else None,
            err_ratio_best_baseline=_ratio(1 - g.acc_mean, _error(best)) if nas else None,
            compute_ratio_fedavg_ft=_ratio(g.sample_passes,
                                           spent.sample_passes if spent else None),
            macs_ratio_fedavg_ft=_ratio(g.client_macs, spent.client_macs if spent else None)))
    return out


def is_baseline(g: GroupRow) -> bool:
    """A baseline's row, or a bench variant's of a baseline."""
    facts = FACTS.get(g.base_method or g.method)
    return facts is not None and facts.baseline


def shadowed(g: GroupRow, groups: Sequence[GroupRow]) -> bool:
    """A figure without fine-tuning where the same runs report the fine-tuned one, of a
    method whose paper publishes the fine-tuned one (not ``published_without_ft``): not a
    reported row."""
    facts = FACTS.get(g.base_method or g.method)
    return (not (facts is not None and facts.published_without_ft)
            and not g.method.endswith(FT_SUFFIX)
            and any(group_key(h) == (*group_key(g)[:1], g.method + FT_SUFFIX,
                                     *group_key(g)[2:]) for h in groups))


def reported_groups(groups: Sequence[GroupRow]) -> list[GroupRow]:
    """The rows a table reports: every row but a :func:`shadowed` one."""
    return [g for g in groups if not shadowed(g, groups)]


def best_baseline(cell: Sequence[GroupRow]) -> GroupRow | None:
    """The strongest reported baseline row (variants included) of one (dataset, α): the
    highest mean accuracy, the first in table order on a tie; None without baselines."""
    return max((h for h in reported_groups(cell) if is_baseline(h)), key=lambda h: h.acc_mean,
               default=None)


def _error(g: GroupRow | None) -> float | None:
    return None if g is None else 1 - g.acc_mean


def _ratio(num: float, den: float | None) -> float | None:
    return None if not den else float(num / den)


def _group(runs: list[RunRow]) -> GroupRow:
    first = runs[0]
    means = np.array([r.acc_mean for r in runs])
    params = np.array([p for r in runs for p in r.params])
    archs = [r.distinct_archs for r in runs if r.distinct_archs is not None]
    violations = [r.budget_violations for r in runs if r.budget_violations is not None]
    loads = [r.load_mean for r in runs if r.load_mean is not None]
    return GroupRow(
        method=first.method, dataset=first.dataset, alpha=first.alpha, space=first.space,
        seeds=tuple(r.seed for r in runs), budget=first.budget, ran_as=first.ran_as,
        options=first.options, variant=first.variant, reads_alpha=first.reads_alpha,
        acc_mean=float(means.mean()),
        acc_std_clients=float(np.mean([r.acc_std for r in runs])),
        acc_std_seeds=float(means.std(ddof=1)) if len(runs) > 1 else None,
        acc_p10=float(np.mean([r.acc_p10 for r in runs])),
        wall_seconds=float(np.mean([r.wall_seconds for r in runs])),
        up_per_client_round=float(np.mean([r.up_per_client_round for r in runs])),
        down_per_client_round=float(np.mean([r.down_per_client_round for r in runs])),
        params_mean=float(params.mean()), params_min=int(params.min()),
        params_max=int(params.max()),
        distinct_archs=float(np.mean(archs)) if archs else None,
        finetune_epochs=first.finetune_epochs,
        sample_passes=float(np.mean([r.sample_passes for r in runs])),
        budget_violations=float(np.mean(violations)) if violations else None,
        load_mean=float(np.mean(loads)) if loads else None, base_method=first.base_method,
        at_once=max(r.at_once for r in runs),
        simulated_seconds=_mean_or_none([r.simulated_seconds for r in runs]),
        simulated_seconds_heavy=_mean_or_none([r.simulated_seconds_heavy for r in runs]),
        bytes_total=float(np.mean([r.bytes_total for r in runs])),
        bytes_train=float(np.mean([r.bytes_train for r in runs])),
        server_seconds=_mean_or_none([r.server_seconds for r in runs]),
        client_macs=float(np.mean([r.client_macs for r in runs])),
        forward_macs=_mean_or_none([r.forward_macs for r in runs]),
        budget_used=_mean_or_none([r.budget_used for r in runs]),
        **_memory(runs))


def _memory(runs: Sequence[RunRow]) -> dict[str, Any]:
    """The group's training-memory fields: over every seed's clients, or None where a run
    lacks them."""
    if any(not r.memory for r in runs):
        return {}
    values = np.array([m for r in runs for m in r.memory])
    return {"memory_mean": float(values.mean()), "memory_min": int(values.min()),
            "memory_max": int(values.max())}


def _mean_or_none(values: Sequence[float | None]) -> float | None:
    """The mean, or None where any value is missing (a mean of some seeds misleads)."""
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known and len(known) == len(values) else None


# -- rendering -----------------------------------------------------------------------------------
COLUMNS = ("method", "α", "space", "seeds", "F", "personalized acc (mean ± std clients)",
           "± std seeds", "worst-10 % acc", "err ÷ FedAvg+FT", "err ÷ best baseline",
           "client sample-passes", "wall s", "load", "sim. s", "sim. s heavy-tailed",
           "KiB up / client·round",
           "KiB down / client·round", "params mean", "params min", "params max",
           "distinct archs", "budget violations")


def compute_mark(g: GroupRow) -> str:
    """`` !`` where the client compute exceeds FedAvg+FT's by more than 25 %."""
    ratio = g.compute_ratio_fedavg_ft
    return f" ! ×{ratio:.2f}" if ratio is not None and ratio > COMPUTE_MARGIN else ""


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else format(value, fmt)


def row_name(g: GroupRow) -> str:
    """The row's method, with what tells it from other rows of that method where any does:
    ``fedavg (federation.lr=0.05)``."""
    return f"{g.method} ({g.variant})" if g.variant else g.method


def alpha_text(g: GroupRow) -> str:
    """α, or ``—`` where it did not deal the data (a partitioner other than Dirichlet)."""
    return f"{g.alpha:g}" if g.reads_alpha else "—"


UNITS = ((1e6, "M"), (1e3, "k"))


def passes_unit(groups: Sequence[GroupRow]) -> tuple[float, str]:
    """The unit of a table's client sample-passes: millions, thousands where the largest is
    under a million, else single passes (a small run's are never 0.00)."""
    largest = max((g.sample_passes for g in groups), default=0.0)
    return next(((scale, name) for scale, name in UNITS if largest >= scale), (1.0, ""))


def _passes(value: float, scale: float) -> str:
    return f"{value / scale:.2f}" if scale > 1 else f"{value:.0f}"


def _cells(g: GroupRow, scale: float = 1e6) -> list[str]:
    return [row_name(g), alpha_text(g), g.space, ",".join(map(str, g.seeds)),
            str(g.finetune_epochs), f"{g.acc_mean:.4f} ± {g.acc_std_clients:.4f}",
            _num(g.acc_std_seeds, ".4f"), f"{g.acc_p10:.4f}",
            _num(g.err_ratio_fedavg_ft, ".2f"), _num(g.err_ratio_best_baseline, ".2f"),
            f"{_passes(g.sample_passes, scale)}{compute_mark(g)}", f"{g.wall_seconds:.1f}",
            _num(g.load_mean, ".1f"), _num(g.simulated_seconds, ".1f"),
            _num(g.simulated_seconds_heavy, ".1f"), _num(g.up_per_client_round / 1024, ".1f"),
            _num(g.down_per_client_round / 1024, ".1f"),
            f"{g.params_mean:.0f}", str(g.params_min), str(g.params_max),
            _num(g.distinct_archs, "g"), _num(g.budget_violations, "g")]


def section_heading(dataset: str, budget: str, ran_as: str) -> str:
    return f"### {dataset} ({budget}, {ran_as})"


def markdown(groups: Sequence[GroupRow]) -> str:
    """One markdown table per dataset, federation size and way of running
    (:func:`section_of`, stated above each); a column no row has a figure for is left out."""
    parts = []
    for section in dict.fromkeys(sorted(section_of(g) for g in groups)):
        rows = [g for g in groups if section_of(g) == section]
        scale, unit = passes_unit(rows)
        header = [f"{c} ({unit})" if c == "client sample-passes" and unit else c
                  for c in COLUMNS]
        cells = [_cells(g, scale) for g in rows]
        kept = [i for i in range(len(header)) if any(row[i] != "—" for row in cells)]
        parts.append(section_heading(*section) + "\n")
        parts.append("| " + " | ".join(header[i] for i in kept) + " |")
        parts.append("|" + "---|" * len(kept))
        parts.extend("| " + " | ".join(row[i] for i in kept) + " |" for row in cells)
        parts.append("")
    if any(compute_mark(g) for g in groups):
        parts.append(f"`!`: client compute above {COMPUTE_MARGIN:g} × FedAvg+FT's in the same "
                     "cell (sample-passes ratio given).\n")
    return "\n".join(parts)


CSV_FIELDS = ("dataset", "method", "alpha", "space", "seeds", "budget", "ran_as", "variant",
              "acc_mean",
              "acc_std_clients", "acc_std_seeds", "acc_p10", "wall_seconds",
              "load_mean", "bytes_up_per_client_round", "bytes_down_per_client_round",
              "params_mean",
              "params_min", "params_max", "distinct_archs", "finetune_epochs",
              "client_sample_passes", "err_ratio_fedavg_ft", "err_ratio_best_baseline",
              "compute_ratio_fedavg_ft", "budget_violations")


def _csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _blank_none(value: Any) -> Any:
    return "" if value is None else value


def to_csv(groups: Sequence[GroupRow]) -> str:
    return _csv(CSV_FIELDS, (
        [g.dataset, g.method, g.alpha, g.space, " ".join(map(str, g.seeds)),
         g.budget, g.ran_as, g.variant, g.acc_mean, g.acc_std_clients,
         _blank_none(g.acc_std_seeds), g.acc_p10,
         g.wall_seconds, _blank_none(g.load_mean), g.up_per_client_round,
         g.down_per_client_round, g.params_mean, g.params_min, g.params_max,
         _blank_none(g.distinct_archs),
         g.finetune_epochs, g.sample_passes, _blank_none(g.err_ratio_fedavg_ft),
         _blank_none(g.err_ratio_best_baseline), _blank_none(g.compute_ratio_fedavg_ft),
         _blank_none(g.budget_violations)]
        for g in groups))


RUN_CSV_FIELDS = ("dataset", "method", "alpha", "space", "seed", "budget", "ran_as", "variant",
                  "acc_mean", "acc_std",
                  "acc_p10", "wall_seconds", "bytes_up_per_client_round",
                  "bytes_down_per_client_round", "distinct_archs", "finetune_epochs",
                  "client_sample_passes", "load_mean", "simulated_seconds",
                  "simulated_seconds_heavy", "commit", "path")


def runs_csv(rows: Sequence[RunRow]) -> str:
    """Every run on its own line, with how it ran and the folder it was read from."""
    return _csv(RUN_CSV_FIELDS, (
        [r.dataset, r.method, r.alpha, r.space, r.seed, r.budget, r.ran_as, r.variant,
         r.acc_mean, r.acc_std,
         r.acc_p10, r.wall_seconds, r.up_per_client_round, r.down_per_client_round,
         _blank_none(r.distinct_archs), r.finetune_epochs, r.sample_passes,
         _blank_none(r.load_mean), _blank_none(r.simulated_seconds),
         _blank_none(r.simulated_seconds_heavy), r.commit, r.path]
        for r in sorted(rows, key=lambda r: (*group_key(r), r.seed))))
