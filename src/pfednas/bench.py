"""``pfednas bench``: every method × Dirichlet α × seed on one dataset, then one report.

    pfednas bench                                   # bench=smoke: two methods, seconds each
    pfednas bench bench=fashion_mnist               # the 2-core preset (conf/bench/)
    pfednas bench bench=fashion_mnist bench.seeds=[0,1] federation.num_rounds=10
    pfednas bench bench=paper_cifar10 --dry-run     # print the cells' commands only

Arguments ``bench=<preset>`` and ``bench.<key>=<value>`` configure the bench
(``conf/bench/<preset>.yaml``); every other Hydra override goes to every cell.
Each cell is one ``pfednas`` run into ``<bench.out>/<method>/alpha=<α>/seed=<s>/``.
Cells of the same α and seed get the same dataset config, K and seed, hence the
same client partitions for every method. A cell whose ``summary.json`` exists
from the same overrides is skipped (the bench resumes); a failed cell leaves
``FAILED.json`` and the bench goes on. The report goes to ``<bench.out>/report/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from pfednas.config import conf_dir

EXIT_CONFIG = 2
EXIT_FAILED_CELLS = 1
# Selected by the bench for every cell; passing them as plain overrides is an error.
BENCH_OWNED = ("method", "dataset", "search_space", "seed", "dataset.alpha")


class BenchError(ValueError):
    """An invalid bench configuration; the message says which key and why."""


@dataclass(frozen=True)
class BenchPreset:
    name: str
    dataset: str
    search_space: str
    methods: tuple[str, ...]
    alphas: tuple[float, ...]
    seeds: tuple[int, ...]
    overrides: tuple[str, ...]
    method_overrides: Mapping[str, tuple[str, ...]]
    out: Path
    cell_timeout: float | None
    tensorboard: bool

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], registry: Mapping[str, Any]) -> BenchPreset:
        methods = cfg["methods"]
        methods = list(registry) if methods == "all" else list(methods)
        unknown = sorted(set(methods) - set(registry))
        unknown += sorted(set(cfg.get("method_overrides") or {}) - set(registry))
        if unknown:
            raise BenchError(f"unknown method(s) {', '.join(unknown)}; known: "
                             f"{', '.join(registry)}")
        if not methods or not cfg["alphas"] or not cfg["seeds"]:
            raise BenchError("bench.methods, bench.alphas and bench.seeds must not be empty")
        timeout = cfg.get("cell_timeout_s")
        name = str(cfg["name"])
        return cls(
            name=name, dataset=str(cfg["dataset"]), search_space=str(cfg["search_space"]),
            methods=tuple(methods), alphas=tuple(float(a) for a in cfg["alphas"]),
            seeds=tuple(int(s) for s in cfg["seeds"]),
            overrides=tuple(str(o) for o in cfg.get("overrides") or ()),
            method_overrides={str(m): tuple(str(o) for o in v)
                              for m, v in (cfg.get("method_overrides") or {}).items()},
            out=Path(str(cfg.get("out") or Path("outputs") / "bench" / name)),
            cell_timeout=None if timeout is None else float(timeout),
            tensorboard=bool(cfg.get("tensorboard", False)))


@dataclass(frozen=True)
class Cell:
    method: str
    alpha: float
    seed: int
    space: str
    overrides: tuple[str, ...]
    path: Path


def method_space(preset: BenchPreset, method: str, spaces: tuple[str, ...]) -> str:
    """The bench's space, unless the method needs another (its first) or its overrides pick one."""
    for override in preset.method_overrides.get(method, ()):
        if override.startswith("search_space="):
            return override.split("=", 1)[1]
    return preset.search_space if not spaces or preset.search_space in spaces else spaces[0]


def cells(preset: BenchPreset, extra: Sequence[str], spaces: Mapping[str, tuple[str, ...]]
          ) -> list[Cell]:
    """Every (method, α, seed) run with its overrides: α and seed outermost, methods inside."""
    out = []
    for alpha in preset.alphas:
        for seed in preset.seeds:
            for method in preset.methods:
                space = method_space(preset, method, spaces[method])
                own = [o for o in preset.method_overrides.get(method, ())
                       if not o.startswith("search_space=")]
                overrides = (f"method={method}", f"dataset={preset.dataset}",
                             f"search_space={space}", f"dataset.alpha={alpha:g}", f"seed={seed}",
                             *preset.overrides, *own, *extra)
                path = preset.out / method / f"alpha={alpha:g}" / f"seed={seed}"
                out.append(Cell(method, alpha, seed, space, overrides, path))
    return out


def cell_done(cell: Cell) -> bool:
    """Whether the cell has a summary from exactly these overrides (a stale one is removed)."""
    summary = cell.path / "summary.json"
    if not summary.is_file():
        return False
    if json.loads(summary.read_text()).get("overrides") == list(cell.overrides):
        return True
    print(f"[pfednas bench] {cell.path}: summary.json is from other overrides; running again",
          flush=True)
    summary.unlink()
    return False


def pfednas_command(cell: Cell) -> list[str]:
    executable = Path(sys.executable).parent / "pfednas"
    return [str(executable), *cell.overrides, f"hydra.run.dir='{cell.path.resolve()}'"]


def run_cell(cell: Cell, timeout: float | None) -> dict[str, Any] | None:
    """Run one cell; ``None`` on success, else what ``FAILED.json`` records."""
    cell.path.mkdir(parents=True, exist_ok=True)
    (cell.path / "FAILED.json").unlink(missing_ok=True)
    log = cell.path / "bench.log"
    command = pfednas_command(cell)
    with log.open("w") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        try:
            code: int | str = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)  # pfednas stops its Flower/Ray processes on TERM
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            code = f"timeout after {timeout:g}s"
    if code == 0 and (cell.path / "summary.json").is_file():
        return None
    return {"method": cell.method, "alpha": cell.alpha, "seed": cell.seed, "returncode": code,
            "command": command, "log": str(log), "error": log.read_text()[-3000:]}


def run_bench(preset: BenchPreset, extra: Sequence[str], *, dry_run: bool = False) -> int:
    from pfednas.methods import METHODS
    from pfednas.report.cli import build_report

    todo = cells(preset, extra, {m: METHODS[m].spaces for m in preset.methods})
    if dry_run:
        for cell in todo:
            print(" ".join(pfednas_command(cell)))
        return 0
    failed: list[dict[str, Any]] = []
    for i, cell in enumerate(todo, start=1):
        label = f"[pfednas bench] {i}/{len(todo)} {cell.method} α={cell.alpha:g} seed={cell.seed}"
        if cell_done(cell):
            print(f"{label}: done before, skipped", flush=True)
            continue
        start = time.perf_counter()
        problem = run_cell(cell, preset.cell_timeout)
        seconds = time.perf_counter() - start
        if problem is None:
            print(f"{label}: finished in {seconds:.0f}s", flush=True)
            continue
        (cell.path / "FAILED.json").write_text(json.dumps(problem, indent=2))
        failed.append({**problem, "path": str(cell.path)})
        print(f"{label}: FAILED ({problem['returncode']}) after {seconds:.0f}s; see "
              f"{problem['log']}", flush=True)
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


def split_arguments(overrides: Sequence[str]) -> tuple[str, list[str], list[str]]:
    """(preset, bench.* overrides, overrides for every cell)."""
    preset, bench, extra = "smoke", [], []
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        if key == "bench":
            preset = item.split("=", 1)[1]
        elif key.startswith("bench."):
            bench.append(item)
        elif key in BENCH_OWNED:
            raise BenchError(f"{item!r}: the bench sets {key} per cell; use bench.dataset, "
                             "bench.methods, bench.search_space, bench.alphas, bench.seeds")
        else:
            extra.append(item)
    return preset, bench, extra


def compose_preset(preset: str, overrides: Sequence[str]) -> dict[str, Any]:
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
            cfg = compose(config_name="config", overrides=[f"+bench={preset}", *overrides])
        value = OmegaConf.to_container(cfg.bench, resolve=True)
    except (HydraException, OmegaConfBaseException) as err:
        raise BenchError(f"bench={preset}: {err}") from err
    if not isinstance(value, dict):
        raise BenchError(f"bench={preset} is not a mapping")
    return {str(k): v for k, v in value.items()}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pfednas bench", description="Run methods × α × seeds and report them.",
        epilog="Presets: " + ", ".join(sorted(p.stem for p in (conf_dir() / "bench").glob(
            "*.yaml"))))
    parser.add_argument("overrides", nargs="*",
                        help="bench=<preset>, bench.<key>=<value>, or overrides for every cell")
    parser.add_argument("--dry-run", action="store_true", help="print the cells' commands only")
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
    return run_bench(preset, extra, dry_run=args.dry_run)
