"""Construction of the fixed-architecture baselines: FedAvg + fine-tuning, FedProx, FedBN,
Local, FedRep and FedBABU (their strategies in ``strategies/``, their clients in ``clients/``)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from flwr.app import Context
from flwr.client import NumPyClient

from pfednas.clients import FedAvgClient, FedProxClient, LocalClient
from pfednas.clients.common import ClientEnv
from pfednas.clients.fedbabu import FedBABUClient
from pfednas.clients.fedbn import FedBNClient
from pfednas.clients.fedrep import FedRepClient
from pfednas.config import RunSettings
from pfednas.methods.fixed import (
    StrategyBuilder,
    body_arrays,
    fits_all_roster,
    fixed_arch,
    fixed_model_fn,
    model_arrays,
    shared_arrays,
)
from pfednas.options.baselines import FedAvgOptions, FedProxOptions
from pfednas.strategies import Budget, FedAvgFTStrategy, LocalStrategy, PersonalizedStrategy
from pfednas.strategies.budget import Roster
from pfednas.strategies.fedbabu import FedBABUStrategy
from pfednas.strategies.fedrep import FedRepStrategy
from pfednas.wire.messages import Sgd


def averaged_strategy(arrays_of: Callable[[RunSettings], tuple[list[np.ndarray], list[str]]]
                      ) -> StrategyBuilder:
    """The construction of FedAvg+FT's server on the arrays ``arrays_of(settings)`` gives
    (the whole model: FedAvg's; the model without its BatchNorm entries: FedBN's, whose
    clients keep them)."""
    def build(settings: RunSettings, budget: Budget, sgd: Sgd,
              roster: Roster) -> PersonalizedStrategy:
        options: FedAvgOptions = settings.options
        arrays, roles = arrays_of(settings)
        return FedAvgFTStrategy(
            budget=budget, sgd=sgd, initial_arrays=arrays, array_roles=roles,
            finetune_epochs=options.finetune_epochs, finetune_scope=options.finetune_scope,
            roster=fits_all_roster(settings, roster, deployment=budget.deployment,
                                   model=arrays_of))

    return build


fedavg_strategy = averaged_strategy(model_arrays)


def fedavg_client(settings: RunSettings, env: ClientEnv, context: Context) -> NumPyClient:
    return FedAvgClient(env, fixed_model_fn(settings), fixed_arch(settings))


def fedprox_client(settings: RunSettings, env: ClientEnv, context: Context) -> NumPyClient:
    options: FedProxOptions = settings.options
    return FedProxClient(env, fixed_model_fn(settings), fixed_arch(settings), options.mu)


fedbn_strategy = averaged_strategy(shared_arrays)


def fedbn_client(settings: RunSettings, env: ClientEnv, context: Context) -> NumPyClient:
    return FedBNClient(env, fixed_model_fn(settings), fixed_arch(settings), context.state)


def local_strategy(settings: RunSettings, budget: Budget, sgd: Sgd,
                   roster: Roster) -> PersonalizedStrategy:
    # a deployed fits_all: the clients hold the model, the strategy only names it
    return LocalStrategy(budget=budget, sgd=sgd,
                         roster=fits_all_roster(settings, roster, deployment=budget.deployment,
                                                model=None))


def local_client(settings: RunSettings, env: ClientEnv, context: Context) -> NumPyClient:
    return LocalClient(env, fixed_model_fn(settings), context.state, fixed_arch(settings))


def body_strategy(strategy: Callable[..., PersonalizedStrategy]
                  ) -> StrategyBuilder:
    """The construction of a strategy that averages the body only (FedRep, FedBABU): the
    seeded initial body, its arrays' roles and the method's options."""
    def build(settings: RunSettings, budget: Budget, sgd: Sgd,
              roster: Roster) -> PersonalizedStrategy:
        body, roles = body_arrays(settings)
        return strategy(budget=budget, sgd=sgd, initial_body=body,
                        body_roles=roles, options=settings.options,
                        roster=fits_all_roster(settings, roster, deployment=budget.deployment,
                                               model=body_arrays))

    return build


fedrep_strategy = body_strategy(FedRepStrategy)


def fedrep_client(settings: RunSettings, env: ClientEnv, context: Context) -> NumPyClient:
    return FedRepClient(env, fixed_model_fn(settings), context.state, fixed_arch(settings))


fedbabu_strategy = body_strategy(FedBABUStrategy)


def fedbabu_client(settings: RunSettings, env: ClientEnv, context: Context) -> NumPyClient:
    return FedBABUClient(env, fixed_model_fn(settings), fixed_arch(settings))
