"""The run's strategy, built from its settings: the ServerApp's, and the same for
``pfednas export``, the preflight check and the in-process runner.

A simulation's strategy knows each client's partition size (the bound of its
``num_examples``); a deployment's takes the operator's bounds instead: the
``client_examples``, the nodes' pinned keys and what a node may claim as its profile.
A deployment with ``federation.profiles=simulated`` (``pfednas deploy local``'s default)
is built as its simulation is, the nodes' pinned keys aside: the simulation's profiles,
merge, update bound and weighting, so that it reproduces the simulation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from pfednas.config import ConfigError, RunSettings, in_simulation
from pfednas.data import DataError, partition
from pfednas.hardware.profile import SIMULATED, ClientProfile, ProfileBounds
from pfednas.methods import METHODS, client_profiles
from pfednas.options.baselines import finetune_epochs_option
from pfednas.strategies.base import (
    Budget,
    PersonalizedStrategy,
    eval_timeout_for,
    norm_bound_for,
)
from pfednas.strategies.budget import Roster, aggregation_for
from pfednas.strategies.identity import pins_from_env
from pfednas.wire.messages import Sgd


def build_strategy(settings: RunSettings, *, deployment: bool | None = None, lineage: str = "",
                   claimed: Mapping[int, ClientProfile] | None = None) -> PersonalizedStrategy:
    """The run's strategy; ``deployment`` None: whether this process is not a simulation's;
    ``lineage``: the run's (:class:`pfednas.strategies.budget.Roster`); ``claimed``: a
    finished deployment's recorded profiles (an export), else its nodes claim them."""
    fed = settings.federation
    deployment = not in_simulation() if deployment is None else deployment
    # nodes that claim their own hardware: the deployment's bounds and defaults hold
    claiming = deployment and fed.profiles != SIMULATED
    budget = Budget(num_clients=fed.num_clients, clients_per_round=fed.clients_per_round,
                    num_rounds=fed.num_rounds, local_epochs=fed.local_epochs,
                    eval_every=fed.eval_every, round_timeout=fed.round_timeout,
                    min_replies=fed.min_replies, seed=settings.seed, weighting=fed.weighting,
                    examples_tolerance=fed.examples_tolerance,
                    eval_timeout=eval_timeout_for(
                        fed.eval_timeout, deployment=deployment, round_timeout=fed.round_timeout,
                        local_epochs=fed.local_epochs,
                        finetune_epochs=finetune_epochs_option(settings.options)),
                    eval_finetune=fed.eval_finetune, finetune_both=fed.finetune_both,
                    deployment=claiming,
                    update_norm_bound=norm_bound_for(fed.update_norm_bound,
                                                     deployment=claiming),
                    aggregation=aggregation_for(fed.aggregation, fed.trim_fraction,
                                                deployment=claiming))
    sgd = Sgd(lr=fed.lr, momentum=fed.momentum, weight_decay=fed.weight_decay,
              batch_size=fed.batch_size)
    if claiming:
        roster = deployment_roster(settings, claimed or {})
    elif deployment:  # the simulation's profiles; num_examples bounded by first reports
        roster = Roster(profiles=client_profiles(settings), pins=node_pins(fed.num_clients))
    else:
        roster = Roster(profiles=client_profiles(settings),
                        partition_sizes=partition_sizes(settings))
    return METHODS[settings.method].strategy(settings, budget, sgd,
                                             dataclasses.replace(roster, lineage=lineage))


def deployment_roster(settings: RunSettings, claimed: Mapping[int, ClientProfile]) -> Roster:
    """A deployment's: the operator's num_examples bounds (a client's own counts bound
    nothing), the nodes' pinned keys and what a node may claim as its profile."""
    fed = settings.federation
    bounds = fed.client_examples
    pins = node_pins(fed.num_clients)
    return Roster(profiles=claimed,
                  partition_sizes=(None if bounds is None else tuple(bounds)
                                   if isinstance(bounds, list) else (bounds,) * fed.num_clients),
                  pins=pins,
                  # checked by settings_from_cfg
                  profile_bounds=ProfileBounds.from_config(
                      fed.profile_bounds, fed.default_bandwidth_mbps, fed.min_budget_mb))


def node_pins(num_clients: int) -> dict[int, bytes] | None:
    """The operator's pinned node keys (``$PFEDNAS_NODE_KEYS``), or None."""
    try:
        return pins_from_env(num_clients)
    except ValueError as err:
        raise ConfigError(str(err)) from err


def partition_sizes(settings: RunSettings) -> tuple[int, ...] | None:
    """Each client's partition size, the bound of its ``num_examples`` (simulation only)."""
    try:
        return tuple(len(p) for p in partition(settings.data))
    except (DataError, OSError, ValueError) as err:
        print(f"[pfednas] partition sizes unknown ({err}); bounding num_examples by each "
              "client's first report", flush=True)
        return None
