"""The checks of a composed config: each raises :class:`~pfednas.settings.ConfigError` with a
one-line message led by the key it concerns (non-finite numbers, the federation group, the
search space's per-dataset choices)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pfednas.hardware.spread import HardwareSpread
from pfednas.settings import ConfigError, Federation


def as_dict(node: Any) -> dict[str, Any]:
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
    values = {k: v for k, v in as_dict(cfg).items() if k not in NON_FINITE_ALLOWED}
    bad = non_finite_values(values)
    if bad:
        (key, value), others = bad[0], [k for k, _ in bad[1:]]
        raise ConfigError(f"{key} must be a finite number, got {value}"
                          + (f" (so must {', '.join(others)})" if others else ""))


def build_typed(cls: type, values: dict[str, Any], group: str) -> Any:
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"unknown key(s) in {group}: {', '.join(unknown)}")
    try:
        return cls(**values)
    except TypeError as err:
        raise ConfigError(f"{group}: {err}") from err


def build_federation(values: dict[str, Any]) -> Federation:
    """``federation`` typed, its ``hardware`` block the :class:`HardwareSpread`."""
    values = dict(values)
    hardware = values.pop("hardware", None) or {}
    if not isinstance(hardware, dict):
        raise ConfigError(f"federation.hardware must be a mapping, got {hardware!r}")
    group = "federation.hardware"
    for name, value in hardware.items():
        if name in ("memory_budgets", "speed_follows_memory"):
            if not isinstance(value, bool):
                raise ConfigError(f"{group}.{name} must be true|false, got {value!r}")
        elif name in ("memory_distribution", "memory_levels", "memory_level_shares"):
            continue  # HardwareSpread checks them, naming the key
        elif name in {f.name for f in dataclasses.fields(HardwareSpread)}:
            check_number(group, name, value, kind=float)
    try:
        spread = build_typed(HardwareSpread, hardware, group)
    except ValueError as err:
        raise ConfigError(str(err) if str(err).startswith(group)
                          else f"federation.{err}") from err
    return build_typed(Federation, {**values, "hardware": spread}, "federation")


def check_number(group: str, name: str, value: Any, *, kind: type, low: float | None = None,
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


def check_aggregation(fed: Federation) -> None:
    """``federation.aggregation`` null or one of the rules, ``trim_fraction`` in [0, 0.5)."""
    from pfednas.nas.aggregation import RULES

    if fed.aggregation is not None and fed.aggregation not in RULES:
        raise ConfigError(f"federation.aggregation must be null or {'|'.join(RULES)}, "
                          f"got {fed.aggregation!r}")
    check_number("federation", "trim_fraction", fed.trim_fraction, kind=float, low=0)
    if not fed.trim_fraction < 0.5:
        raise ConfigError("federation.trim_fraction must be in [0, 0.5), got "
                          f"{fed.trim_fraction!r}")


PROFILE_SOURCES = ("nodes", "simulated")  # federation.profiles


def check_profiles(fed: Federation) -> None:
    """``federation.profiles``: where a deployment's client hardware comes from."""
    if fed.profiles not in PROFILE_SOURCES:
        raise ConfigError(f"federation.profiles must be {'|'.join(PROFILE_SOURCES)}, "
                          f"got {fed.profiles!r}")


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
        check_number(g, name, getattr(fed, name), kind=int, low=1)
    for name in ("lr", "round_timeout"):
        check_number(g, name, getattr(fed, name), kind=float, low=0, strict=True)
    for name in ("momentum", "weight_decay", "client_gpus", "examples_tolerance"):
        check_number(g, name, getattr(fed, name), kind=float, low=0)
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
        check_number(g, "eval_timeout", fed.eval_timeout, kind=float, low=0, strict=True)
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
    levels = len(fed.hardware.memory_levels)
    if fed.hardware.memory_distribution == "levels" and fed.num_clients < levels:
        raise ConfigError(f"federation.hardware.memory_levels: {levels} levels need at least "
                          f"{levels} clients, got federation.num_clients={fed.num_clients}")
    if fed.update_norm_bound is not None:
        check_number(g, "update_norm_bound", fed.update_norm_bound, kind=float, low=0)
        if not fed.update_norm_bound < float("inf"):
            raise ConfigError("federation.update_norm_bound must be null, 0 (off) or a finite "
                              f"number > 0, got {fed.update_norm_bound!r}")
    check_aggregation(fed)
    check_profiles(fed)
    from pfednas.hardware.profile import ProfileBounds

    try:
        ProfileBounds.from_config(fed.profile_bounds, fed.default_bandwidth_mbps,
                                  fed.min_budget_mb)
    except ValueError as err:
        raise ConfigError(f"federation.{err}") from err
    if fed.ray_num_cpus is not None:
        check_number(g, "ray_num_cpus", fed.ray_num_cpus, kind=int, low=1)
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


def space_for_dataset(space: dict[str, Any], dataset: str | tuple[str, ...]) -> dict[str, Any]:
    """The search space's values with its ``per_dataset.<dataset>`` choices applied (for a
    tuple of names, the first that has choices: :func:`pfednas.data.spec.sizing_names`).

    A space config may size itself per dataset (e.g. no elastic resolution on 8×8
    digits); to change such a value on that dataset, override
    ``search_space.per_dataset.<dataset>.<key>`` (or set ``~search_space.per_dataset``).
    """
    values = dict(space)
    per_dataset = values.pop("per_dataset", None) or {}
    if not isinstance(per_dataset, dict):
        raise ConfigError(f"search_space.per_dataset must be a mapping, got {per_dataset!r}")
    names = (dataset,) if isinstance(dataset, str) else dataset
    dataset = next((n for n in names if per_dataset.get(n)), names[0])
    choices = per_dataset.get(dataset) or {}
    if not isinstance(choices, dict):
        raise ConfigError(f"search_space.per_dataset.{dataset} must be a mapping, got {choices!r}")
    unknown = sorted(set(choices) - set(values))
    if unknown:
        raise ConfigError(f"search_space.per_dataset.{dataset}: unknown key(s) "
                          f"{', '.join(unknown)}")
    values.update(choices)
    return values
