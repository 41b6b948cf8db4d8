"""``pfednas bench``: every method × Dirichlet α × seed on one dataset, then one report.

    pfednas bench                                   # bench=smoke: two methods, seconds each
    pfednas bench bench=fashion_mnist               # the 2-core preset (conf/bench/)
    pfednas bench bench=fashion_mnist bench.seeds=[0,1] federation.num_rounds=10
    pfednas bench bench=paper_cifar10 --dry-run     # print the cells' commands only
    pfednas bench bench=fashion_mnist --tune        # the tuning grid on the tuning seed

Arguments ``bench=<preset>`` and ``bench.<key>=<value>`` configure the bench
(``conf/bench/<preset>.yaml``); every other Hydra override goes to every cell.
Each cell is one ``pfednas`` run into ``<bench.out>/<method>/alpha=<α>/seed=<s>/``.
Cells of the same α and seed get the same dataset config, K and seed, hence the
same client partitions for every method. A cell whose ``summary.json`` exists
from the same overrides is skipped (the bench resumes); a failed cell leaves
``FAILED.json`` and the bench goes on. A finished cell keeps its per-round records
compressed (``metrics.jsonl.gz``; ``pfednas report`` reads either form). The report
goes to ``<bench.out>/report/``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from pfednas.config import conf_dir
from pfednas.report.collect import METRICS, METRICS_GZ

EXIT_CONFIG = 2
EXIT_FAILED_CELLS = 1
CELL_RECORD = "cell.json"
EXIT_STOPPED = 130
# Selected by the bench for every cell; passing them as plain overrides is an error.
BENCH_OWNED = ("method", "dataset", "search_space", "seed", "dataset.alpha")


class BenchError(ValueError):
    """An invalid bench configuration; the message says which key and why."""


class BenchStopped(Exception):
    """The bench got SIGTERM: the running cell is stopped, finished cells stay."""


def _stop_on_term(signum: int, frame: object) -> None:
    raise BenchStopped(signum)


def stop_process(proc: subprocess.Popen[bytes], grace: float = 60.0) -> None:
    """TERM (pfednas then stops its Flower/Ray processes), KILL after ``grace`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
    finetune_epochs: int | None = None   # F of every method that can fine-tune (None: its own)
    tuning_seed: int | None = None       # never reported: `--tune` runs there
    tuning: Mapping[str, tuple[tuple[str, ...], ...]] = field(default_factory=dict)
    tuning_alpha: float | None = None    # the α of the tuning cells (None: the first α)
    # name -> (method, overrides): a method run with options of its own, reported as its own
    # row (the cells pass ``label=<name>``); not tuned: it runs the method's chosen values
    variants: Mapping[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)

    def base_of(self, name: str) -> str:
        """The registry method a bench method (a method or a variant) runs."""
        return self.variants[name][0] if name in self.variants else name

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], registry: Mapping[str, Any]) -> BenchPreset:
        methods = cfg["methods"]
        methods = list(registry) if methods == "all" else list(methods)
        variants = _variants(cfg.get("variants") or {}, registry)
        unknown = sorted(set(methods) - set(registry) - set(variants))
        unknown += sorted(set(cfg.get("method_overrides") or {}) - set(registry))
        if unknown:
            raise BenchError(f"unknown method(s) {', '.join(unknown)}; known: "
                             f"{', '.join(registry)}")
        if not methods or not cfg["alphas"] or not cfg["seeds"]:
            raise BenchError("bench.methods, bench.alphas and bench.seeds must not be empty")
        timeout = cfg.get("cell_timeout_s")
        name = str(cfg["name"])
        tuning = {str(m): tuple(tuple(str(o) for o in c) for c in configs)
                  for m, configs in (cfg.get("tuning") or {}).items()}
        tuning_seed, finetune = cfg.get("tuning_seed"), cfg.get("finetune_epochs")
        if tuning_seed is not None and int(tuning_seed) in {int(s) for s in cfg["seeds"]}:
            raise BenchError(f"bench.tuning_seed={tuning_seed} is one of the reported seeds "
                             f"{list(cfg['seeds'])}: tuning must use a seed that is never reported")
        if finetune is not None and (isinstance(finetune, bool) or int(finetune) < 0):
            raise BenchError(f"bench.finetune_epochs must be an integer >= 0, got {finetune!r}")
        counts = {len(c) for c in tuning.values()}
        if len(counts) > 1:
            raise BenchError("bench.tuning must try the same number of configurations per "
                             f"method, got {({m: len(c) for m, c in tuning.items()})}")
        unknown += sorted(set(tuning) - set(registry))
        if unknown:
            raise BenchError(f"unknown method(s) in bench.tuning: {', '.join(unknown)}")
        tuning_alpha = cfg.get("tuning_alpha")
        return cls(
            name=name, dataset=str(cfg["dataset"]), search_space=str(cfg["search_space"]),
            methods=tuple(methods), alphas=tuple(float(a) for a in cfg["alphas"]),
            seeds=tuple(int(s) for s in cfg["seeds"]),
            overrides=tuple(str(o) for o in cfg.get("overrides") or ()),
            method_overrides={str(m): tuple(str(o) for o in v)
                              for m, v in (cfg.get("method_overrides") or {}).items()},
            out=Path(str(cfg.get("out") or Path("outputs") / "bench" / name)),
            cell_timeout=None if timeout is None else float(timeout),
            tensorboard=bool(cfg.get("tensorboard", False)),
            finetune_epochs=None if finetune is None else int(finetune),
            tuning_seed=None if tuning_seed is None else int(tuning_seed), tuning=tuning,
            tuning_alpha=None if tuning_alpha is None else float(tuning_alpha),
            variants=variants)


VARIANT_NAME = re.compile(r"[a-z][a-z0-9_]*")


def _variants(cfg: Mapping[str, Any], registry: Mapping[str, Any]
              ) -> dict[str, tuple[str, tuple[str, ...]]]:
    out = {}
    for name, value in cfg.items():
        if not VARIANT_NAME.fullmatch(str(name)) or name in registry:
            raise BenchError(f"bench.variants: {name!r} must be a new lower-case name "
                             "([a-z][a-z0-9_]*), not a method's")
        if not isinstance(value, Mapping) or value.get("method") not in registry:
            raise BenchError(f"bench.variants.{name}: needs method: <one of "
                             f"{', '.join(registry)}> and overrides: [...]")
        out[str(name)] = (str(value["method"]),
                          tuple(str(o) for o in value.get("overrides") or ()))
    return out


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


def finetunes(method: str) -> bool:
    """Whether the method's config has a ``finetune_epochs`` option (the protocol's F)."""
    path = conf_dir() / "method" / f"{method}.yaml"
    return path.is_file() and "finetune_epochs" in OmegaConf.load(path)


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def cell_overrides(preset: BenchPreset, method: str, alpha: float, seed: int, space: str,
                   extra: Sequence[str], tried: Sequence[str] = ()) -> tuple[str, ...]:
    """A cell's overrides: what the bench selects, the shared budgets, the protocol's F,
    the method's own (its chosen values), a tuning configuration, and the command line."""
    # A tuning cell leaves out the method's chosen values of the keys its grid varies, so
    # that what it runs does not depend on what the tuning chose.
    tuned = {override_key(o) for config in preset.tuning.get(method, ()) for o in config} \
        if tried else set()
    own = [o for o in preset.method_overrides.get(method, ())
           if not o.startswith("search_space=") and override_key(o) not in tuned]
    tune = ([f"method.finetune_epochs={preset.finetune_epochs}"]
            if preset.finetune_epochs is not None and finetunes(method) else [])
    return (f"method={method}", f"dataset={preset.dataset}", f"search_space={space}",
            f"dataset.alpha={alpha:g}", f"seed={seed}", *preset.overrides, *tune, *own,
            *tried, *extra)


def cells(preset: BenchPreset, extra: Sequence[str], spaces: Mapping[str, tuple[str, ...]]
          ) -> list[Cell]:
    """Every (method, α, seed) run with its overrides: α and seed outermost, methods inside."""
    out = []
    for alpha in preset.alphas:
        for seed in preset.seeds:
            for method in preset.methods:
                base = preset.base_of(method)
                space = method_space(preset, base, spaces[base])
                own = ([*preset.variants[method][1], f"label={method}"]
                       if method in preset.variants else [])
                overrides = cell_overrides(preset, base, alpha, seed, space, [*own, *extra])
                path = preset.out / method / f"alpha={alpha:g}" / f"seed={seed}"
                out.append(Cell(method, alpha, seed, space, overrides, path))
    return out


def tuning_cells(preset: BenchPreset, extra: Sequence[str],
                 spaces: Mapping[str, tuple[str, ...]]) -> list[Cell]:
    """The tuning runs: each configuration of ``bench.tuning`` on the tuning seed, scored on
    the clients' validation splits (``eval_split=val``) so that no test split is touched; a
    method that selects on them is scored on the half it did not select on
    (:func:`pfednas.data.tuning_splits`)."""
    if preset.tuning_seed is None or not preset.tuning:
        raise BenchError(f"bench={preset.name} has no tuning_seed and tuning grid to run")
    alpha = preset.alphas[0] if preset.tuning_alpha is None else preset.tuning_alpha
    out = []
    for method in (m for m in preset.methods if m not in preset.variants):
        space = method_space(preset, method, spaces[method])
        for i, tried in enumerate(preset.tuning.get(method, ())):
            overrides = cell_overrides(preset, method, alpha, preset.tuning_seed, space,
                                       [*extra, "eval_split=val"], tried)
            path = preset.out / "tuning" / method / f"config={i}"
            out.append(Cell(method, alpha, preset.tuning_seed, space, overrides, path))
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


LOAD_SAMPLE_S = 10.0  # how often the 1-minute load average is read while a cell runs


def load_average() -> float:
    """The machine's 1-minute load average (NaN where the OS has none)."""
    try:
        return float(os.getloadavg()[0])
    except OSError:
        return math.nan


def source_commit() -> str:
    """The commit of the checkout the cells run from, ``+dirty`` with uncommitted changes
    (empty outside a git checkout)."""
    root = conf_dir().parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no", "--", "src", "strategies", "clients",
                                "conf"], check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""
    return head + ("+dirty" if dirty.strip() else "")


def wait_sampling_load(proc: subprocess.Popen[bytes], timeout: float | None,
                       loads: list[float]) -> int:
    """``proc.wait(timeout)``, reading the load average every ``LOAD_SAMPLE_S`` meanwhile."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        loads.append(load_average())
        step = LOAD_SAMPLE_S if deadline is None else min(LOAD_SAMPLE_S,
                                                          deadline - time.monotonic())
        try:
            return proc.wait(timeout=max(step, 0.0))
        except subprocess.TimeoutExpired:
            if deadline is not None and time.monotonic() >= deadline:
                raise


def cpu_capability() -> str:
    """The vector instruction set PyTorch's CPU kernels use here (``AVX512``, ``AVX2``, ...).

    Two machines with different ones train the same cell to different last bits from round 1
    (measured: PerFedRLNAS's round-1 losses apart in the third decimal), so a cell is
    bit-reproducible only on a machine with the same capability.
    """
    import torch  # already imported by the methods a bench runs

    return str(torch.backends.cpu.get_cpu_capability())


def cell_record(commit: str, loads: Sequence[float], seconds: float,
                code: int | str) -> dict[str, Any]:
    """What ``cell.json`` keeps beside a cell's results: the code it ran, the load it ran
    at (the report's ``load`` column), so that its wall time can be read, and the CPU
    capability its numerics depend on."""
    finite = [x for x in loads if math.isfinite(x)]
    return {"commit": commit, "returncode": code, "wall_seconds": round(seconds, 1),
            "load_mean": round(sum(finite) / len(finite), 2) if finite else None,
            "load_max": round(max(finite), 2) if finite else None,
            "load_samples": len(finite), "cpus": os.cpu_count(),
            "cpu_capability": cpu_capability()}


def compress_metrics(run_dir: Path) -> Path | None:
    """Replace a finished run's ``metrics.jsonl`` by ``metrics.jsonl.gz`` (the same lines;
    no file name or time in the gzip header, so the same records give the same bytes);
    ``None`` where the run has no ``metrics.jsonl``."""
    plain = run_dir / METRICS
    if not plain.is_file():
        return None
    packed, partial = run_dir / METRICS_GZ, run_dir / (METRICS_GZ + ".part")
    with plain.open("rb") as source, partial.open("wb") as sink, \
            gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=0) as archive:
        shutil.copyfileobj(source, archive)
    partial.replace(packed)
    plain.unlink()
    return packed


def run_cell(cell: Cell, timeout: float | None) -> dict[str, Any] | None:
    """Run one cell; ``None`` on success, else what ``FAILED.json`` records. Either way
    ``cell.json`` records the commit and the load while it ran. A finished cell's
    ``metrics.jsonl`` is kept compressed (:func:`compress_metrics`)."""
    cell.path.mkdir(parents=True, exist_ok=True)
    (cell.path / "FAILED.json").unlink(missing_ok=True)
    (cell.path / METRICS_GZ).unlink(missing_ok=True)  # a previous run's: this one writes its own
    log = cell.path / "bench.log"
    command = pfednas_command(cell)
    commit, start = source_commit(), time.perf_counter()
    loads: list[float] = []
    with log.open("w") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        try:
            code: int | str = wait_sampling_load(proc, timeout, loads)
        except subprocess.TimeoutExpired:
            stop_process(proc)
            code = f"timeout after {timeout:g}s"
        except BaseException:  # Ctrl-C or SIGTERM of the bench: the cell goes with it
            stop_process(proc)
            raise
    record = cell_record(commit, loads, time.perf_counter() - start, code)
    (cell.path / CELL_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    if code == 0 and (cell.path / "summary.json").is_file():
        compress_metrics(cell.path)
        return None
    return {"method": cell.method, "alpha": cell.alpha, "seed": cell.seed, "returncode": code,
            "command": command, "log": str(log), "error": log.read_text()[-3000:]}


def run_cells(todo: Sequence[Cell], timeout: float | None) -> list[dict[str, Any]]:
    """Run the cells not done yet, in order; the failures (each also left as FAILED.json)."""
    failed: list[dict[str, Any]] = []
    for i, cell in enumerate(todo, start=1):
        label = f"[pfednas bench] {i}/{len(todo)} {cell.method} α={cell.alpha:g} seed={cell.seed}"
        if cell_done(cell):
            print(f"{label}: done before, skipped", flush=True)
            continue
        start = time.perf_counter()
        problem = run_cell(cell, timeout)
        seconds = time.perf_counter() - start
        if problem is None:
            print(f"{label}: finished in {seconds:.0f}s", flush=True)
            continue
        (cell.path / "FAILED.json").write_text(json.dumps(problem, indent=2))
        failed.append({**problem, "path": str(cell.path)})
        print(f"{label}: FAILED ({problem['returncode']}) after {seconds:.0f}s; see "
              f"{problem['log']}", flush=True)
    return failed


def run_bench(preset: BenchPreset, extra: Sequence[str], *, dry_run: bool = False,
              tune: bool = False) -> int:
    from pfednas.methods import METHODS
    from pfednas.report.cli import build_report

    spaces = {m: METHODS[m].spaces for m in map(preset.base_of, preset.methods)}
    todo = tuning_cells(preset, extra, spaces) if tune else cells(preset, extra, spaces)
    if dry_run:
        for cell in todo:
            print(" ".join(pfednas_command(cell)))
        return 0
    previous = signal.signal(signal.SIGTERM, _stop_on_term)
    try:
        failed = run_cells(todo, preset.cell_timeout)
    except (BenchStopped, KeyboardInterrupt):
        print("[pfednas bench] stopped: the running cell was stopped, finished cells are kept; "
              "the same command resumes", file=sys.stderr, flush=True)
        return EXIT_STOPPED
    finally:
        signal.signal(signal.SIGTERM, previous)
    if tune:
        path = write_tuning_table(preset, todo)
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


def tuned_overrides(preset: BenchPreset, cell: Cell) -> list[str]:
    """The configuration a tuning cell tried (its overrides beyond the preset's)."""
    index = int(cell.path.name.split("=", 1)[1])
    return list(preset.tuning[cell.method][index])


def write_tuning_table(preset: BenchPreset, todo: Sequence[Cell]) -> Path:
    """``<out>/tuning/tuning.md``: every configuration tried per method, its validation
    accuracy on the tuning seed, and the best one per method (marked)."""
    lines = [f"# Tuning of bench={preset.name}", "",
             f"Seed {preset.tuning_seed} (never reported), α = {todo[0].alpha:g} , "
             f"{len(next(iter(preset.tuning.values())))} configurations per method; score = mean "
             "personalized accuracy on the clients' **validation** splits (`eval_split=val`; "
             "a method that selects on them, on the half it did not select on). "
             "Chosen (★) = highest score; the preset's `method_overrides` hold the chosen values.",
             "", "| method | configuration | val acc (mean ± std clients) | chosen |",
             "|---|---|---|---|"]
    by_method: dict[str, list[tuple[Cell, dict[str, Any] | None]]] = {}
    for cell in todo:
        path = cell.path / "summary.json"
        summary = json.loads(path.read_text()) if path.is_file() else None
        by_method.setdefault(cell.method, []).append((cell, summary))
    for method, runs in by_method.items():
        scores = [s["personalized_acc_mean"] if s else -1.0 for _, s in runs]
        best = max(range(len(runs)), key=lambda i: scores[i])
        for i, (cell, summary) in enumerate(runs):
            tried = " ".join(tuned_overrides(preset, cell)) or "(preset values)"
            score = (f"{summary['personalized_acc_mean']:.4f} ± "
                     f"{summary['personalized_acc_std']:.4f}") if summary else "failed"
            lines.append(f"| {method} | `{tried}` | {score} | {'★' if i == best else ''} |")
    out = preset.out / "tuning" / "tuning.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out


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
    parser.add_argument("--tune", action="store_true",
                        help="run the preset's tuning grid on its tuning seed (validation split) "
                             "and write <out>/tuning/tuning.md")
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
        return run_bench(preset, extra, dry_run=args.dry_run, tune=args.tune)
    except BenchError as err:
        print(f"pfednas bench: error: {err}", file=sys.stderr)
        return EXIT_CONFIG
