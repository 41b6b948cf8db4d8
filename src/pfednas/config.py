"""One config source for the CLI, the ServerApp and the ClientApp.

The `pfednas` command composes the Hydra config from ``conf/`` (installed as the
package ``pfednas.conf``) and hands its *overrides* to the Flower run through
run-config; the ServerApp and ClientApp compose the identical config from the
same files with :func:`compose`. The rest of the code never sees the
``DictConfig``: it gets the typed, validated values built here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pfednas.data import DataSpec, dataset_info, validate_spec

if TYPE_CHECKING:  # pfednas.search imports torch: the command's checks before it stay quick
    from pfednas.search import TaskShape

CHECKPOINT_FILE = "checkpoint.npz"
SERVERAPP_PID_FILE = "serverapp.pid"  # in <output>/logs/, written by the ServerApp
# Set by whoever starts the SuperLink side (the operator), never by the run config:
SIMULATION_ENV = "PFEDNAS_SIMULATION"     # "1": a `pfednas` simulation (launcher.py)
OUTPUT_BASE_ENV = "PFEDNAS_OUTPUT_BASE"   # deployment: the ServerApp writes only below it
DEFAULT_OUTPUT_BASE = "outputs"           # deployment without PFEDNAS_OUTPUT_BASE: ./outputs
DATA_ROOT_ENV = "PFEDNAS_DATA_ROOT"       # deployment: the dataset folder the ServerApp reads
NODE_KEYS_ENV = "PFEDNAS_NODE_KEYS"       # deployment: node-<id>.pub pinning client ids to keys


def in_simulation() -> bool:
    """Whether this process belongs to a `pfednas` simulation (not a deployment)."""
    return os.environ.get(SIMULATION_ENV, "") == "1"


def output_base() -> Path:
    """The folder a deployment's ServerApp writes below: ``$PFEDNAS_OUTPUT_BASE``, else
    ``./outputs`` of the ServerApp process (absolute, symbolic links resolved)."""
    base = os.environ.get(OUTPUT_BASE_ENV, "").strip() or DEFAULT_OUTPUT_BASE
    return Path(base).expanduser().resolve()


class ConfigError(ValueError):
    """An invalid configuration value; the message says which and why."""


def conf_dir() -> Path:
    """Directory holding ``config.yaml`` and the config groups. Every caller composes from
    it, so the methods' typed schemas (``method/<name>_defaults``, :mod:`pfednas.options`),
    which the YAML files extend, are registered in Hydra's ConfigStore here first."""
    _register_schemas()
    return Path(str(resources.files("pfednas.conf")))


@lru_cache(maxsize=1)
def _register_schemas() -> None:
    from pfednas.options import register_schemas

    register_schemas()


def compose(overrides: tuple[str, ...] | list[str] = ()) -> DictConfig:
    """Compose ``conf/config.yaml`` with Hydra overrides, outside ``hydra.main``."""
    return _compose_cached(tuple(overrides)).copy()


@lru_cache(maxsize=8)
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


@dataclass(frozen=True)
class Federation:
    """Federation-wide budgets and resources (the ``federation/`` group)."""

    num_clients: int
    clients_per_round: int
    num_rounds: int
    local_epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    eval_every: int
    round_timeout: float
    min_replies: int
    client_cpus: int
    client_gpus: float
    ray_num_cpus: int | None
    ray_address: str | None = None   # null: a private Ray; "auto" | HOST:PORT: join that cluster
    # samples | uniform: client weights in averages and merges; null: the method's paper rule
    weighting: str | None = None
    examples_tolerance: float = 0.5   # deployment: allowed rise of a client's num_examples
    eval_timeout: float | None = None
    eval_finetune: str = "final"
    # the final evaluation also fine-tunes a copy at the other scope (head / full) and reports
    # both (accuracy_ft_full, accuracy_ft_head): a tuning grid's scope axis from one run
    finetune_both: bool = False
    allow_missing_clients: bool = False
    # deployment: each client's largest num_examples, stated by the operator (one number for
    # all, or a list of K); null: clients weigh equally (their own counts bound nothing)
    client_examples: int | list[int] | None = None
    # each training update's RMS at most this × the round's lower median; null: off in a
    # simulation, 10 in a deployment; 0: off (pfednas.nas.robust)
    update_norm_bound: float | None = None
    # deployment: the operator's bounds of each node's claimed hardware profile, the
    # bandwidth of a node that states none, and fits_all's floor (pfednas.nas.profile)
    profile_bounds: dict[str, Any] | None = None
    default_bandwidth_mbps: float = 100.0
    min_budget_mb: float | None = None


@dataclass(frozen=True)
class RunSettings:
    """Everything a run needs, typed and validated."""

    method: str
    method_options: dict[str, Any]
    federation: Federation
    data: DataSpec
    search_space: dict[str, Any]
    seed: int
    progress: bool
    resume: str | None = None
    checkpoint_every: int = 0
    fault_injection: dict[str, Any] | None = None
    eval_split: str = "test"

    @property
    def options(self) -> Any:
        """The method's typed options (:mod:`pfednas.options`): what its strategy and its
        clients are built from."""
        from pfednas.options import parse

        return parse(self.method, self.method_options)


EVAL_SPLITS = ("test", "val")


def _as_dict(node: Any) -> dict[str, Any]:
    try:
        value = OmegaConf.to_container(node, resolve=True)
    except OmegaConfBaseException as err:  # e.g. an interpolation that names no key
        raise ConfigError(omegaconf_message(err)) from err
    if not isinstance(value, dict):
        raise ConfigError(f"expected a mapping, got {value!r}")
    return {str(k): v for k, v in value.items()}


def omegaconf_message(err: OmegaConfBaseException) -> str:
    """OmegaConf's error in one line, led by the key it concerns."""
    first = (str(getattr(err, "msg", "") or err).strip().splitlines() or [type(err).__name__])[0]
    key = getattr(err, "full_key", None)
    return f"{key}: {first}" if key else first


def non_finite_values(tree: Any, path: str = "") -> list[tuple[str, float]]:
    """(dotted key, value) of every ``nan`` / ``inf`` number in a resolved config tree."""
    if isinstance(tree, dict):
        return [bad for k, v in tree.items()
                for bad in non_finite_values(v, f"{path}.{k}" if path else str(k))]
    if isinstance(tree, list):
        return [bad for i, v in enumerate(tree) for bad in non_finite_values(v, f"{path}[{i}]")]
    if isinstance(tree, float) and not math.isfinite(tree):
        return [(path, tree)]
    return []


NON_FINITE_ALLOWED = ("fault_injection",)  # test-only: it injects bad values on purpose


def check_finite(cfg: DictConfig) -> None:
    """No ``nan`` or ``inf`` in any number of the config: no key means them, and every
    comparison with ``nan`` is false, so a range check alone would let it through."""
    values = {k: v for k, v in _as_dict(cfg).items() if k not in NON_FINITE_ALLOWED}
    bad = non_finite_values(values)
    if bad:
        (key, value), others = bad[0], [k for k, _ in bad[1:]]
        raise ConfigError(f"{key} must be a finite number, got {value}"
                          + (f" (so must {', '.join(others)})" if others else ""))


def _typed(cls: type, values: dict[str, Any], group: str) -> Any:
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"unknown key(s) in {group}: {', '.join(unknown)}")
    try:
        return cls(**values)
    except TypeError as err:
        raise ConfigError(f"{group}: {err}") from err


def _check_number(group: str, name: str, value: Any, *, kind: type, low: float | None = None,
                  strict: bool = False) -> None:
    ok_type = isinstance(value, kind) if kind is float else isinstance(value, int)
    if kind is float and isinstance(value, int):
        ok_type = True
    if isinstance(value, bool) or not ok_type:
        raise ConfigError(f"{group}.{name} must be {'an integer' if kind is int else 'a number'}, "
                          f"got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{group}.{name} must be a finite number, got {value!r}")
    if low is not None and (value <= low if strict else value < low):
        relation = ">" if strict else ">="
        raise ConfigError(f"{group}.{name} must be {relation} {low}, got {value!r}")


def check_client_examples(value: Any, num_clients: int) -> None:
    """``federation.client_examples``: null, an integer >= 1, or a list of K of them."""
    if value is None:
        return
    values = value if isinstance(value, list) else [value]
    if (isinstance(value, list) and len(value) != num_clients) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
        raise ConfigError("federation.client_examples must be null, an integer >= 1 or a list "
                          f"of num_clients={num_clients} of them, got {value!r}")


def validate_federation(fed: Federation) -> None:
    g = "federation"
    for name in ("num_clients", "clients_per_round", "num_rounds", "local_epochs",
                 "batch_size", "eval_every", "client_cpus", "min_replies"):
        _check_number(g, name, getattr(fed, name), kind=int, low=1)
    for name in ("lr", "round_timeout"):
        _check_number(g, name, getattr(fed, name), kind=float, low=0, strict=True)
    for name in ("momentum", "weight_decay", "client_gpus", "examples_tolerance"):
        _check_number(g, name, getattr(fed, name), kind=float, low=0)
    if fed.weighting not in (None, "samples", "uniform"):
        raise ConfigError("federation.weighting must be null, samples or uniform, "
                          f"got {fed.weighting!r}")
    if fed.clients_per_round > fed.num_clients:
        raise ConfigError(
            f"federation.clients_per_round (N={fed.clients_per_round}) must not exceed "
            f"federation.num_clients (K={fed.num_clients})")
    if fed.min_replies > fed.clients_per_round:
        raise ConfigError(f"federation.min_replies ({fed.min_replies}) must not exceed "
                          f"federation.clients_per_round ({fed.clients_per_round})")
    if fed.eval_timeout is not None:
        _check_number(g, "eval_timeout", fed.eval_timeout, kind=float, low=0, strict=True)
    if fed.eval_finetune not in ("final", "all"):
        raise ConfigError(f"federation.eval_finetune must be final|all, got {fed.eval_finetune!r}")
    if not isinstance(fed.finetune_both, bool):
        raise ConfigError("federation.finetune_both must be true or false, got "
                          f"{fed.finetune_both!r}")
    if not isinstance(fed.allow_missing_clients, bool):
        raise ConfigError("federation.allow_missing_clients must be true|false, "
                          f"got {fed.allow_missing_clients!r}")
    if not fed.examples_tolerance < float("inf"):  # nan would switch the bound off
        raise ConfigError(f"federation.examples_tolerance must be a finite number >= 0, "
                          f"got {fed.examples_tolerance!r}")
    check_client_examples(fed.client_examples, fed.num_clients)
    if fed.update_norm_bound is not None:
        _check_number(g, "update_norm_bound", fed.update_norm_bound, kind=float, low=0)
        if not fed.update_norm_bound < float("inf"):
            raise ConfigError("federation.update_norm_bound must be null, 0 (off) or a finite "
                              f"number > 0, got {fed.update_norm_bound!r}")
    from pfednas.nas.profile import ProfileBounds

    try:
        ProfileBounds.from_config(fed.profile_bounds, fed.default_bandwidth_mbps,
                                  fed.min_budget_mb)
    except ValueError as err:
        raise ConfigError(f"federation.{err}") from err
    if fed.ray_num_cpus is not None:
        _check_number(g, "ray_num_cpus", fed.ray_num_cpus, kind=int, low=1)
        if fed.client_cpus > fed.ray_num_cpus:
            raise ConfigError("federation.client_cpus must not exceed federation.ray_num_cpus")
    check_ray_address(fed.ray_address)
    if fed.ray_address is not None and fed.ray_num_cpus is not None:
        raise ConfigError("federation.ray_num_cpus sizes a private Ray; with "
                          "federation.ray_address the cluster's own resources apply: "
                          "leave ray_num_cpus null")


def check_ray_address(address: Any) -> None:
    """``null`` (a private Ray), ``auto`` (the cluster ``ray start`` left on this machine)
    or ``HOST:PORT`` (a cluster's GCS address, as ``ray start --head`` prints it)."""
    if address is None or address == "auto":
        return
    host, _, port = str(address).rpartition(":") if isinstance(address, str) else ("", "", "")
    if (not host or any(c.isspace() or c in "/@" for c in host)
            or not port.isdigit() or not 0 < int(port) < 65536):
        raise ConfigError("federation.ray_address must be null, auto or HOST:PORT (the "
                          f"address `ray start --head` prints), got {address!r}")


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


RUN_KEYS_NOT_COMPARED = ("resume", "progress", "output_dir", "hydra")
RESOLVED_CONFIG = "resolved_config.yaml"  # the run's composed config, in its output folder


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
        before = _as_dict(saved)
    except (OSError, ValueError, ConfigError, OmegaConfBaseException, yaml.YAMLError) as err:
        problem = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"resume={run_dir}: {RESOLVED_CONFIG} is not a readable config "
                          f"({problem})") from err
    now = _as_dict(cfg)
    differ = sorted(k for k in set(now) | set(before)
                    if k not in RUN_KEYS_NOT_COMPARED and now.get(k) != before.get(k))
    if differ:
        raise ConfigError(f"resume={run_dir}: the config differs from that run's in "
                          f"{', '.join(differ)}; pass the same overrides as the original run")


def space_for_dataset(space: dict[str, Any], dataset: str) -> dict[str, Any]:
    """The search space's values with its ``per_dataset.<dataset>`` choices applied.

    A space config may size itself per dataset (e.g. no elastic resolution on 8×8
    digits); to change such a value on that dataset, override
    ``search_space.per_dataset.<dataset>.<key>`` (or set ``~search_space.per_dataset``).
    """
    values = dict(space)
    per_dataset = values.pop("per_dataset", None) or {}
    if not isinstance(per_dataset, dict):
        raise ConfigError(f"search_space.per_dataset must be a mapping, got {per_dataset!r}")
    choices = per_dataset.get(dataset) or {}
    if not isinstance(choices, dict):
        raise ConfigError(f"search_space.per_dataset.{dataset} must be a mapping, got {choices!r}")
    unknown = sorted(set(choices) - set(values))
    if unknown:
        raise ConfigError(f"search_space.per_dataset.{dataset}: unknown key(s) "
                          f"{', '.join(unknown)}")
    values.update(choices)
    return values


def settings_from_cfg(cfg: DictConfig) -> RunSettings:
    """Build and validate the typed settings; raises :class:`ConfigError`."""
    check_finite(cfg)
    method = _as_dict(cfg.method)
    name = method.pop("name", None)
    fed = _typed(Federation, _as_dict(cfg.federation), "federation")
    validate_federation(fed)
    seed = cfg.get("seed", 0)
    _check_number("", "seed", seed, kind=int, low=0)
    data_values = _as_dict(cfg.dataset)
    data_values.update(num_clients=fed.num_clients, seed=seed)
    spec = _typed(DataSpec, data_values, "dataset")
    try:
        validate_spec(spec)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    typed = _check_method(name, method, fed, str(cfg.search_space.get("name")))
    _check_method_data(typed, spec)
    if fed.weighting is None:  # the method's paper rule
        fed = dataclasses.replace(fed, weighting=getattr(typed, "WEIGHTING", "samples"))
    space = space_for_dataset(_as_dict(cfg.search_space), spec.name)
    from pfednas.search import get_space

    try:
        get_space(**space)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"search_space: {err}") from err
    checkpoint_every = cfg.get("checkpoint_every", 0)
    _check_number("", "checkpoint_every", checkpoint_every, kind=int, low=0)
    resume = cfg.get("resume")
    if resume is not None:
        check_resumable(cfg, Path(str(resume)))
    fault = cfg.get("fault_injection")
    fault_cfg = None if fault is None else _as_dict(fault)
    if fault_cfg is not None:
        from pfednas.clients.faulty import Fault

        try:
            Fault.from_config(fault_cfg)
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"fault_injection: {err!r}") from err
    label = cfg.get("label")
    if label is not None and (not isinstance(label, str) or not label.strip()):
        raise ConfigError(f"label must be null or a non-empty string, got {label!r}")
    eval_split = cfg.get("eval_split", "test")
    if eval_split not in EVAL_SPLITS:
        raise ConfigError(f"eval_split must be {'|'.join(EVAL_SPLITS)}, got {eval_split!r}")
    if eval_split == "val" and spec.val_fraction <= 0:
        raise ConfigError("eval_split=val needs dataset.val_fraction > 0")
    return RunSettings(method=name, method_options=method, federation=fed, data=spec,
                       search_space=space, seed=seed, progress=bool(cfg.get("progress", True)),
                       resume=None if resume is None else str(resume),
                       checkpoint_every=checkpoint_every, fault_injection=fault_cfg,
                       eval_split=str(eval_split))


def describe(settings: RunSettings) -> str:
    info = dataset_info(settings.data.name)
    fed = settings.federation
    return (f"{settings.method} on {info.name} ({info.in_channels}x{info.image_size}x"
            f"{info.image_size}, {info.num_classes} classes), K={fed.num_clients}, "
            f"N={fed.clients_per_round}, R={fed.num_rounds}, E={fed.local_epochs}, "
            f"alpha={settings.data.alpha}, seed={settings.seed}")


def task_shape(settings: RunSettings) -> TaskShape:
    """What the networks are built for: the dataset's classes, channels and image side."""
    from pfednas.search import TaskShape

    info = dataset_info(settings.data.name)
    return TaskShape(num_classes=info.num_classes, in_channels=info.in_channels,
                     image_size=info.image_size)
