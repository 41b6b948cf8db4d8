"""The bench's presets and cells: what ``pfednas bench`` runs, and whether a cell is done.

A preset (``conf/bench/<name>.yaml``) names the methods, α's and seeds; each
(method, α, seed) is a :class:`Cell` with the overrides of its ``pfednas`` run.
A cell is done when its run's saved ``resolved_config.yaml`` is the configuration
its overrides compose now (:func:`stale_keys`): a changed default makes it stale
as surely as a changed override.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pfednas.config import (
    RESOLVED_CONFIG,
    RUN_KEYS_NOT_COMPARED,
    YAML_LOADER,
    compose,
    conf_dir,
    saved_config_values,
)

# Selected by the bench for every cell; passing them as plain overrides is an error.
BENCH_OWNED = ("method", "dataset", "search_space", "seed", "dataset.alpha")
# Top-level keys of a run's config that do not change its results: a cell whose saved
# config differs only in them is done.
KEYS_NOT_COMPARED = (*RUN_KEYS_NOT_COMPARED, "checkpoint_every", "label")


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
    finetune_epochs: int | None = None   # F of every method that can fine-tune (None: its own)
    tuning_seed: int | None = None       # never reported: `--tune` runs there
    tuning: Mapping[str, tuple[tuple[str, ...], ...]] = field(default_factory=dict)
    tuning_alpha: float | None = None    # the α of the tuning cells (None: the first α)
    # what the tuning cells score: val (each method on what it does not select on: a method
    # that selects on validation data on half of it, the others on all of it) | val_half
    # (every method on the same half: the second-round protocol)
    tuning_split: str = "val"
    # name -> (method, overrides): a method run with options of its own, reported as its own
    # row (the cells pass ``label=<name>``); not tuned: it runs the method's chosen values
    variants: Mapping[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    # how many cells run side by side (each its own `pfednas` process): 1 = one after another
    cells_at_once: int = 1
    # with a CUDA GPU: a cell's share of its memory (MiB); no more cells run at once than the
    # GPU's free memory at the bench's start holds (None: cells_at_once alone decides)
    cell_gpu_mib: int | None = None

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
        tuning_split = str(cfg.get("tuning_split", "val"))
        if tuning_split not in ("val", "val_half"):
            raise BenchError(f"bench.tuning_split must be val|val_half, got {tuning_split!r}")
        at_once, gpu_mib = cfg.get("cells_at_once", cls.cells_at_once), cfg.get(
            "cell_gpu_mib", cls.cell_gpu_mib)
        if isinstance(at_once, bool) or not isinstance(at_once, int) or at_once < 1:
            raise BenchError(f"bench.cells_at_once must be an integer >= 1, got {at_once!r}")
        if gpu_mib is not None and (isinstance(gpu_mib, bool) or not isinstance(gpu_mib, int)
                                    or gpu_mib < 1):
            raise BenchError(f"bench.cell_gpu_mib must be an integer >= 1 (MiB) or null, got "
                             f"{gpu_mib!r}")
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
            tuning_split=tuning_split, variants=variants, cells_at_once=at_once,
            cell_gpu_mib=gpu_mib)


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
    """Whether the method has a ``finetune_epochs`` option (the protocol's F)."""
    from pfednas.options import OPTIONS, defaults

    return method in OPTIONS and "finetune_epochs" in defaults(method)


def scope_tuned(method: str) -> bool:
    """Whether the method's fine-tuning scope (``finetune_scope``: full | head) is in its
    tuning grid: each tuning run scores both (``federation.finetune_both``)."""
    from pfednas.options import OPTIONS, defaults

    return method in OPTIONS and "finetune_scope" in defaults(method)


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def cell_overrides(preset: BenchPreset, method: str, alpha: float, seed: int, space: str,
                   extra: Sequence[str], tried: Sequence[str] = ()) -> tuple[str, ...]:
    """A cell's overrides: what the bench selects, the shared budgets, the protocol's F,
    the method's own (its chosen values), a tuning configuration, and the command line."""
    # A tuning cell (and a reported cell given its method's choice) leaves out the method's
    # own values of the keys its grid varies, so that what it runs does not depend on them.
    tuned = {override_key(o) for config in preset.tuning.get(method, ()) for o in config} \
        if tried else set()
    own = [o for o in preset.method_overrides.get(method, ())
           if not o.startswith("search_space=") and override_key(o) not in tuned]
    tune = ([f"method.finetune_epochs={preset.finetune_epochs}"]
            if preset.finetune_epochs is not None and finetunes(method) else [])
    return (f"method={method}", f"dataset={preset.dataset}", f"search_space={space}",
            f"dataset.alpha={alpha:g}", f"seed={seed}", *preset.overrides, *tune, *own,
            *tried, *extra)


def cells(preset: BenchPreset, extra: Sequence[str], spaces: Mapping[str, tuple[str, ...]],
          chosen: Mapping[str, Sequence[str]] | None = None) -> list[Cell]:
    """Every (method, α, seed) run with its overrides: α and seed outermost, methods inside.
    ``chosen``: method → what its tuning chose (:func:`pfednas.bench.tuning.chosen_overrides`),
    in place of the method's own values of the keys its grid varies."""
    out = []
    for alpha in preset.alphas:
        for seed in preset.seeds:
            for method in preset.methods:
                base = preset.base_of(method)
                space = method_space(preset, base, spaces[base])
                own = ([*preset.variants[method][1], f"label={method}"]
                       if method in preset.variants else [])
                overrides = cell_overrides(preset, base, alpha, seed, space, [*own, *extra],
                                           tuple((chosen or {}).get(base, ())))
                path = preset.out / method / f"alpha={alpha:g}" / f"seed={seed}"
                out.append(Cell(method, alpha, seed, space, overrides, path))
    return out


def tuning_cells(preset: BenchPreset, extra: Sequence[str],
                 spaces: Mapping[str, tuple[str, ...]]) -> list[Cell]:
    """The tuning runs: each configuration of ``bench.tuning`` on the tuning seed, scored on
    the clients' validation splits (``eval_split=val``) so that no test split is touched; a
    method that selects on them is scored on the half it did not select on
    (:func:`pfednas.data.tuning_splits`); with ``tuning_split: val_half`` every method is
    scored on that half. A tuning run fine-tunes only at its end
    (``federation.eval_finetune=final``): its one figure used is its final score, which
    fine-tuned evaluations along the way do not change (tests/test_inprocess.py), and on
    Fashion-MNIST they cost up to 8x the training (FedNAS: 1,422 s against 700 s)."""
    if preset.tuning_seed is None or not preset.tuning:
        raise BenchError(f"bench={preset.name} has no tuning_seed and tuning grid to run")
    alpha = preset.alphas[0] if preset.tuning_alpha is None else preset.tuning_alpha
    out = []
    for method in (m for m in preset.methods if m not in preset.variants):
        space = method_space(preset, method, spaces[method])
        for i, tried in enumerate(preset.tuning.get(method, ())):
            both = ["federation.finetune_both=true"] if scope_tuned(method) else []
            overrides = cell_overrides(preset, method, alpha, preset.tuning_seed, space,
                                       [*both, "federation.eval_finetune=final", *extra,
                                        f"eval_split={preset.tuning_split}"],
                                       tried)
            path = preset.out / "tuning" / method / f"config={i}"
            out.append(Cell(method, alpha, preset.tuning_seed, space, overrides, path))
    return out


def resolved_values(cfg: DictConfig | ListConfig) -> dict[str, Any]:
    """A configuration's values as its YAML file holds them, interpolations resolved."""
    value = yaml.load(OmegaConf.to_yaml(cfg, resolve=True), Loader=YAML_LOADER)
    return value if isinstance(value, dict) else {}

def composed_values(overrides: Sequence[str]) -> dict[str, Any]:
    """``resolved_values(compose(overrides))``, kept for the next page that checks the cell
    (a copy is returned); :func:`pfednas.config.compose` shares one Hydra composition between
    the cells that choose the same groups."""
    from pfednas.methods import METHODS

    return copy.deepcopy(_composed_values(tuple(overrides), tuple(METHODS)))


@lru_cache(maxsize=1024)
def _composed_values(overrides: tuple[str, ...], methods: tuple[str, ...]) -> dict[str, Any]:
    """:func:`composed_values`, kept per ``methods`` registered (one (un)registered since:
    composed anew)."""
    return resolved_values(compose(overrides))


def config_differences(now: Mapping[str, Any], before: Mapping[str, Any],
                       prefix: str = "") -> list[str]:
    """The dotted keys whose values differ (a key on one side only differs), sorted."""
    out: list[str] = []
    for key in sorted(set(now) | set(before), key=str):
        a, b = now.get(key), before.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif key not in now or key not in before or a != b:
            out.append(f"{prefix}{key}")
    return out


# Options that moved or left without changing any result (issue 44, each proven by re-running
# committed cells bit for bit): a cell's saved config is read through these before it is
# compared. Retired switches count only at the value the code now always has.
RETIRED = {("method", "budget_reward"): 0.0, ("method", "personal_bn"): False}
# HardwareSpread() as every cell before issue 44 ran it
HARDWARE_DEFAULTS = {"speed_low": 1.0, "speed_high": 4.0, "bandwidth_mbps_low": 100.0,
                     "bandwidth_mbps_high": 100.0, "memory_low": 0.25, "memory_high": 1.0,
                     "memory_budgets": True, "macs_per_second": 1.0e9}

# hardware options added since (issue 60), at the values every earlier cell ran with
ADDED_HARDWARE_DEFAULTS = {"memory_distribution": "uniform",
                           "memory_levels": [1.0, 0.5, 0.25, 0.125, 0.0625],
                           "memory_level_shares": None, "speed_follows_memory": False}
# federation options added since (issues 61, 63) at the values every earlier cell ran with:
# each method's own mean (null is the mean in a simulation), Flower's trim fraction, and a
# deployment's nodes claiming their profiles (a simulation draws them whatever it says)
ADDED_FEDERATION_DEFAULTS = {"aggregation": None, "trim_fraction": 0.2, "profiles": "nodes"}
# search-space options added since (issue 60): a fixed stem and head, as before
ADDED_SPACE_DEFAULTS = {"mobilenetv3": {"stem_mults": [1.0], "head_mults": [1.0]}}
# method options added since (issue 62) at the value every earlier cell ran: no in-place
# distillation, for the methods that have the option
ADDED_METHOD_DEFAULTS = {"sandwich_students": 0}


# Dataset options added since (issue 46) at the values that deal the data as every earlier
# cell had it: the Dirichlet partitioner, no feature skew (same partitions, proven by hash).
ADDED_DATASET_KEYS = ("partitioner", "classes_per_client", "shards_per_client", "shard_size",
                      "sizes", "size_alpha", "natural_id", "feature_skew")


def _added_dataset_defaults() -> dict[str, Any]:
    from pfednas.data import DatasetOptions

    defaults = dataclasses.asdict(DatasetOptions())
    return {k: defaults[k] for k in ADDED_DATASET_KEYS}


def _added_method_defaults(method: str) -> dict[str, Any]:
    from pfednas.options import OPTIONS, defaults

    if method not in OPTIONS:
        return {}
    own = defaults(method)
    return {k: v for k, v in ADDED_METHOD_DEFAULTS.items() if k in own}


def migrated(saved: Mapping[str, Any]) -> dict[str, Any]:
    """A saved config in today's keys: PerFedRLNAS's ``method.hardware`` and HAPFNAS's
    ``method.budget.{low,high}`` are ``federation.hardware`` (a baseline's ``fits_all`` used
    its defaults), ``method.budget.metric`` is ``method.budget_metric``, a retired switch
    at its only value now is gone, the dataset options added since take the values that
    deal the data as it was (``ADDED_DATASET_KEYS``), and a tuning run's
    ``method.train_on_val_when_final`` is false, as it ran."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in saved.items()}
    if isinstance(out.get("dataset"), dict) and "partitioner" not in out["dataset"]:
        out["dataset"] = {**_added_dataset_defaults(), **out["dataset"]}
    if isinstance(out.get("method"), dict) and tuning_run(out) \
            and out["method"].get("train_on_val_when_final") is True:
        # SPIDER's / Ditto's tuning runs before issue 45 switched it off at run time while
        # their config said true: as they ran
        out["method"]["train_on_val_when_final"] = False
    space = out.get("search_space")
    if isinstance(space, dict):
        out["search_space"] = {**ADDED_SPACE_DEFAULTS.get(str(space.get("name")), {}), **space}
    method, federation = out.get("method"), out.get("federation")
    if isinstance(method, dict):
        out["method"] = method = {**_added_method_defaults(str(method.get("name"))), **method}
    if isinstance(federation, dict):
        out["federation"] = federation = {**ADDED_FEDERATION_DEFAULTS, **federation}
    if isinstance(federation, dict) and isinstance(federation.get("hardware"), Mapping):
        federation["hardware"] = {**ADDED_HARDWARE_DEFAULTS, **federation["hardware"]}
    if not isinstance(method, dict) or not isinstance(federation, dict) \
            or "hardware" in federation:
        return out
    hardware = {**HARDWARE_DEFAULTS, **ADDED_HARDWARE_DEFAULTS}
    hardware.update(method.pop("hardware", None) or {})
    budget = method.pop("budget", None)
    if isinstance(budget, Mapping):
        hardware.update(memory_low=budget.get("low", hardware["memory_low"]),
                        memory_high=budget.get("high", hardware["memory_high"]))
        method["budget_metric"] = budget.get("metric", "memory")
    federation["hardware"] = hardware
    for (group, key), value in RETIRED.items():
        if out.get(group, {}).get(key, value) == value:
            out[group].pop(key, None)
    return out


def stale_keys(cell: Cell) -> list[str] | None:
    """Why a cell with a ``summary.json`` must run again: the keys in which its saved
    ``resolved_config.yaml`` differs from what its overrides compose now, an option added
    since it ran marked `` (new)`` (``[]``: the cell is done); ``None`` where it has no
    summary (it never finished)."""
    if not (cell.path / "summary.json").is_file():
        return None
    saved = cell.path / RESOLVED_CONFIG
    if not saved.is_file():
        return [f"{RESOLVED_CONFIG} (missing)"]
    try:
        stat = saved.stat()
        before = migrated(_saved_values(saved, stat.st_mtime_ns, stat.st_size))
    except (OSError, ValueError, OmegaConfBaseException, yaml.YAMLError) as err:
        return [f"{RESOLVED_CONFIG} (unreadable: {type(err).__name__})"]
    try:
        now = composed_values(cell.overrides)
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        return [f"the overrides (they no longer compose: {type(err).__name__})"]
    return [k + _presence(k, now, before) for k in config_differences(now, before)
            if k.split(".", 1)[0] not in KEYS_NOT_COMPARED
            and not (k in NOT_COMPARED_WHEN and NOT_COMPARED_WHEN[k](now)
                     and NOT_COMPARED_WHEN[k](before))]


@lru_cache(maxsize=1024)
def _saved_values(path: Path, mtime_ns: int, size: int) -> dict[str, Any]:
    """A saved ``resolved_config.yaml``'s values, read once while the file is unchanged (a
    results page reads each cell's for every page and preset that shows it); a copy is
    migrated, never the cached dict."""
    values = saved_config_values(path, resolve=True)
    return values if isinstance(values, dict) else {}


def tuning_run(config: Mapping[str, Any]) -> bool:
    """Whether a run is a tuning run (scored on validation data, ``eval_split`` other than
    test): its one figure used is its final score, which fine-tuned evaluations along the way
    do not change (tests/test_inprocess.py), so ``federation.eval_finetune`` does not make it
    stale."""
    return config.get("eval_split", "test") != "test"


def scored_both(config: Mapping[str, Any]) -> bool:
    """Whether a run scores every fine-tuning scope (``federation.finetune_both``, as tuning
    runs do): it records each scope's accuracy, so ``method.finetune_scope``, which only
    names the one its headline figure shows, does not make it stale."""
    federation = config.get("federation")
    return isinstance(federation, Mapping) and federation.get("finetune_both") is True


def scores_val_half(config: Mapping[str, Any]) -> bool:
    """Whether a tuning run scores every client on the half of its validation split that
    :func:`pfednas.data.tuning_splits` sets aside: ``eval_split=val_half``, or ``val`` for a
    method that selects on validation data, which is scored on that half alone
    (:func:`pfednas.app.client_app.evaluation_split`). Between two such runs ``eval_split``
    changes nothing."""
    from pfednas.methods import METHODS

    split, method = config.get("eval_split", "test"), config.get("method")
    name = str(method.get("name")) if isinstance(method, Mapping) else ""
    return split == "val_half" or (split == "val" and name in METHODS
                                   and METHODS[name].selects_on_val)


# Keys that do not change what a run of a kind gives, so not compared when both the saved
# and today's configuration are of that kind.
NOT_COMPARED_WHEN = {"method.finetune_scope": scored_both,
                     "federation.eval_finetune": tuning_run,
                     "eval_split": scores_val_half}


def _presence(key: str, now: Mapping[str, Any], before: Mapping[str, Any]) -> str:
    """`` (new)`` for a key the run's config lacks, `` (gone)`` for one it alone has."""
    def has(values: Any) -> bool:
        for part in key.split("."):
            if not isinstance(values, Mapping) or part not in values:
                return False
            values = values[part]
        return True

    return "" if has(now) == has(before) else " (new)" if has(now) else " (gone)"


def cell_done(cell: Cell) -> bool:
    """Whether the cell finished, exit code 0 (its ``cell.json``), with the configuration it
    would run now; a stale one's summary is removed (so it runs again) and the keys that
    differ are printed. A run that wrote its summary and then failed (clients missing from
    its final evaluation), or was stopped before its record, is not done."""
    if (cell.path / "summary.json").is_file() and not succeeded(cell.path):
        print(f"[pfednas bench] {cell.path}: its run did not finish with exit code 0; "
              "running again", flush=True)
        (cell.path / "summary.json").unlink()
        return False
    differ = stale_keys(cell)
    if not differ:
        return differ is not None
    print(f"[pfednas bench] {cell.path}: its run's config differs in {', '.join(differ)}; "
          "running again", flush=True)
    (cell.path / "summary.json").unlink()
    return False


def succeeded(folder: Path) -> bool:
    """Whether the bench's record of the cell in ``folder`` says its run exited with 0."""
    try:
        record = json.loads((folder / "cell.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("returncode") == 0


def pfednas_command(cell: Cell) -> list[str]:
    executable = Path(sys.executable).parent / "pfednas"
    return [str(executable), *cell.overrides, f"hydra.run.dir='{cell.path.resolve()}'"]


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
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    # a setting the preset leaves at its default (no line in its file) is set all the same
    optional = {f"bench.{f.name}" for f in dataclasses.fields(BenchPreset)
                if (f.default, f.default_factory) != (dataclasses.MISSING, dataclasses.MISSING)}
    overrides = [f"++{o}" if o.split("=", 1)[0] in optional else o for o in overrides]
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
            cfg = hydra_compose(config_name="config", overrides=[f"+bench={preset}", *overrides])
        value = OmegaConf.to_container(cfg.bench, resolve=True)
    except (HydraException, OmegaConfBaseException) as err:
        raise BenchError(f"bench={preset}: " + " ".join(str(err).split())) from err
    if not isinstance(value, dict):
        raise BenchError(f"bench={preset} is not a mapping")
    return {str(k): v for k, v in value.items()}

