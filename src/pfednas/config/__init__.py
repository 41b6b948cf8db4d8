"""One config source for the CLI, the ServerApp and the ClientApp.

The `pfednas` command composes the Hydra config from ``conf/`` (installed as the
package ``pfednas.conf``) and hands its *overrides* to the Flower run through
run-config; the ServerApp and ClientApp compose the identical config from the
same files with :func:`compose`. The rest of the code never sees the
``DictConfig``: it gets the typed, validated values built here.

The typed values are in :mod:`pfednas.settings`, the checks in :mod:`pfednas.config.checks`;
both are re-exported here, where the rest of the code imports them from.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import os
import sys
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pfednas.config.checks import (
    NON_FINITE_ALLOWED,
    as_dict,
    build_federation,
    build_typed,
    check_client_examples,
    check_finite,
    check_number,
    check_ray_address,
    non_finite_values,
    omegaconf_message,
    space_for_dataset,
    validate_federation,
)
from pfednas.data import DataSpec, validate_spec
from pfednas.data.spec import sizing_names
from pfednas.settings import (
    EVAL_SPLITS,
    ConfigError,
    Federation,
    RunSettings,
    describe,
    task_shape,
)

__all__ = [
    "CHECKPOINT_FILE", "DATA_ROOT_ENV", "DEFAULT_OUTPUT_BASE", "EVAL_SPLITS", "NODE_KEYS_ENV",
    "NON_FINITE_ALLOWED", "OUTPUT_BASE_ENV", "RESOLVED_CONFIG", "RUN_KEYS_NOT_COMPARED",
    "SERVERAPP_PID_FILE", "SIMULATION_ENV", "ConfigError", "Federation", "RunSettings",
    "check_client_examples", "check_finite", "check_ray_address", "check_resumable", "compose",
    "conf_dir", "data_spec_from_cfg", "describe", "in_simulation", "method_configs",
    "non_finite_values", "omegaconf_message", "output_base", "overrides_from_json",
    "overrides_to_json", "remove_method_configs", "settings_from_cfg", "space_for_dataset",
    "store_method_configs", "task_shape", "validate_federation",
]

CHECKPOINT_FILE = "checkpoint.npz"
SERVERAPP_PID_FILE = "serverapp.pid"  # in <output>/logs/, written by the ServerApp
# Set by whoever starts the SuperLink side (the operator), never by the run config:
SIMULATION_ENV = "PFEDNAS_SIMULATION"     # "1": a `pfednas` simulation (launcher.py)
OUTPUT_BASE_ENV = "PFEDNAS_OUTPUT_BASE"   # deployment: the ServerApp writes only below it
DEFAULT_OUTPUT_BASE = "outputs"           # deployment without PFEDNAS_OUTPUT_BASE: ./outputs
DATA_ROOT_ENV = "PFEDNAS_DATA_ROOT"       # deployment: the dataset folder the ServerApp reads
NODE_KEYS_ENV = "PFEDNAS_NODE_KEYS"       # deployment: node-<id>.pub pinning client ids to keys


def in_simulation(grid: object | None = None) -> bool:
    """Whether this process runs a simulation, not a deployment: the server draws the
    clients' hardware profiles, clients read their partition by ``partition-id``, and the
    run config names the folders.

    * a `pfednas` simulation: ``$PFEDNAS_SIMULATION=1`` (set by the launcher where the
      SuperLink starts, and by the in-process runner);
    * Flower's Simulation Runtime (``flwr run`` on a simulation SuperLink, without the
      launcher): the ServerApp's ``grid`` is Flower's in-memory grid; a ClientApp (called
      without a grid) runs in an actor of the runtime's Ray.

    Neither is in the hands of whoever submits a run: a deployment's ServerApp talks to its
    SuperLink through another grid, and a node runs its ClientApp in a process of its own.
    """
    if os.environ.get(SIMULATION_ENV, "") == "1":
        return True
    if grid is not None:
        from flwr.superlink.grid import InMemoryGrid

        return isinstance(grid, InMemoryGrid)
    ray = sys.modules.get("ray")  # imported by the runtime's actors, never by a node's ClientApp
    return bool(ray is not None and ray.is_initialized()
                and ray.get_runtime_context().get_actor_id() is not None)


def output_base() -> Path:
    """The folder a deployment's ServerApp writes below: ``$PFEDNAS_OUTPUT_BASE``, else
    ``./outputs`` of the ServerApp process (absolute, symbolic links resolved)."""
    base = os.environ.get(OUTPUT_BASE_ENV, "").strip() or DEFAULT_OUTPUT_BASE
    return Path(base).expanduser().resolve()


def conf_dir() -> Path:
    """Directory holding ``config.yaml`` and the config groups. Every caller composes from
    it, so the typed schemas (the methods' configs, :mod:`pfednas.options`; the federation's
    and the datasets', which their YAML files extend) are registered in Hydra's ConfigStore
    here first."""
    _register_schemas()
    return Path(str(resources.files("pfednas.conf")))


@lru_cache(maxsize=1)
def _register_schemas() -> None:
    """Every typed group's schema in Hydra's ConfigStore: the methods' (``method/<name>``, or
    ``method/<name>_defaults`` for a YAML of its own to extend), the federation's and the
    datasets'."""
    from hydra.core.config_store import ConfigStore

    from pfednas.data import DatasetOptions
    from pfednas.options import SCHEMA_SUFFIX, register_schemas, writable

    methods = Path(str(resources.files("pfednas.conf"))) / "method"
    register_schemas(extended={p.stem for p in methods.glob("*.yaml")})
    store = ConfigStore.instance()
    for group, cls in (("federation", Federation), ("dataset", DatasetOptions)):
        store.store(group=group, name=group + SCHEMA_SUFFIX,
                    node=writable(OmegaConf.structured(cls)))


def method_configs() -> set[str]:
    """The names the ``method`` config group holds: its YAML files and its stored nodes."""
    from hydra.core.config_store import ConfigStore

    conf = conf_dir()
    stored = ConfigStore.instance().repo.get("method", {})
    return ({p.stem for p in (conf / "method").glob("*.yaml")}
            | {name.removesuffix(".yaml") for name in stored})


def store_method_configs(nodes: dict[str, Any]) -> None:
    """A registered method's nodes (name → node) in the ``method`` config group, beside the
    package's own (:func:`pfednas.methods.register`); compositions are composed afresh."""
    from hydra.core.config_store import ConfigStore

    conf_dir()  # the package's own schemas first
    store = ConfigStore.instance()
    for name, node in nodes.items():
        store.store(group="method", name=name, node=node)
    _compose_cached.cache_clear()


def remove_method_configs(names: list[str]) -> None:
    """Those nodes of the ``method`` group gone (:func:`pfednas.methods.unregister`), and any
    composition that used them."""
    from hydra.core.config_store import ConfigStore

    stored = ConfigStore.instance().repo.get("method", {})
    for name in names:
        stored.pop(f"{name}.yaml", None)
    _compose_cached.cache_clear()


def compose(overrides: tuple[str, ...] | list[str] = ()) -> DictConfig:
    """Compose ``conf/config.yaml`` with Hydra overrides, outside ``hydra.main``.

    The config groups chosen (``method=...``, ``dataset=...``) are composed by Hydra once
    (~0.2 s each, cached); the values (``federation.lr=0.1``) are then set on a copy by
    Hydra's own step for them, as its composition sets them after the groups. A results page
    checks hundreds of cells that share a handful of group choices
    (tests/test_compose_split.py holds the two ways equal)."""
    groups, values = split_overrides(tuple(overrides))
    composed = _compose_cached(groups)
    if not values:
        return composed.copy()
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = copy.deepcopy(composed)
    ConfigLoaderImpl._apply_overrides_to_config(
        OverridesParser.create().parse_overrides(list(values)), cfg)
    return cfg


def split_overrides(overrides: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``overrides`` as (those Hydra's composition must see, plain values set after it), each
    in its order. A value is ``[+|++|~]key=...`` whose key is no config group's name (as
    Hydra tells them: ``federation=...`` chooses a group, ``federation.lr=...`` sets a value),
    does not start with ``hydra`` and holds no ``/`` nor ``@`` (a group's path, a package);
    anything else is composed, which is always right, only slower."""
    groups = config_groups()
    composed: list[str] = []
    values: list[str] = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        plain = ("=" in override and not set(key) & set("/@ ")
                 and key not in groups and not key.startswith("hydra"))
        (values if plain else composed).append(override)
    return tuple(composed), tuple(values)


def config_groups() -> set[str]:
    """The top-level config groups: ``conf/``'s folders and the ConfigStore's groups."""
    from hydra.core.config_store import ConfigStore

    conf = conf_dir()
    return ({p.name for p in conf.iterdir() if p.is_dir()}
            | {k for k, v in ConfigStore.instance().repo.items() if isinstance(v, dict)})


@lru_cache(maxsize=64)
def _compose_cached(overrides: tuple[str, ...]) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        cfg = hydra_compose(config_name="config", overrides=list(overrides))
    return cfg


def overrides_to_json(overrides: list[str] | tuple[str, ...]) -> str:
    return json.dumps(list(overrides))


def overrides_from_json(text: str) -> tuple[str, ...]:
    value = json.loads(text or "[]")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"run-config 'overrides' must be a JSON list of strings, got {text!r}")
    return tuple(value)


def _check_method(name: Any, options: dict[str, Any], fed: Federation, space: str) -> Any:
    """Known method, and its typed options build: bad values fail before anything starts."""
    from pfednas.options import check_method

    try:
        return check_method(name, options, fed, space)
    except ValueError as err:
        raise ConfigError(str(err)) from err


def _check_method_data(typed: Any, spec: DataSpec) -> None:
    """A method's check of what it needs from the data (e.g. HAPFNAS's unheld samples)."""
    from pfednas.options import check_method_data

    try:
        check_method_data(typed, spec)
    except ValueError as err:
        raise ConfigError(str(err)) from err


RUN_KEYS_NOT_COMPARED = ("resume", "progress", "tensorboard", "output_dir", "hydra")
RESOLVED_CONFIG = "resolved_config.yaml"  # the run's composed config, in its output folder

# libyaml's safe loader where PyYAML was built with it (the same values, ~10-20x faster)
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def saved_config_values(path: Path, *, resolve: bool) -> Any:
    """A config file pfednas saved (``resolved_config.yaml``, Hydra's ``config.yaml``) as
    plain values: ``OmegaConf.to_container(OmegaConf.load(path), resolve=resolve)``, read
    by libyaml where the file has no interpolation (the same values for every committed
    bench cell's files; 0.7 s for the 413 of them against 13.4 s)."""
    text = path.read_text()
    if "${" in text:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=resolve)
    return yaml.load(text, Loader=YAML_LOADER)


def check_resumable(cfg: DictConfig, run_dir: Path) -> None:
    """A run can be resumed only with its checkpoint and its own configuration."""
    if not (run_dir / CHECKPOINT_FILE).is_file():
        raise ConfigError(f"resume={run_dir}: no {CHECKPOINT_FILE} in that directory")
    saved_path = run_dir / RESOLVED_CONFIG
    if not saved_path.is_file():
        raise ConfigError(f"resume={run_dir}: no {RESOLVED_CONFIG} in that directory (the run's "
                          "own config, which a resume must match)")
    try:
        saved = OmegaConf.load(saved_path)
        before = as_dict(saved)
    except (OSError, ValueError, ConfigError, OmegaConfBaseException, yaml.YAMLError) as err:
        problem = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"resume={run_dir}: {RESOLVED_CONFIG} is not a readable config "
                          f"({problem})") from err
    now = as_dict(cfg)
    differ = sorted(k for k in set(now) | set(before)
                    if k not in RUN_KEYS_NOT_COMPARED and now.get(k) != before.get(k))
    if differ:
        raise ConfigError(f"resume={run_dir}: the config differs from that run's in "
                          f"{', '.join(differ)}; pass the same overrides as the original run")


def data_spec_from_cfg(cfg: DictConfig, fed: Federation | None = None) -> DataSpec:
    """The checked data spec of ``cfg`` alone (no search space, no PyTorch): what reads a
    run's partitions back (``pfednas predict --run``)."""
    if fed is None:
        fed = build_federation(as_dict(cfg.federation))
    seed = cfg.get("seed")
    check_number("", "seed", seed, kind=int, low=0)
    data_values = as_dict(cfg.dataset)
    data_values.update(num_clients=fed.num_clients, seed=seed)
    spec = build_typed(DataSpec, data_values, "dataset")
    try:
        validate_spec(spec)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    return spec


def settings_from_cfg(cfg: DictConfig) -> RunSettings:
    """Build and validate the typed settings; raises :class:`ConfigError`."""
    check_finite(cfg)
    method = as_dict(cfg.method)
    name = method.pop("name", None)
    fed = build_federation(as_dict(cfg.federation))
    validate_federation(fed)
    seed = cfg.get("seed")
    spec = data_spec_from_cfg(cfg, fed)
    typed = _check_method(name, method, fed, str(cfg.search_space.get("name")))
    _check_method_data(typed, spec)
    if fed.weighting is None:  # the method's paper rule
        from pfednas.options.facts import FACTS

        fed = dataclasses.replace(fed, weighting=FACTS[name].weighting)
    from pfednas.search import SpaceConfig

    try:
        space = SpaceConfig.of(space_for_dataset(as_dict(cfg.search_space), sizing_names(spec)))
        built = space.build()
    except (TypeError, ValueError) as err:
        raise ConfigError(f"search_space: {err}") from err
    from pfednas.options.common import is_arch_string

    arch = getattr(typed, "arch", None)  # a method's architecture string, read by its clients
    if is_arch_string(arch):
        try:
            built.arch_from_str(arch)
        except ValueError as err:
            raise ConfigError(f"method.arch: {err}") from err
    checkpoint_every = cfg.get("checkpoint_every")
    check_number("", "checkpoint_every", checkpoint_every, kind=int, low=0)
    resume = cfg.get("resume")
    if resume is not None:
        check_resumable(cfg, Path(str(resume)))
    fault = cfg.get("fault_injection")
    fault_cfg = None if fault is None else as_dict(fault)
    if fault_cfg is not None:
        from pfednas.clients.faulty import Fault

        try:
            Fault.from_config(fault_cfg)
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"fault_injection: {err!r}") from err
    tensorboard = cfg.get("tensorboard", False)
    if not isinstance(tensorboard, bool):
        raise ConfigError(f"tensorboard must be true or false, got {tensorboard!r}")
    if tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("tensorboard=true needs the tensorboard package "
                          "(pip install -e \".[report]\")")
    label = cfg.get("label")
    if label is not None and (not isinstance(label, str) or not label.strip()):
        raise ConfigError(f"label must be null or a non-empty string, got {label!r}")
    eval_split = cfg.get("eval_split")
    if eval_split not in EVAL_SPLITS:
        raise ConfigError(f"eval_split must be {'|'.join(EVAL_SPLITS)}, got {eval_split!r}")
    if eval_split != "test" and spec.val_fraction <= 0:
        raise ConfigError(f"eval_split={eval_split} needs dataset.val_fraction > 0")
    if eval_split != "test" and getattr(typed, "train_on_val_when_final", False):
        raise ConfigError(f"method.train_on_val_when_final=true trains on the validation "
                          f"split that eval_split={eval_split} scores; set it false")
    return RunSettings(method=name, method_options=method, federation=fed, data=spec,
                       search_space=space, seed=seed, progress=bool(cfg.get("progress")),
                       tensorboard=tensorboard,
                       resume=None if resume is None else str(resume),
                       checkpoint_every=checkpoint_every, fault_injection=fault_cfg,
                       eval_split=str(eval_split))
