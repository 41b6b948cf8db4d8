"""A bench preset's finished cells, read for the results page (:mod:`pfednas.report.page`).

A preset's cells live in ``<bench root>/<name>/<method>/alpha=<α>/seed=<s>/``, every (method,
α, seed) of the preset; they are aggregated exactly as ``pfednas report`` aggregates them. A
bench still running gives the methods whose cells have all finished and names the others;
while no method has finished (a preset that runs its α and seeds in turn, every method
within a seed), each α on the seeds at which every method's cell has finished, once there
are :data:`INTERIM_SEEDS` of them, naming what has not run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from pfednas.report.collect import SUMMARY, ReportError, Run, load_run, settle
from pfednas.report.paired import seed_accuracies
from pfednas.report.table import GroupRow, Key, aggregate, run_rows
from pfednas.report.time_table import RunKey

# the fewest seeds an α is shown on before all its cells have run (the digits and rotated
# presets report 3)
INTERIM_SEEDS = 3


@dataclass(frozen=True)
class PresetView:
    """What the page needs of a bench preset: its cells and its variants."""

    name: str
    methods: tuple[str, ...]
    alphas: tuple[float, ...]
    seeds: tuple[int, ...]
    variants: Mapping[str, tuple[str, tuple[str, ...]]]
    # the preset whose setting this one runs with the clients' inputs shifted (its
    # ``shift`` block pairs the two by seed; :mod:`pfednas.report.shift`), or None
    shifts: str | None = None

    def cell_dirs(self, folder: Path, methods: Sequence[str] | None = None) -> list[Path]:
        return [folder / method / f"alpha={alpha:g}" / f"seed={seed}"
                for method in (self.methods if methods is None else methods)
                for alpha in self.alphas for seed in self.seeds]


def read_preset(path: Path, registry: Sequence[str]) -> PresetView:
    """The preset file's methods (``all``: ``registry``), α, seeds and variants."""
    if not path.is_file():
        raise ReportError(f"{path}: no such bench preset")
    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if not isinstance(cfg, dict):
        raise ReportError(f"{path}: not a mapping")
    methods = cfg["methods"]
    variants = {str(name): (str(v["method"]), tuple(str(o) for o in v.get("overrides") or ()))
                for name, v in (cfg.get("variants") or {}).items()}
    return PresetView(name=str(cfg["name"]),
                      methods=tuple(registry) if methods == "all" else tuple(map(str, methods)),
                      alphas=tuple(float(a) for a in cfg["alphas"]),
                      seeds=tuple(int(s) for s in cfg["seeds"]), variants=variants,
                      shifts=None if cfg.get("shifts") is None else str(cfg["shifts"]))


@dataclass(frozen=True)
class BenchResults:
    """A preset's table rows (in ``pfednas report``'s order) and each row's accuracy by seed."""

    preset: PresetView
    groups: tuple[GroupRow, ...]
    by_seed: Mapping[Key, Mapping[int, float]]
    runs: Mapping[RunKey, Run] = field(default_factory=dict)  # (label, α, seed) -> its run
    # Methods left out because some of their cells have not finished: (label, done, of).
    unfinished: tuple[tuple[str, int, int], ...] = ()
    # α whose cells have not all finished: (α, cells done, of, the seeds shown: those at which
    # every method's cell has, where there are INTERIM_SEEDS of them, else none).
    pending_alphas: tuple[tuple[float, int, int, tuple[int, ...]], ...] = ()


def load_bench(preset: PresetView, folder: Path, method_order: Sequence[str],
               current: Callable[[Path], bool] | None = None) -> BenchResults:
    """Read the cells of the preset below ``folder``: every method whose cells have all
    finished (the others are :attr:`BenchResults.unfinished`). While some method has not, and
    at some α every method has finished all the preset's seeds or at least
    :data:`INTERIM_SEEDS` of the same ones, every method at each such α on those seeds (what
    is not shown is :attr:`BenchResults.pending_alphas`: a preset still running); where no α
    has, the finished methods alone (a method added later), and an error names a missing cell
    when no method has finished either. ``current(cell folder)``: whether a finished cell ran
    the configuration the bench would run now (one that did not counts as not finished)."""
    def finished_cell(d: Path) -> bool:
        return (d / SUMMARY).is_file() and (current is None or current(d))

    done = {m: [d for d in preset.cell_dirs(folder, [m]) if finished_cell(d)]
            for m in preset.methods}
    per_method = len(preset.alphas) * len(preset.seeds)
    finished = [m for m in preset.methods if len(done[m]) == per_method]
    dirs = preset.cell_dirs(folder, finished)
    pending: tuple[tuple[float, int, int, tuple[int, ...]], ...] = ()

    def cell(method: str, alpha: float, seed: int) -> Path:
        return folder / method / f"alpha={alpha:g}" / f"seed={seed}"

    complete = {alpha: tuple(s for s in preset.seeds
                             if all(finished_cell(cell(m, alpha, s)) for m in preset.methods))
                for alpha in preset.alphas}
    shown = {alpha: seeds for alpha, seeds in complete.items()
             if len(seeds) >= min(INTERIM_SEEDS, len(preset.seeds))}
    if len(finished) < len(preset.methods) and (shown or not finished):
        if not shown:
            missing = [d for d in preset.cell_dirs(folder) if not finished_cell(d)]
            raise ReportError(f"{missing[0]}: not finished with the configuration of now "
                              f"({len(missing)} of the {len(preset.cell_dirs(folder))} cells of "
                              f"bench={preset.name}); run `pfednas bench bench={preset.name} "
                              f"bench.out={folder}`")
        finished = list(preset.methods)
        dirs = [cell(m, alpha, s) for m in preset.methods for alpha, seeds in shown.items()
                for s in seeds]
        per_alpha = len(preset.methods) * len(preset.seeds)
        pending = tuple((alpha, sum(finished_cell(cell(m, alpha, s)) for m in preset.methods
                                    for s in preset.seeds), per_alpha, shown.get(alpha, ()))
                        for alpha in preset.alphas
                        if len(shown.get(alpha, ())) < len(preset.seeds))
    unfinished = tuple((m, len(done[m]), per_method) for m in preset.methods
                       if m not in finished)
    runs = settle([load_run(d) for d in dirs])
    unequal = unequal_partitions(runs)
    if unequal:
        raise ReportError(f"bench={preset.name}: {unequal[0]}")
    rows = [row for run in runs for row in run_rows(run)]
    return BenchResults(preset, tuple(aggregate(rows, method_order)), seed_accuracies(rows),
                        {(run.method, run.alpha, run.seed): run for run in runs}, unfinished,
                        pending)


SPLITS_KEY = "client_splits_sha256"


def unequal_partitions(runs: Sequence[Run]) -> list[str]:
    """Where runs of the same α and seed dealt their clients different train / validation /
    test rows (``summary.json``'s ``partition.client_splits_sha256``; runs from before it was
    recorded are not compared): one line per (α, seed), naming the methods that differ."""
    by_key: dict[tuple[float, int], dict[tuple[str, ...], list[str]]] = {}
    for run in runs:
        hashes = (run.summary.get("partition") or {}).get(SPLITS_KEY)
        if hashes is not None:
            by_key.setdefault((run.alpha, run.seed), {}).setdefault(
                tuple(hashes), []).append(run.method)
    return [f"α={alpha:g} seed={seed}: the clients' data differ between "
            + " and ".join(", ".join(sorted(methods)) for methods in groups.values())
            for (alpha, seed), groups in sorted(by_key.items()) if len(groups) > 1]
