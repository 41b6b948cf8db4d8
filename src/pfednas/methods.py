"""Method registry: each method's server strategy, client role and option check.

Adding a method = a Strategy subclass in ``strategies/``, a NumPyClient in
``clients/``, a ``conf/method/<name>.yaml`` and one :class:`MethodSpec` here.
The CLI validates options with ``check`` before anything starts; the ServerApp
calls ``strategy``; the ClientApp calls ``client``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from flwr.app import Context
from flwr.client import NumPyClient

from pfednas.clients import FedAvgClient, LocalClient, SubnetClient
from pfednas.clients.common import ClientEnv
from pfednas.config import ConfigError, Federation, RunSettings, task_shape
from pfednas.models import build_model
from pfednas.search import Supernet, get_space
from pfednas.seeding import MODEL_INIT, int_seed
from pfednas.strategies import (
    Budget,
    FedAvgFTStrategy,
    LocalStrategy,
    PerFedRLNASOptions,
    PerFedRLNASStrategy,
    PersonalizedStrategy,
)
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


# -- shared builders ---------------------------------------------------------------------------
def seeded_supernet(settings: RunSettings) -> Supernet:
    """The run's initial supernet: identical for every method given the same seed."""
    task = task_shape(settings)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int_seed(settings.seed, MODEL_INIT))
        return get_space(**settings.search_space).build_supernet(
            num_classes=task.num_classes, in_channels=task.in_channels,
            image_size=task.image_size)


def fixed_model_fn(settings: RunSettings) -> Callable[[], torch.nn.Module]:
    task = task_shape(settings)
    return partial(build_model, in_channels=task.in_channels, image_size=task.image_size,
                   num_classes=task.num_classes, seed=settings.seed)


def initial_fixed_arrays(settings: RunSettings) -> list[np.ndarray]:
    return get_arrays(fixed_model_fn(settings)())


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


# -- local -------------------------------------------------------------------------------------
def _local_strategy(settings: RunSettings, budget: Budget,
                    train_config: dict[str, Any]) -> PersonalizedStrategy:
    return LocalStrategy(budget=budget, train_config=train_config)


def _local_client(settings: RunSettings, env: ClientEnv, context: Context) -> NumPyClient:
    return LocalClient(env, fixed_model_fn(settings), context.state)


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


METHODS: Mapping[str, MethodSpec] = MappingProxyType({spec.name: spec for spec in (
    MethodSpec("fedavg", _fedavg_strategy, _fedavg_client, _fedavg_check),
    MethodSpec("local", _local_strategy, _local_client),
    MethodSpec("perfedrlnas", _perfedrlnas_strategy, _perfedrlnas_client, _perfedrlnas_check),
)})
