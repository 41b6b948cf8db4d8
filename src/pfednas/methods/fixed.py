"""What every method builds from the settings: the seeded supernet, the baselines' fixed
model (``method.arch``: max, min, fits_all or an architecture string) and its body."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable, Mapping
from functools import lru_cache, partial
from typing import Any

import numpy as np
import torch

from pfednas.body_head import StateSplit, batchnorm_positions, complement, take
from pfednas.config import RunSettings, task_shape
from pfednas.hardware.profile import (
    ClientProfile,
    ProfileBounds,
    exclusions,
    floor_bytes,
    profile_changes,
    simulated_profiles,
)
from pfednas.hardware.spread import LEVELS, HardwareSpread
from pfednas.nas.fitting import fits_all_budgets
from pfednas.options.baselines import fixed_arch_option
from pfednas.options.common import FITS_ALL
from pfednas.records import cost_in
from pfednas.search import (
    Arch,
    Cost,
    ElasticNet,
    SearchSpace,
    SpaceConfig,
    Supernet,
    TaskShape,
)
from pfednas.search.memory_bound import budgeted_cost
from pfednas.search.width import WIDTH_SPACES, WidthSlicer, supports_width
from pfednas.seeding import MODEL_INIT, int_seed
from pfednas.strategies import Budget, PersonalizedStrategy
from pfednas.strategies.budget import FixedChoice, Roster
from pfednas.train import get_arrays
from pfednas.wire.messages import Sgd
from pfednas.wire.roles import state_roles

# a method's strategy from the settings, the federation's budget, the clients' training
# config and what the server knows of its clients and run (their profiles in a simulation,
# client_profiles; a deployment's nodes claim theirs)
StrategyBuilder = Callable[[RunSettings, Budget, Sgd, Roster], PersonalizedStrategy]


def seeded_supernet(settings: RunSettings) -> Supernet:
    """The run's initial supernet: identical for every method given the same seed."""
    return _seeded_supernet(settings.search_space, task_shape(settings), settings.seed)


def _seeded_supernet(space: SpaceConfig, task: TaskShape, seed: int) -> Supernet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int_seed(seed, MODEL_INIT))
        return space.build().build_supernet(
            num_classes=task.num_classes, in_channels=task.in_channels,
            image_size=task.image_size)


def parse_fixed_arch(space: SearchSpace, value: Any) -> Arch:
    """``method.arch`` of the baselines: ``max`` (default), ``min`` or an architecture string."""
    if value is None or value == "max":
        return space.max_arch()
    if value == "min":
        return space.min_arch()
    return space.arch_from_str(str(value))


def spread_profiles(supernet: Supernet, spread: HardwareSpread, num_clients: int, seed: int,
                    batch_size: int) -> dict[int, ClientProfile]:
    """A simulation's client profiles: ``spread``'s seeded draw, memory budgets as fractions
    of the largest subnet's training memory at ``batch_size`` (device levels: the training
    memory of the largest network's width-r slice, :func:`level_cost`)."""
    reference = supernet.cost(supernet.space.max_arch(), batch_size=batch_size).memory_bytes
    return simulated_profiles(num_clients, spread, reference, seed,
                              level_cost(supernet, spread, batch_size, "memory"))


def level_cost(supernet: Supernet, spread: HardwareSpread, batch_size: int, metric: str
               ) -> Callable[[float], float] | None:
    """A device level's budget from its width rate, in ``metric`` (memory, params, flops):
    the cost of the global model's width-rate slice (:class:`pfednas.search.width.WidthSlicer`);
    None unless ``spread`` draws memory levels. ``ValueError`` where the space cannot be
    width-scaled, or its smallest subnet fits no level."""
    if spread.memory_distribution != LEVELS:
        return None
    space = supernet.space
    if not supports_width(space):
        raise ValueError(f"federation.hardware.memory_distribution=levels needs a search space "
                         f"that can be width-scaled ({'|'.join(WIDTH_SPACES)}), got "
                         f"search_space={space.name}")
    slicer = WidthSlicer(space, supernet.task)

    def cost(rate: float) -> float:
        return cost_in(slicer.cost(rate, batch_size), metric)

    smallest_level = min(spread.memory_levels)
    smallest_subnet = supernet.cost(space.min_arch(), batch_size=batch_size).memory_bytes
    level_memory = slicer.cost(smallest_level, batch_size).memory_bytes
    if smallest_subnet > level_memory and metric == "memory":
        raise ValueError(
            f"federation.hardware.memory_levels: the smallest level (rate {smallest_level:g}, "
            f"{level_memory / 2**20:.3f} MiB) fits no subnet of search_space={space.name} (its "
            f"smallest needs {smallest_subnet / 2**20:.3f} MiB): widen the space downwards "
            "(search_space.width_mults, depths, expand_ratios) or raise the smallest rate")
    return cost



def client_profiles(settings: RunSettings) -> dict[int, ClientProfile]:
    """The one home of a simulation's client hardware: every client's profile, drawn from
    ``federation.hardware`` for the run's seed. Every method gets these: PerFedRLNAS's and
    HAPFNAS's budgets, the baselines' ``fits_all`` and every simulated round time."""
    fed = settings.federation
    return spread_profiles(seeded_supernet(settings), fed.hardware, fed.num_clients,
                           settings.seed, fed.batch_size)


def fits_all_arch(supernet: Supernet, profiles: Mapping[int, ClientProfile], seed: int,
                  batch_size: int) -> Arch:
    """The largest architecture (by parameters) within every client's memory budget."""
    def memory(arch: Arch) -> float:
        return float(supernet.cost(arch, batch_size=batch_size).memory_bytes)

    return fits_all_budgets(supernet.space, memory, [p.memory_bytes for p in profiles.values()],
                            lambda a: float(supernet.cost(a).params), seed)


def fits_all_on_profiles(settings: RunSettings, profiles: Mapping[int, ClientProfile],
                         bounds: ProfileBounds) -> tuple[Arch, dict[int, str]]:
    """A deployment's ``method.arch=fits_all``: the largest architecture within every
    claimed memory budget at or above the operator's floor (``federation.min_budget_mb``),
    and the clients excluded (below the floor, or no architecture fits them)."""
    supernet = seeded_supernet(settings)
    batch = settings.federation.batch_size

    def memory(arch: Arch) -> float:  # claimed budgets are real bytes: the calibrated bound
        cost = supernet.cost(arch, batch_size=batch)
        return float(budgeted_cost(cost, supernet.space.name, real_bytes=True).memory_bytes)

    space = supernet.space
    floor = floor_bytes(bounds.min_budget_mb, memory(space.min_arch()), memory(space.max_arch()))
    excluded = exclusions(profiles, memory(space.min_arch()), lambda p: p.memory_bytes,
                          floor=floor)
    budgets = [p.memory_bytes for cid, p in sorted(profiles.items()) if cid not in excluded]
    if not budgets:
        raise RuntimeError("method.arch=fits_all: every client is excluded (" + "; ".join(
            f"client {cid}: {why}" for cid, why in sorted(excluded.items())) + ")")
    arch = fits_all_budgets(space, memory, budgets, lambda a: float(supernet.cost(a).params),
                            settings.seed)
    return arch, excluded


def deployment_changes(settings: RunSettings, profiles: Mapping[int, ClientProfile],
                       fixed: str | None) -> list[str]:
    """What a deployment whose nodes claim their profiles (``federation.profiles=nodes``)
    changes against its simulation: each client whose profile differs, and the baselines'
    ``fits_all`` architecture where the claimed profiles chose another."""
    simulated = client_profiles(settings)
    lines = profile_changes(simulated, profiles)
    if fixed is not None:
        supernet = seeded_supernet(settings)
        drawn = fits_all_arch(supernet, simulated, settings.seed, settings.federation.batch_size)
        if fixed != drawn.to_str():
            chosen = supernet.space.arch_from_str(fixed)
            lines.append(
                f"fits_all: the nodes' profiles chose {supernet.cost(chosen).params:,} "
                f"parameters ({fixed}), the simulation's choose "
                f"{supernet.cost(drawn).params:,} ({drawn.to_str()}): every client's model "
                "differs")
    return lines


def fits_all_roster(settings: RunSettings, roster: Roster, *, deployment: bool,
                    model: Callable[[RunSettings], tuple[list[np.ndarray], list[str]]] | None
                    ) -> Roster:
    """``roster`` with the fixed model's architecture and cost, which every evaluation row
    records against the client's memory budget (:func:`fixed_cost`). A deployed baseline's
    ``method.arch=fits_all`` is chosen later, once the clients' claimed profiles are known:
    the architecture they all fit and the clients it excludes
    (:func:`fits_all_on_profiles`), its cost, and ``model``'s arrays and roles for it (the
    whole model, or the body; None: the clients hold the model). Clients get the
    architecture in every round config."""
    if not deployment or fixed_arch_option(settings.options) != FITS_ALL:
        return dataclasses.replace(
            roster, fixed_cost=fixed_cost(settings, _fixed(settings)[0], deployment=deployment))

    def choose(profiles: Mapping[int, ClientProfile], bounds: ProfileBounds) -> FixedChoice:
        arch, excluded = fits_all_on_profiles(settings, profiles, bounds)
        chosen = with_arch(settings, arch.to_str())
        arrays, roles = model(chosen) if model is not None else (None, None)
        return FixedChoice(arch.to_str(), excluded, arrays, roles,
                           fixed_cost=fixed_cost(settings, arch, deployment=True))

    return dataclasses.replace(roster, choose_fixed_arch=choose)


def with_arch(settings: RunSettings, arch: str) -> RunSettings:
    """``settings`` whose ``method.arch`` is ``arch`` (a deployment's fits_all choice, on the
    server and on its clients), the typed options parsed anew."""
    return dataclasses.replace(settings, method_options={**settings.method_options, "arch": arch})


def fixed_cost(settings: RunSettings, arch: Arch, *, deployment: bool) -> tuple[Arch, Cost]:
    """The fixed model's architecture and cost as budgets count it: its training memory at
    the run's batch (a deployment: the calibrated bound of real bytes, as its nodes' claimed
    budgets and fits_all compare)."""
    supernet = seeded_supernet(settings)
    cost = supernet.cost(arch, batch_size=settings.federation.batch_size)
    return arch, budgeted_cost(cost, supernet.space.name, real_bytes=deployment)


@lru_cache(maxsize=4)
def _fixed_model(space_json: str, task: TaskShape, seed: int, arch: str | None,
                 fits: tuple[HardwareSpread, int, int] | None) -> tuple[Arch, ElasticNet[Any]]:
    supernet = _seeded_supernet(SpaceConfig.of(json.loads(space_json)), task, seed)
    if fits is None:
        chosen = parse_fixed_arch(supernet.space, arch)
    else:
        spread, num_clients, batch = fits
        chosen = fits_all_arch(supernet, spread_profiles(supernet, spread, num_clients, seed,
                                                         batch), seed, batch)
    return chosen, supernet.extract(chosen)


def _fixed(settings: RunSettings) -> tuple[Arch, ElasticNet[Any]]:
    arch = fixed_arch_option(settings.options)
    fed = settings.federation
    fits = (fed.hardware, fed.num_clients, fed.batch_size) if arch == FITS_ALL else None
    space_json = json.dumps(settings.search_space.as_dict(), sort_keys=True)
    return _fixed_model(space_json, task_shape(settings), settings.seed,
                        arch, fits)


def fixed_model_fn(settings: RunSettings) -> Callable[[], ElasticNet[Any]]:
    """The baselines' fixed model: ``seeded_supernet(settings).extract(arch)``.

    The same initial weights for every method and client given the seed; built
    once per process (a ClientApp answers many messages), each call a fresh copy.
    ``method.arch=fits_all``: the largest architecture every client's memory budget
    admits (``fits_all_arch`` on :func:`client_profiles`).
    """
    return partial(copy.deepcopy, _fixed(settings)[1])


def fixed_arch(settings: RunSettings) -> str:
    """The architecture string of the baselines' fixed model (:func:`fixed_model_fn`)."""
    return _fixed(settings)[0].to_str()


def initial_fixed_arrays(settings: RunSettings) -> list[np.ndarray]:
    return get_arrays(fixed_model_fn(settings)())


def initial_body(settings: RunSettings) -> list[np.ndarray]:
    model = fixed_model_fn(settings)()
    return take(get_arrays(model), StateSplit.of(model).body)


def body_roles(settings: RunSettings) -> list[str]:
    """What each body array is (``pfednas.wire.roles``): BatchNorm statistics or parameters."""
    model = fixed_model_fn(settings)()
    roles = state_roles(model)
    return [roles[i] for i in StateSplit.of(model).body]


def shared_arrays(settings: RunSettings) -> tuple[list[np.ndarray], list[str]]:
    """The fixed model's initial arrays but its BatchNorm entries, and their roles (FedBN's
    server model)."""
    model = fixed_model_fn(settings)()
    arrays, roles = get_arrays(model), state_roles(model)
    shared = complement(batchnorm_positions(model), len(arrays))
    return take(arrays, shared), [roles[i] for i in shared]


def model_arrays(settings: RunSettings) -> tuple[list[np.ndarray], list[str]]:
    """The fixed model's initial arrays and their roles (FedAvg+FT's server model)."""
    model = fixed_model_fn(settings)()
    return get_arrays(model), state_roles(model)


def body_arrays(settings: RunSettings) -> tuple[list[np.ndarray], list[str]]:
    """The fixed model's initial body and its roles (FedRep's and FedBABU's server model)."""
    return initial_body(settings), body_roles(settings)
