"""``pfednas report RUN_DIR...``: the benchmark table and plots for finished runs.

    pfednas report outputs/bench/fashion_mnist          # a bench folder
    pfednas report multirun/2025-01-01/12-00-00         # a Hydra -m sweep
    pfednas report outputs/a outputs/b --out my_report  # any runs
    pfednas report --doc docs/BENCHMARKS.md [--check]   # a results page's marked tables

Every folder below the given paths that holds a ``summary.json`` is one run; runs pool
only where they differ in nothing but their seed (:func:`pfednas.report.collect.settle`).
Writes ``table.md``, ``table.csv``, ``runs.csv`` and PNG plots into ``--out``
(default: ``report/`` in the common parent of the paths). ``--doc`` rewrites the
blocks a Markdown file marks (:mod:`pfednas.report.page`) from the bench cells;
with ``--check`` it writes nothing and exits 1 where the file is not what they render.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from itertools import chain, count
from pathlib import Path
from typing import Any, Protocol

from matplotlib.figure import Figure

from pfednas import progress
from pfednas.app.tensorboard import available as tensorboard_available
from pfednas.app.tensorboard import round_scalars
from pfednas.data import DataError
from pfednas.options.facts import FACTS
from pfednas.report import archs as arch_view
from pfednas.report import plots
from pfednas.report.collect import (
    ReportError,
    Run,
    file_safe,
    find_failed,
    find_run_dirs,
    load_run,
    settle,
    split_tuning_runs,
)
from pfednas.report.table import (
    FT_SUFFIX,
    aggregate,
    markdown,
    run_rows,
    runs_csv,
    to_csv,
)
from pfednas.report.tiers import TierSeries, tier_markdown, tier_series

EXIT_USAGE = 2
EXIT_STALE = 1  # --doc --check: the page is not what the cells render


def method_order() -> list[str]:
    from pfednas.methods import METHODS

    return list(METHODS)


def panel_title(run: Run, *, setting: bool = False) -> str:
    """``digits α=0.5``: the dataset as dealt, α where it dealt the data; with ``setting``
    the federation it ran on a second line (``K=4 N=4 R=2 E=1, deployed``)."""
    title = " ".join(filter(None, (run.dataset, run.alpha_text)))
    return f"{title}\n{run.setting}" if setting else title


def _save(fig: Figure, path: Path) -> Path:
    """The figure as a PNG, cut to what it draws (no title or label clipped)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def figure_label(method: str, runs: Sequence[Run]) -> str:
    """``<method>+ft`` where the runs' per-client accuracies are fine-tuned figures of a method
    published without fine-tuning (the table's row of the same name), with what tells the
    runs from others of that method (:attr:`Run.variant`)."""
    finetuned = any("personalized_acc_no_ft_mean" in r.summary for r in runs)
    name = method + FT_SUFFIX if finetuned else method
    variant = runs[0].variant if runs else ""
    return f"{name} ({variant})" if variant else name


def write_plots(runs: Sequence[Run], out: Path, order: Sequence[str]) -> list[Path]:
    """A panel per dataset, federation and α (the federation named where the runs have
    several), a line per row of the table (runs that differ only in their seed)."""
    several = len({r.setting for r in runs}) > 1
    panels: dict[str, list[list[Run]]] = {}
    for group in run_groups(runs, order):
        panels.setdefault(panel_title(group[0], setting=several), []).append(group)
    curves = {title: [plots.seed_mean_curve(figure_label(rs[0].method, rs), rs)
                      for rs in by_row] for title, by_row in panels.items()}
    accuracies = {title: {figure_label(rs[0].method, rs): [float(c["accuracy"]) for r in rs
                                                           for c in r.summary["per_client"]]
                          for rs in by_row} for title, by_row in panels.items()}
    written = [_save(plots.accuracy_curves(curves, x="round"), out / "acc_vs_round.png"),
               _save(plots.accuracy_curves(curves, x="wall"), out / "acc_vs_wall.png"),
               _save(plots.client_accuracy_distribution(accuracies), out / "client_acc.png")]
    losses = {title: [plots.seed_mean_loss(figure_label(rs[0].method, rs), rs)
                      for rs in by_row] for title, by_row in panels.items()}
    if any(len(c.rounds) for cs in losses.values() for c in cs):
        written.append(_save(plots.loss_curves(losses), out / "train_loss.png"))
    if all(plots.timed(c) for cs in curves.values() for c in cs):
        written.append(_save(plots.accuracy_curves(curves, x="simulated"),
                             out / "acc_vs_simulated_time.png"))
    tiers: dict[str, list[TierSeries]] = {}
    for group in run_groups(runs, order):
        series = tier_series(group[0].row_name, group)
        if series is not None:
            tiers.setdefault(panel_title(group[0], setting=True), []).append(series)
    if tiers:
        written.append(_save(plots.tier_accuracy(tiers), out / "acc_by_tier.png"))
    names: set[str] = set()
    for run in runs:
        path = write_arch_heatmap(run, out / "archs", names)
        if path is not None:
            written.append(path)
    written += write_partition_plots(runs, out / "partition")
    return written


def run_groups(runs: Sequence[Run], order: Sequence[str]) -> list[list[Run]]:
    """The runs of each table row (:attr:`Run.row_key`: they differ only in their seed),
    seeds pooled, in the table's order."""
    rank = {m: i for i, m in enumerate(order)}
    groups: dict[tuple[Any, ...], list[Run]] = {}
    for run in sorted(runs, key=lambda r: r.seed):
        dataset, setting, alpha, method, space, options = run.row_key
        key = (dataset, setting, alpha, rank.get(method, len(rank)), method, space, options)
        groups.setdefault(key, []).append(run)
    return [groups[k] for k in sorted(groups)]


def write_partition_plots(runs: Sequence[Run], folder: Path) -> list[Path]:
    """One figure per distinct data of the runs (the same for every method of a seed): the
    label × client counts, the client sizes and, with a feature skew, each client's
    transformation."""
    from pfednas.data import DataSpec, client_shifts
    from pfednas.settings import partitioner_text

    written: list[Path] = []
    drawn: set[object] = set()
    for run in runs:
        try:
            spec = DataSpec.from_config(run.config["dataset"], seed=run.seed, num_clients=int(
                run.config["federation"]["num_clients"]))
            if spec in drawn:
                continue
            drawn.add(spec)
            histograms = arch_view.label_histograms(run.config)
        except (DataError, OSError, ValueError, KeyError, TypeError) as err:
            print(f"[pfednas report] {run.path}: no partition plot ({err})", file=sys.stderr)
            continue
        shifts = ([s.label() for s in client_shifts(spec)] if spec.feature_skew.active
                  else None)
        name = f"{spec.name}_{spec.partitioner}_K={spec.num_clients}_seed={spec.seed}"
        suffix = "" if name + ".png" not in {p.name for p in written} else f"_{len(written)}"
        title = f"{spec.name}, {partitioner_text(spec)}, K={spec.num_clients}, seed={spec.seed}"
        written.append(_save(plots.partition_figure(histograms, shifts, title=title),
                             folder / f"{name}{suffix}.png"))
    return written


def write_arch_heatmap(run: Run, folder: Path, taken: set[str]) -> Path | None:
    """The run's per-client architecture heatmap, clients in label-similarity order (none
    for a run whose models are not architectures of its space: HeteroFL's and FedRolex's
    width slices)."""
    facts = FACTS.get(str(run.summary.get("method")))
    if facts is not None and facts.slices_width:
        return None
    try:
        matrix = arch_view.arch_matrix(run.evaluation(), run.space_config)
    except ValueError as err:
        print(f"[pfednas report] {run.path}: no architecture heatmap ({err})", file=sys.stderr)
        return None
    if matrix is None:
        return None
    try:
        histograms = arch_view.label_histograms(run.config)[list(matrix.client_ids)]
    except (DataError, OSError, ValueError) as err:
        print(f"[pfednas report] {run.path}: label histograms unavailable ({err}); "
              "clients in id order", file=sys.stderr)
        histograms = None
    rho = float("nan")
    if histograms is not None:
        order = arch_view.similarity_order(histograms)
        matrix, histograms = matrix.take(order), histograms[order]
        rho = arch_view.label_arch_correlation(histograms, matrix)
    distinct = len({tuple(row) for row in matrix.indices.tolist()})
    on = " ".join(filter(None, (run.dataset, run.alpha_text, f"seed={run.seed}")))
    title = (f"{run.row_name} on {on}, {run.setting}:\n{distinct} distinct of "
             f"{len(matrix.client_ids)}; Spearman ρ(label dist, arch dist) = {rho:.2f}")
    stem = file_safe(f"{run.method}_{run.dataset}_alpha={run.alpha:g}_seed={run.seed}")
    name = next(f"{stem}{suffix}.png" for suffix in ("", *(f"_{i}" for i in range(2, 10**6)))
                if f"{stem}{suffix}.png" not in taken)
    taken.add(name)
    return _save(plots.arch_heatmap(matrix, histograms, title=title), folder / name)


def tensorboard_dir(run: Run) -> Path:
    """A run's event files below the report's ``tensorboard/``: a folder per dataset and
    federation (``digits_K=4_N=4_R=2_E=1_simulated``), one per table row in it, one per
    seed in that."""
    alpha = f"alpha={run.alpha:g}_" if run.reads_alpha else ""
    return (Path(file_safe(f"{run.dataset}_{run.setting}")) / file_safe(run.row_name).strip("_")
            / file_safe(f"{alpha}seed={run.seed}"))


def write_tensorboard(runs: Sequence[Run], folder: Path) -> None:
    """Per-round scalars of each run as TensorBoard event files (needs ``tensorboard``), a
    folder per run (:func:`tensorboard_dir`; a second run of the same row and seed: ``_2``)."""
    from torch.utils.tensorboard import SummaryWriter

    taken: set[Path] = set()
    for run in runs:
        stem = folder / tensorboard_dir(run)
        # the candidates made one at a time (a tuple of them built a million paths a run)
        log_dir = next(p for p in chain([stem], (Path(f"{stem}_{i}") for i in count(2)))
                       if p not in taken)
        taken.add(log_dir)
        writer = SummaryWriter(log_dir=str(log_dir))
        try:
            for record in run.rounds:
                for tag, value in round_scalars(record).items():
                    writer.add_scalar(tag, value, int(record["round"]))
        finally:
            writer.close()


def failed_section(failed: Sequence[dict[str, Any]]) -> str:
    if not failed:
        return ""
    lines = ["\n## Failed runs\n", "| run folder | exit code | last error line |", "|---|---|---|"]
    for f in failed:
        last = (f.get("error") or "").strip().splitlines()[-1:] or [""]
        lines.append(f"| {f['path']} | {f.get('returncode')} | {last[0].replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def build_report(run_dirs: Sequence[Path], out: Path, *,
                 failed: Sequence[dict[str, Any]] = (), tensorboard: bool = False) -> Path:
    """Read the runs, write the table, the plots (and event files) into ``out``; a bar
    over these stages on a terminal (:mod:`pfednas.progress`)."""
    names = ["read runs", "tables", "plots", *(["tensorboard"] if tensorboard else [])]
    with progress.stages(f"report of {len(run_dirs)} runs", names) as begin:
        begin("read runs")
        return _build_report(run_dirs, out, failed, tensorboard, begin)


def _build_report(run_dirs: Sequence[Path], out: Path, failed: Sequence[dict[str, Any]],
                  tensorboard: bool, begin: Callable[[str], None]) -> Path:
    runs = settle([load_run(p) for p in run_dirs])
    begin("tables")
    order = method_order()
    rows = [row for r in runs for row in run_rows(r)]
    groups = aggregate(rows, order)
    out.mkdir(parents=True, exist_ok=True)
    header = ("# pfednas benchmark report\n\nPersonalized accuracy = each client's own model "
              "on its own test split, final evaluation (summary.json); std over clients, and "
              "over seeds when there are several. Worst-10 % = 10th-percentile client "
              "accuracy. Traffic = run total / client-round participations (metrics.jsonl). "
              "Distinct archs: NAS methods only.\n\n")
    table = markdown(groups)
    (out / "table.md").write_text(header + table + tier_markdown(run_groups(runs, order))
                                  + failed_section(failed))
    (out / "table.csv").write_text(to_csv(groups))
    (out / "runs.csv").write_text(runs_csv(rows))
    begin("plots")
    write_plots(runs, out, order)
    if tensorboard:
        begin("tensorboard")
        write_tensorboard(runs, out / "tensorboard")
    return out / "table.md"


class DocRefresher(Protocol):
    """Renders a page's marked tables from the bench's cells; its exit code."""

    def __call__(self, doc: Path, bench_root: Path | None, *, check: bool) -> int: ...


def default_out(paths: Sequence[Path]) -> Path:
    dirs = [p.resolve() if p.is_dir() else p.resolve().parent for p in paths]
    return Path(os.path.commonpath(dirs)) / "report"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pfednas report",
                                     description="Benchmark table and plots of finished runs.")
    parser.add_argument("paths", nargs="*", type=Path, metavar="RUN_DIR",
                        help="run folders, bench folders or Hydra multirun folders")
    parser.add_argument("--doc", type=Path, default=None, metavar="FILE.md",
                        help="render the tables a Markdown file marks (<!-- table:<preset> --> "
                             "... <!-- /table -->) from the preset's bench cells, in place")
    parser.add_argument("--bench-root", type=Path, default=None,
                        help="with --doc: the folder of the presets' cells (default: bench/ "
                             "beside the file)")
    parser.add_argument("--check", action="store_true",
                        help="with --doc: write nothing; exit 1 if the file is not what the "
                             "cells render")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: report/ in the paths' common parent)")
    parser.add_argument("--tensorboard", action="store_true",
                        help="also write per-round TensorBoard event files (needs tensorboard)")
    return parser.parse_args(argv)


def main(argv: list[str], refresh: DocRefresher | None = None) -> int:
    """``pfednas report``; ``refresh``: what renders a page's marked tables (``--doc``) from
    the bench's current cells (:func:`pfednas.bench.pages.refresh_doc`, which serves the
    command)."""
    args = parse_args(argv)
    if args.doc is not None:
        if refresh is None:
            print("pfednas report: error: --doc is served by pfednas.bench.pages (the command "
                  "`pfednas report`)", file=sys.stderr)
            return EXIT_USAGE
        try:
            return refresh(args.doc, args.bench_root, check=args.check)
        except ReportError as err:
            print(f"pfednas report: error: {err}", file=sys.stderr)
            return EXIT_USAGE
    if not args.paths:
        print("pfednas report: error: give RUN_DIR... (or --doc FILE.md)", file=sys.stderr)
        return EXIT_USAGE
    if args.check or args.bench_root is not None:
        print("pfednas report: error: --check and --bench-root go with --doc", file=sys.stderr)
        return EXIT_USAGE
    if args.tensorboard and not tensorboard_available():
        print("pfednas report: error: --tensorboard needs the tensorboard package "
              "(pip install -e \".[report]\")", file=sys.stderr)
        return EXIT_USAGE
    try:
        run_dirs, tuning = split_tuning_runs(find_run_dirs(args.paths))
        if tuning:
            print(f"[pfednas report] left out {len(tuning)} tuning run(s) (scored on "
                  "validation splits, eval_split=val)", flush=True)
        out = args.out or default_out(args.paths)
        table = build_report(run_dirs, out, failed=find_failed(args.paths),
                             tensorboard=args.tensorboard)
    except ReportError as err:
        print(f"pfednas report: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(table.read_text())
    print(f"[pfednas report] {len(run_dirs)} run(s); report written to {out}")
    return 0
