"""Construction of the fixed-architecture baselines: FedAvg + fine-tuning, Local, FedRep and
FedBABU (their strategies in ``strategies/``, their clients in ``clients/``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flwr.app import Context
from flwr.client import NumPyClient

from pfednas.clients import FedAvgClient, LocalClient
from pfednas.clients.common import ClientEnv
from pfednas.clients.fedbabu import FedBABUClient
from pfednas.clients.fedrep import FedRepClient
from pfednas.config import RunSettings
from pfednas.methods.fixed import (
    StrategyBuilder,
    adopt_body,
    adopt_model,
    body_roles,
    fits_all_in_deployment,
    fixed_arch,
    fixed_model_fn,
    initial_body,
)
from pfednas.nas.profile import ClientProfile
from pfednas.nas.roles import state_roles
from pfednas.options.baselines import FedAvgOptions
from pfednas.strategies import Budget, FedAvgFTStrategy, LocalStrategy, PersonalizedStrategy
from pfednas.strategies.fedbabu import FedBABUStrategy
from pfednas.strategies.fedrep import FedRepStrategy
from pfednas.train import get_arrays


def fedavg_strategy(settings: RunSettings, budget: Budget, train_config: dict[str, Any],
                    profiles: Mapping[int, ClientProfile]) -> PersonalizedStrategy:
    options: FedAvgOptions = settings.options
    model = fixed_model_fn(settings)()
    return fits_all_in_deployment(settings, FedAvgFTStrategy(
        budget=budget, train_config=train_config, initial_arrays=get_arrays(model),
        array_roles=state_roles(model), finetune_epochs=options.finetune_epochs,
        finetune_scope=options.finetune_scope, profiles=profiles), adopt_model)


def fedavg_client(settings: RunSettings, env: ClientEnv, context: Context) -> NumPyClient:
    return FedAvgClient(env, fixed_model_fn(settings), fixed_arch(settings))


def local_strategy(settings: RunSettings, budget: Budget, train_config: dict[str, Any],
                   profiles: Mapping[int, ClientProfile]) -> PersonalizedStrategy:
    return fits_all_in_deployment(settings, LocalStrategy(budget=budget,
                                                          train_config=train_config,
                                                          profiles=profiles),
                                  lambda strategy, chosen: None)  # the clients hold the model


def local_client(settings: RunSettings, env: ClientEnv, context: Context) -> NumPyClient:
    return LocalClient(env, fixed_model_fn(settings), context.state, fixed_arch(settings))


def body_strategy(strategy: Callable[..., PersonalizedStrategy]
                  ) -> StrategyBuilder:
    """The construction of a strategy that averages the body only (FedRep, FedBABU): the
    seeded initial body, its arrays' roles and the method's options."""
    def build(settings: RunSettings, budget: Budget, train_config: dict[str, Any],
              profiles: Mapping[int, ClientProfile]) -> PersonalizedStrategy:
        return fits_all_in_deployment(settings, strategy(
            budget=budget, train_config=train_config, initial_body=initial_body(settings),
            body_roles=body_roles(settings), options=settings.options, profiles=profiles),
            adopt_body)

    return build


fedrep_strategy = body_strategy(FedRepStrategy)


def fedrep_client(settings: RunSettings, env: ClientEnv, context: Context) -> NumPyClient:
    return FedRepClient(env, fixed_model_fn(settings), context.state, fixed_arch(settings))


fedbabu_strategy = body_strategy(FedBABUStrategy)


def fedbabu_client(settings: RunSettings, env: ClientEnv, context: Context) -> NumPyClient:
    return FedBABUClient(env, fixed_model_fn(settings), fixed_arch(settings))
