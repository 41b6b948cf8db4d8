"""``pfednas bench``: every method × Dirichlet α × seed on one dataset, then one report.

    pfednas bench                                   # bench=smoke: two methods, seconds each
    pfednas bench bench=fashion_mnist               # the 2-core preset (conf/bench/)
    pfednas bench bench=fashion_mnist bench.seeds=[0,1] federation.num_rounds=10
    pfednas bench bench=paper_cifar10 --dry-run     # print the cells' commands only
    pfednas bench bench=fashion_mnist --tune        # the tuning grid on the tuning seed
    pfednas bench bench=smoke --allow-dirty         # from uncommitted changes (kept as source.diff)

Arguments ``bench=<preset>`` and ``bench.<key>=<value>`` configure the bench
(``conf/bench/<preset>.yaml``); every other Hydra override goes to every cell.
Each cell is one ``pfednas`` run into ``<bench.out>/<method>/alpha=<α>/seed=<s>/``.
Cells of the same α and seed get the same dataset config, K and seed, hence the
same client partitions for every method. A cell whose ``summary.json`` exists
from the configuration its overrides compose now (its ``resolved_config.yaml``
compared value by value, so a changed default counts) is skipped (the bench
resumes); a stale one runs again. A failed cell leaves ``FAILED.json`` and the
bench goes on. A finished cell keeps its per-round records compressed
(``metrics.jsonl.gz``; ``pfednas report`` reads either form). The report goes to
``<bench.out>/report/``. ``bench.cells_at_once=N`` runs N cells side by side (each its own
process; on a GPU no more than its free memory holds at ``bench.cell_gpu_mib`` a cell), and
each cell's ``cell.json`` records N beside its wall time.

Reported cells run from committed code: with uncommitted changes to the package or
its config the bench refuses, unless ``--allow-dirty`` is given; every cell run
from such changes keeps them beside its results (``source.diff``) and its commit
is recorded as ``<commit>+dirty``.

Reported cells run what the preset's tuning chose (``--tune`` first, where the preset has a
``tuning`` grid): each method's best configuration on the validation splits of the tuning
seed, read from its tuning cells (:mod:`pfednas.bench.tuning`).

Modules: :mod:`pfednas.bench.cells` (presets, cells, the stale check),
:mod:`pfednas.bench.tuning` (the tuning's choice), :mod:`pfednas.bench.runs` (running and
recording one cell), this one (the command).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pfednas.bench.cells import (
    BenchError,
    BenchPreset,
    Cell,
    cell_done,
    cells,
    compose_preset,
    pfednas_command,
    split_arguments,
    stale_keys,
    tuning_cells,
)
from pfednas.bench.runs import (
    cell_record,
    cells_side_by_side,
    compress_metrics,
    free_gpu_mib,
    run_cell,
    source_state,
    stop_process,
)
from pfednas.bench.tuning import chosen_overrides, write_tuning_table
from pfednas.config import conf_dir

__all__ = [
    "BenchError",
    "BenchPreset",
    "cell_record",
    "cells",
    "compose_preset",
    "compress_metrics",
    "main",
    "run_bench",
    "split_arguments",
    "tuning_cells",
]

EXIT_CONFIG = 2
EXIT_FAILED_CELLS = 1
EXIT_STOPPED = 130


class BenchStopped(Exception):
    """The bench got SIGTERM: the running cell is stopped, finished cells stay."""


def _stop_on_term(signum: int, frame: object) -> None:
    raise BenchStopped(signum)


def run_cells(todo: Sequence[Cell], timeout: float | None,
              at_once: int = 1) -> list[dict[str, Any]]:
    """Run the cells not done yet, ``at_once`` of them side by side (each its own process),
    started in order; the failures in that order (each also left as FAILED.json). Stopped
    (SIGTERM, Ctrl-C), it stops every running cell, which records nothing, and re-raises."""
    labels = {cell.path: f"[pfednas bench] {i}/{len(todo)} {cell.method} α={cell.alpha:g} "
                         f"seed={cell.seed}" for i, cell in enumerate(todo, start=1)}
    running: list[subprocess.Popen[bytes]] = []
    stopping = threading.Event()

    def one(cell: Cell) -> dict[str, Any] | None:
        start = time.perf_counter()
        problem = run_cell(cell, timeout, at_once=at_once, started=running.append,
                           stopping=stopping)
        seconds = time.perf_counter() - start
        if problem is None:
            print(f"{labels[cell.path]}: finished in {seconds:.0f}s", flush=True)
            return None
        (cell.path / "FAILED.json").write_text(json.dumps(problem, indent=2))
        print(f"{labels[cell.path]}: FAILED ({problem['returncode']}) after {seconds:.0f}s; "
              f"see {problem['log']}", flush=True)
        return {**problem, "path": str(cell.path)}

    left = []
    for cell in todo:
        if cell_done(cell):
            print(f"{labels[cell.path]}: done before, skipped", flush=True)
        else:
            left.append(cell)
    if at_once == 1:
        return [p for p in map(one, left) if p is not None]
    pool = ThreadPoolExecutor(at_once, thread_name_prefix="cell")
    futures = [pool.submit(one, cell) for cell in left]
    try:
        problems = [future.result() for future in futures]
    except BaseException:
        stopping.set()
        for future in futures:
            future.cancel()
        for proc in list(running):
            stop_process(proc)
        pool.shutdown(wait=True)
        raise
    pool.shutdown()
    return [p for p in problems if p is not None]


def refuse_dirty(todo: Sequence[Cell]) -> None:
    """Refuse to run a reported cell from uncommitted changes (``--allow-dirty`` skips this)."""
    changed = source_state().changed
    if changed and any(stale_keys(cell) != [] for cell in todo):
        raise BenchError(f"uncommitted changes to {', '.join(changed)}: reported cells run "
                         "from committed code; commit them, or pass --allow-dirty (each cell "
                         "then keeps them as source.diff)")


def side_by_side(preset: BenchPreset) -> int:
    """How many of the preset's cells run at once here (``bench.cells_at_once``, fewer where
    the GPU's free memory holds fewer ``bench.cell_gpu_mib`` shares), said on the console."""
    free = free_gpu_mib() if preset.cell_gpu_mib is not None else None
    at_once = cells_side_by_side(preset.cells_at_once, preset.cell_gpu_mib, free)
    if at_once > 1 or preset.cells_at_once > 1:
        held = "" if free is None else (f" (the GPU has {free} MiB free, "
                                        f"{preset.cell_gpu_mib} MiB a cell)")
        print(f"[pfednas bench] {at_once} cells at once{held}", flush=True)
    return at_once


def run_bench(preset: BenchPreset, extra: Sequence[str], *, dry_run: bool = False,
              tune: bool = False, allow_dirty: bool = False) -> int:
    from pfednas.methods import METHODS
    from pfednas.report.cli import build_report

    spaces = {m: METHODS[m].spaces for m in map(preset.base_of, preset.methods)}
    if tune:
        todo = tuning_cells(preset, extra, spaces)
    else:
        try:
            chosen = chosen_overrides(preset, extra, spaces)
        except BenchError as err:
            if not dry_run:
                raise
            print(f"# {err}: the commands below run each method's own values", flush=True)
            chosen = {}
        todo = cells(preset, extra, spaces, chosen)
    if dry_run:
        for cell in todo:
            print(" ".join(pfednas_command(cell)))
        return 0
    if not tune and not allow_dirty:
        refuse_dirty(todo)
    previous = signal.signal(signal.SIGTERM, _stop_on_term)
    try:
        failed = run_cells(todo, preset.cell_timeout, side_by_side(preset))
    except (BenchStopped, KeyboardInterrupt):
        print("[pfednas bench] stopped: the running cell was stopped, finished cells are kept; "
              "the same command resumes", file=sys.stderr, flush=True)
        return EXIT_STOPPED
    finally:
        signal.signal(signal.SIGTERM, previous)
    if tune:
        path = write_tuning_table(preset, extra, spaces)
        print(path.read_text())
        return EXIT_FAILED_CELLS if failed else 0
    finished = [c.path.resolve() for c in todo if (c.path / "summary.json").is_file()]
    if not finished:
        print("[pfednas bench] no cell finished: no report", file=sys.stderr)
        return EXIT_FAILED_CELLS
    report = preset.out / "report"
    if report.is_dir():
        shutil.rmtree(report)
    table = build_report(finished, report, failed=failed, tensorboard=preset.tensorboard)
    print(table.read_text())
    print(f"[pfednas bench] {len(finished)}/{len(todo)} cells finished; report in {report}")
    return EXIT_FAILED_CELLS if failed else 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pfednas bench", description="Run methods × α × seeds and report them.",
        epilog="Presets: " + ", ".join(sorted(p.stem for p in (conf_dir() / "bench").glob(
            "*.yaml"))))
    parser.add_argument("overrides", nargs="*",
                        help="bench=<preset>, bench.<key>=<value>, or overrides for every cell")
    parser.add_argument("--dry-run", action="store_true", help="print the cells' commands only")
    parser.add_argument("--tune", action="store_true",
                        help="run the preset's tuning grid on its tuning seed (validation split) "
                             "and write <out>/tuning/tuning.md")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="run reported cells from uncommitted changes to src/, strategies/, "
                             "clients/, conf/ or pyproject.toml; each cell keeps them as "
                             "source.diff")
    return parser.parse_intermixed_args(argv)


def main(argv: list[str]) -> int:
    from pfednas.methods import METHODS

    args = parse_args(argv)
    try:
        name, bench_overrides, extra = split_arguments(args.overrides)
        preset = BenchPreset.from_config(compose_preset(name, bench_overrides), METHODS)
    except BenchError as err:
        print(f"pfednas bench: error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return run_bench(preset, extra, dry_run=args.dry_run, tune=args.tune,
                         allow_dirty=args.allow_dirty)
    except BenchError as err:
        print(f"pfednas bench: error: {err}", file=sys.stderr)
        return EXIT_CONFIG
