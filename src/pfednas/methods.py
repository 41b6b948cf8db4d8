"""Method registry: each method's server strategy, client role and option check.

Adding a method = a Strategy subclass in ``strategies/``, a NumPyClient in
``clients/``, a ``conf/method/<name>.yaml`` and one :class:`MethodSpec` here.
The CLI validates options with ``check`` before anything starts; the ServerApp
calls ``strategy``; the ClientApp calls ``client``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache, partial
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from flwr.app import Context
from flwr.client import NumPyClient

from pfednas.body_head import StateSplit, take
from pfednas.clients import FedAvgClient, LocalClient, SpiderClient, SubnetClient
from pfednas.clients.common import ClientEnv
from pfednas.clients.fedbabu import FedBABUClient
from pfednas.clients.fednas import FedNASClient
from pfednas.clients.fedrep import FedRepClient
from pfednas.clients.spider_state import SpiderOptions, run_fingerprint
from pfednas.config import ConfigError, Federation, RunSettings, task_shape
from pfednas.search import (
    Arch,
    DartsS2Space,
    ElasticNet,
    SearchSpace,
    Supernet,
    TaskShape,
    get_space,
)
from pfednas.search.darts_mixed import DartsMixedNet
from pfednas.seeding import MODEL_INIT, int_seed
from pfednas.strategies import (
    Budget,
    FedAvgFTStrategy,
    LocalStrategy,
    PerFedRLNASOptions,
    PerFedRLNASStrategy,
    PersonalizedStrategy,
    SpiderStrategy,
)
from pfednas.strategies.fedbabu import FedBABUOptions, FedBABUStrategy
from pfednas.strategies.fednas import FedNASOptions, FedNASStrategy
from pfednas.strategies.fedrep import FedRepOptions, FedRepStrategy
from pfednas.train import get_arrays

StrategyBuilder = Callable[[RunSettings, Budget, dict[str, Any]], PersonalizedStrategy]
ClientBuilder = Callable[[RunSettings, ClientEnv, Context], NumPyClient]
OptionCheck = Callable[[dict[str, Any], Federation], None]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    strategy: StrategyBuilder
    client: ClientBuilder
    check: OptionCheck | None = None
    spaces: tuple[str, ...] = ()  # search spaces the method works on (empty: every one)


# -- shared builders ---------------------------------------------------------------------------
def seeded_supernet(settings: RunSettings) -> Supernet:
    """The run's initial supernet: identical for every method given the same seed."""
    return _seeded_supernet(settings.search_space, task_shape(settings), settings.seed)


def _seeded_supernet(space: dict[str, Any], task: TaskShape, seed: int) -> Supernet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int_seed(seed, MODEL_INIT))
        return get_space(**space).build_supernet(
            num_classes=task.num_classes, in_channels=task.in_channels,
            image_size=task.image_size)


def parse_fixed_arch(space: SearchSpace, value: Any) -> Arch:
    """``method.arch`` of the baselines: ``max`` (default), ``min`` or an architecture string."""
    if value is None or value == "max":
        return space.max_arch()
    if value == "min":
        return space.min_arch()
    return space.arch_from_str(str(value))


@lru_cache(maxsize=4)
def _fixed_model(space_json: str, task: TaskShape, seed: int, arch: str | None) -> ElasticNet[Any]:
    space_cfg = json.loads(space_json)
    supernet = _seeded_supernet(space_cfg, task, seed)
    return supernet.extract(parse_fixed_arch(supernet.space, arch))


def fixed_model_fn(settings: RunSettings) -> Callable[[], ElasticNet[Any]]:
    """The baselines' fixed model: ``seeded_supernet(settings).extract(arch)``.

    The same initial weights for every method and client given the seed; built
    once per process (a ClientApp answers many messages), each call a fresh copy.
    """
    arch = settings.method_options.get("arch")
    model = _fixed_model(json.dumps(settings.search_space, sort_keys=True), task_shape(settings),
                         settings.seed, None if arch is None else str(arch))
    return partial(copy.deepcopy, model)


def initial_fixed_arrays(settings: RunSettings) -> list[np.ndarray]:
    return get_arrays(fixed_model_fn(settings)())


def _check_fixed_arch(options: dict[str, Any]) -> None:
    value = options.get("arch", "max")
    if value in (None, "max", "min"):
        return
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(f"method.arch must be max, min or an architecture string, got {value!r}")


def _check_int(options: dict[str, Any], key: str, low: int) -> None:
    value = options.get(key, low)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"method.{key} must be an integer >= {low}, got {value!r}")


# -- fedavg + fine-tuning ----------------------------------------------------------------------
def _fedavg_strategy(settings: RunSettings, budget: Budget,
                     train_config: dict[str, Any]) -> PersonalizedStrategy:
    return FedAvgFTStrategy(budget=budget, train_config=train_config,
                            initial_arrays=initial_fixed_arrays(settings),
                            finetune_epochs=int(settings.method_options.get("finetune_epochs", 0)))


def _fedavg_client(settings: RunSettings, env: ClientEnv, context: Context) -> NumPyClient:
    return FedAvgClient(env, fixed_model_fn(settings))


def _fedavg_check(options: dict[str, Any], fed: Federation) -> None:
    _check_int(options, "finetune_epochs", 0)
    _check_fixed_arch(options)


# -- local -------------------------------------------------------------------------------------
def _local_strategy(settings: RunSettings, budget: Budget,
                    train_config: dict[str, Any]) -> PersonalizedStrategy:
    return LocalStrategy(budget=budget, train_config=train_config)


def _local_client(settings: RunSettings, env: ClientEnv, context: Context) -> NumPyClient:
    return LocalClient(env, fixed_model_fn(settings), context.state)


def _local_check(options: dict[str, Any], fed: Federation) -> None:
    _check_fixed_arch(options)


# -- fedrep / fedbabu: FedAvg on the body of the fixed model -----------------------------------
def initial_body(settings: RunSettings) -> list[np.ndarray]:
    model = fixed_model_fn(settings)()
    return take(get_arrays(model), StateSplit.of(model).body)


def _fedrep_strategy(settings: RunSettings, budget: Budget,
                     train_config: dict[str, Any]) -> PersonalizedStrategy:
    return FedRepStrategy(budget=budget, train_config=train_config,
                          initial_body=initial_body(settings),
                          options=FedRepOptions.from_config(settings.method_options))


def _fedrep_client(settings: RunSettings, env: ClientEnv, context: Context) -> NumPyClient:
    return FedRepClient(env, fixed_model_fn(settings), context.state)


def _fedbabu_strategy(settings: RunSettings, budget: Budget,
                      train_config: dict[str, Any]) -> PersonalizedStrategy:
    return FedBABUStrategy(budget=budget, train_config=train_config,
                           initial_body=initial_body(settings),
                           options=FedBABUOptions.from_config(settings.method_options))


def _fedbabu_client(settings: RunSettings, env: ClientEnv, context: Context) -> NumPyClient:
    return FedBABUClient(env, fixed_model_fn(settings))


def _options_check(parse: Callable[[dict[str, Any]], object], name: str,
                   options: dict[str, Any], fed: Federation) -> None:
    try:
        parse(options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"method ({name}): {err}") from err
    _check_fixed_arch(options)


# -- perfedrlnas -------------------------------------------------------------------------------
def _perfedrlnas_strategy(settings: RunSettings, budget: Budget,
                          train_config: dict[str, Any]) -> PersonalizedStrategy:
    return PerFedRLNASStrategy(budget=budget, train_config=train_config,
                               supernet=seeded_supernet(settings),
                               options=PerFedRLNASOptions.from_config(settings.method_options))


def _perfedrlnas_client(settings: RunSettings, env: ClientEnv, context: Context) -> NumPyClient:
    return SubnetClient(env, get_space(**settings.search_space), task_shape(settings),
                        bn_recalibrate=bool(settings.method_options.get("bn_recalibrate")))


def _perfedrlnas_check(options: dict[str, Any], fed: Federation) -> None:
    try:
        opts = PerFedRLNASOptions.from_config(options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"method (perfedrlnas): {err}") from err
    if opts.new_clients >= fed.num_clients:
        raise ConfigError("method.new_clients must be < federation.num_clients")
    if fed.clients_per_round > fed.num_clients - opts.new_clients:
        raise ConfigError("federation.clients_per_round must not exceed the "
                          "num_clients - method.new_clients training clients")


# -- spider / ditto (ditto = the same client with the local architecture fixed) ----------------
def _spider_options(settings: RunSettings) -> SpiderOptions:
    return SpiderOptions.from_config(settings.method_options, search=settings.method == "spider")


def _darts_space(settings: RunSettings) -> DartsS2Space:
    space = get_space(**settings.search_space)
    if not isinstance(space, DartsS2Space):
        raise ConfigError(f"method={settings.method} needs search_space=darts_s2, "
                          f"got {space.name!r}")
    return space


def _spider_strategy(settings: RunSettings, budget: Budget,
                     train_config: dict[str, Any]) -> PersonalizedStrategy:
    _darts_space(settings)
    return SpiderStrategy(budget=budget, train_config=train_config,
                          supernet=seeded_supernet(settings),
                          participation=_spider_options(settings).participation)


def _spider_client(settings: RunSettings, env: ClientEnv, context: Context) -> NumPyClient:
    directory = str(context.node_config.get("checkpoint-dir", "")).strip() or None
    fingerprint = run_fingerprint(settings.method, settings.method_options,
                                  settings.search_space, settings.data, settings.seed)
    return SpiderClient(env, _darts_space(settings), task_shape(settings),
                        _spider_options(settings), context.state, fingerprint=fingerprint,
                        checkpoint_dir=directory)


def _spider_check(options: dict[str, Any], fed: Federation, *, search: bool) -> None:
    try:
        opts = SpiderOptions.from_config(options, search=search)
        if opts.arch:
            DartsS2Space(allow_empty_edges=True).arch_from_str(opts.arch)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"method ({'spider' if search else 'ditto'}): {err}") from err


# -- fednas: the global federated NAS reference ------------------------------------------------
def _fednas_strategy(settings: RunSettings, budget: Budget,
                     train_config: dict[str, Any]) -> PersonalizedStrategy:
    space = _darts_space(settings)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int_seed(settings.seed, MODEL_INIT))
        net = DartsMixedNet(space, task_shape(settings))
    return FedNASStrategy(budget=budget, train_config=train_config, net=net,
                          options=FedNASOptions.from_config(settings.method_options))


def _fednas_client(settings: RunSettings, env: ClientEnv, context: Context) -> NumPyClient:
    return FedNASClient(env, _darts_space(settings), task_shape(settings))


METHODS: Mapping[str, MethodSpec] = MappingProxyType({spec.name: spec for spec in (
    MethodSpec("fedavg", _fedavg_strategy, _fedavg_client, _fedavg_check),
    MethodSpec("local", _local_strategy, _local_client, _local_check),
    MethodSpec("perfedrlnas", _perfedrlnas_strategy, _perfedrlnas_client, _perfedrlnas_check),
    MethodSpec("spider", _spider_strategy, _spider_client, partial(_spider_check, search=True),
               spaces=("darts_s2",)),
    MethodSpec("ditto", _spider_strategy, _spider_client, partial(_spider_check, search=False),
               spaces=("darts_s2",)),
    MethodSpec("fedrep", _fedrep_strategy, _fedrep_client,
               partial(_options_check, FedRepOptions.from_config, "fedrep")),
    MethodSpec("fedbabu", _fedbabu_strategy, _fedbabu_client,
               partial(_options_check, FedBABUOptions.from_config, "fedbabu")),
    MethodSpec("fednas", _fednas_strategy, _fednas_client,
               partial(_options_check, FedNASOptions.from_config, "fednas"),
               spaces=("darts_s2",)),
)})
