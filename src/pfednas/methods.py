"""Method registry: each method's server strategy, client role and option check.

Adding a method = a Strategy subclass in ``strategies/``, a NumPyClient in
``clients/``, a ``conf/method/<name>.yaml`` and one :class:`MethodSpec` here.
The CLI validates options with ``check`` before anything starts; the ServerApp
calls ``strategy``; the ClientApp calls ``client``.
"""

from __future__ import annotations

import copy
import dataclasses
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

from pfednas.body_head import FINETUNE_SCOPES, StateSplit, check_scope, take
from pfednas.clients import FedAvgClient, LocalClient, SpiderClient, SubnetClient
from pfednas.clients.common import ClientEnv
from pfednas.clients.fedbabu import FedBABUClient
from pfednas.clients.fednas import FedNASClient
from pfednas.clients.fedrep import FedRepClient
from pfednas.clients.hapfnas import HAPFNASClient, knowledge_model
from pfednas.clients.spider_state import SpiderOptions, run_fingerprint
from pfednas.config import ConfigError, Federation, RunSettings, task_shape
from pfednas.data import DataSpec, partition
from pfednas.data.arrays import select
from pfednas.data.registry import load_raw, normalisation
from pfednas.nas.distill import TransferSet, synthetic_inputs
from pfednas.nas.fitting import fits_all_budgets
from pfednas.nas.heterogeneity import HardwareSpread
from pfednas.nas.profile import (
    ClientProfile,
    ProfileBounds,
    exclusions,
    floor_bytes,
    simulated_profiles,
)
from pfednas.nas.roles import state_roles
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
from pfednas.search.memory_bound import budgeted_cost
from pfednas.seeding import MODEL_INIT, int_seed, numpy_rng
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
from pfednas.strategies.hapfnas import HAPFNASOptions, HAPFNASStrategy, TransferOptions
from pfednas.train import get_arrays

StrategyBuilder = Callable[[RunSettings, Budget, dict[str, Any]], PersonalizedStrategy]
ClientBuilder = Callable[[RunSettings, ClientEnv, Context], NumPyClient]
OptionCheck = Callable[[dict[str, Any], Federation], None]
DataCheck = Callable[[dict[str, Any], DataSpec], None]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    strategy: StrategyBuilder
    client: ClientBuilder
    check: OptionCheck | None = None
    spaces: tuple[str, ...] = ()  # search spaces the method works on (empty: every one)
    data_check: DataCheck | None = None  # what the method needs of the data, checked pre-launch
    # whether its clients choose anything by their validation split (a reward, measurements,
    # architecture steps, decisions): a tuning run then scores the other half of it
    selects_on_val: bool = False


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


# Memory budgets of the NAS methods (conf/method/perfedrlnas.yaml ``hardware.memory_*``,
# hapfnas.yaml ``budget``): U(low, high) × the largest subnet's training memory.
BUDGET_SPREAD = HardwareSpread(memory_low=0.25, memory_high=1.0)
FITS_ALL = "fits_all"


def parse_fixed_arch(space: SearchSpace, value: Any) -> Arch:
    """``method.arch`` of the baselines: ``max`` (default), ``min`` or an architecture string."""
    if value is None or value == "max":
        return space.max_arch()
    if value == "min":
        return space.min_arch()
    return space.arch_from_str(str(value))


def fits_all_arch(supernet: Supernet, num_clients: int, seed: int, batch_size: int) -> Arch:
    """The largest architecture (by parameters) within every client's memory budget."""
    def memory(arch: Arch) -> float:
        return float(supernet.cost(arch, batch_size=batch_size).memory_bytes)

    profiles = simulated_profiles(num_clients, BUDGET_SPREAD, memory(supernet.space.max_arch()),
                                  seed)
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


def fits_all_in_deployment(settings: RunSettings, strategy: PersonalizedStrategy,
                           adopt: Callable[[PersonalizedStrategy, RunSettings], None]
                           ) -> PersonalizedStrategy:
    """A baseline's strategy whose ``method.arch=fits_all`` in a deployment is chosen from
    the clients' claimed profiles once they are known: ``adopt`` then sets the strategy's
    model from the settings with that architecture; clients get it in every round config."""
    if not strategy.budget.deployment or settings.method_options.get("arch") != FITS_ALL:
        return strategy

    def choose(chosen: PersonalizedStrategy) -> None:
        assert chosen.profile_bounds is not None
        arch, chosen.excluded = fits_all_on_profiles(settings, chosen.profiles,
                                                     chosen.profile_bounds)
        chosen.fixed_arch = arch.to_str()
        adopt(chosen, dataclasses.replace(settings, method_options={
            **settings.method_options, "arch": chosen.fixed_arch}))

    strategy.choose_fixed_arch = choose
    return strategy


def _adopt_model(strategy: PersonalizedStrategy, settings: RunSettings) -> None:
    assert isinstance(strategy, FedAvgFTStrategy)
    model = fixed_model_fn(settings)()
    strategy.arrays, strategy.roles = get_arrays(model), state_roles(model)


def _adopt_body(strategy: PersonalizedStrategy, settings: RunSettings) -> None:
    assert isinstance(strategy, FedAvgFTStrategy)
    strategy.arrays, strategy.roles = initial_body(settings), body_roles(settings)


@lru_cache(maxsize=4)
def _fixed_model(space_json: str, task: TaskShape, seed: int, arch: str | None,
                 fits: tuple[int, int] | None) -> ElasticNet[Any]:
    space_cfg = json.loads(space_json)
    supernet = _seeded_supernet(space_cfg, task, seed)
    chosen = (fits_all_arch(supernet, fits[0], seed, fits[1]) if fits is not None
              else parse_fixed_arch(supernet.space, arch))
    return supernet.extract(chosen)


def fixed_model_fn(settings: RunSettings) -> Callable[[], ElasticNet[Any]]:
    """The baselines' fixed model: ``seeded_supernet(settings).extract(arch)``.

    The same initial weights for every method and client given the seed; built
    once per process (a ClientApp answers many messages), each call a fresh copy.
    ``method.arch=fits_all``: the largest architecture every client's memory budget
    admits (``fits_all_arch``).
    """
    arch = settings.method_options.get("arch")
    fed = settings.federation
    fits = (fed.num_clients, fed.batch_size) if arch == FITS_ALL else None
    model = _fixed_model(json.dumps(settings.search_space, sort_keys=True), task_shape(settings),
                         settings.seed, None if arch is None else str(arch), fits)
    return partial(copy.deepcopy, model)


def initial_fixed_arrays(settings: RunSettings) -> list[np.ndarray]:
    return get_arrays(fixed_model_fn(settings)())


def _check_fixed_arch(options: dict[str, Any]) -> None:
    value = options.get("arch", "max")
    if value in (None, "max", "min", FITS_ALL):
        return
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(f"method.arch must be max, min, {FITS_ALL} or an architecture string, "
                          f"got {value!r}")


def _check_int(options: dict[str, Any], key: str, low: int) -> None:
    value = options.get(key, low)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"method.{key} must be an integer >= {low}, got {value!r}")


# -- fedavg + fine-tuning ----------------------------------------------------------------------
def _fedavg_strategy(settings: RunSettings, budget: Budget,
                     train_config: dict[str, Any]) -> PersonalizedStrategy:
    model = fixed_model_fn(settings)()
    return fits_all_in_deployment(settings, FedAvgFTStrategy(
        budget=budget, train_config=train_config, initial_arrays=get_arrays(model),
        array_roles=state_roles(model),
        finetune_epochs=int(settings.method_options.get("finetune_epochs", 0)),
        finetune_scope=str(settings.method_options.get("finetune_scope", "full"))),
        _adopt_model)


def _fedavg_client(settings: RunSettings, env: ClientEnv, context: Context) -> NumPyClient:
    return FedAvgClient(env, fixed_model_fn(settings))


def _fedavg_check(options: dict[str, Any], fed: Federation) -> None:
    _check_int(options, "finetune_epochs", 0)
    try:
        check_scope("method.finetune_scope", options.get("finetune_scope", "full"),
                    FINETUNE_SCOPES)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    _check_fixed_arch(options)


# -- local -------------------------------------------------------------------------------------
def _local_strategy(settings: RunSettings, budget: Budget,
                    train_config: dict[str, Any]) -> PersonalizedStrategy:
    return fits_all_in_deployment(settings, LocalStrategy(budget=budget,
                                                          train_config=train_config),
                                  lambda strategy, chosen: None)  # the clients hold the model


def _local_client(settings: RunSettings, env: ClientEnv, context: Context) -> NumPyClient:
    return LocalClient(env, fixed_model_fn(settings), context.state)


def _local_check(options: dict[str, Any], fed: Federation) -> None:
    _check_fixed_arch(options)


# -- fedrep / fedbabu: FedAvg on the body of the fixed model -----------------------------------
def initial_body(settings: RunSettings) -> list[np.ndarray]:
    model = fixed_model_fn(settings)()
    return take(get_arrays(model), StateSplit.of(model).body)


def body_roles(settings: RunSettings) -> list[str]:
    """What each body array is (``pfednas.nas.roles``): BatchNorm statistics or parameters."""
    model = fixed_model_fn(settings)()
    roles = state_roles(model)
    return [roles[i] for i in StateSplit.of(model).body]


def _fedrep_strategy(settings: RunSettings, budget: Budget,
                     train_config: dict[str, Any]) -> PersonalizedStrategy:
    return fits_all_in_deployment(settings, FedRepStrategy(
        budget=budget, train_config=train_config, initial_body=initial_body(settings),
        body_roles=body_roles(settings),
        options=FedRepOptions.from_config(settings.method_options)), _adopt_body)


def _fedrep_client(settings: RunSettings, env: ClientEnv, context: Context) -> NumPyClient:
    return FedRepClient(env, fixed_model_fn(settings), context.state)


def _fedbabu_strategy(settings: RunSettings, budget: Budget,
                      train_config: dict[str, Any]) -> PersonalizedStrategy:
    return fits_all_in_deployment(settings, FedBABUStrategy(
        budget=budget, train_config=train_config, initial_body=initial_body(settings),
        body_roles=body_roles(settings),
        options=FedBABUOptions.from_config(settings.method_options)), _adopt_body)


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
    options = settings.method_options
    return SubnetClient(env, get_space(**settings.search_space), task_shape(settings),
                        bn_recalibrate=bool(options.get("bn_recalibrate")),
                        personal_head=bool(options.get("personal_head", False)),
                        state=context.state)


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
    """SPIDER's / Ditto's options. A tuning run (``eval_split=val``) scores half of the
    validation split, so there the final phase never trains on val (``train_on_val_when_final``
    off): the score stays on samples no model saw."""
    options = SpiderOptions.from_config(settings.method_options,
                                        search=settings.method == "spider")
    if settings.eval_split == "val":
        options = dataclasses.replace(options, train_on_val_when_final=False)
    return options


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
    options = FedNASOptions.from_config(settings.method_options)
    return FedNASClient(env, _darts_space(settings), task_shape(settings),
                        bn_recalibrate=options.bn_recalibrate)


# -- hapfnas: distillation, predictors + evolutionary search, heteroFedAvg ---------------------
HAPFNAS_TRANSFER = 605  # seeding purpose tag of the server's transfer set


def _hapfnas_options(options: dict[str, Any]) -> HAPFNASOptions:
    try:
        return HAPFNASOptions.from_config(options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"method (hapfnas): {err}") from err


def unheld_indices(spec: DataSpec) -> np.ndarray:
    """Pool samples in no client's partition (sorted): partitions stay those of every method."""
    total = len(load_raw(spec.name, spec.root, seed=spec.seed,
                         synthetic_samples=spec.synthetic_samples).labels)
    return np.setdiff1d(np.arange(total), np.concatenate(partition(spec)))


def resolve_transfer(options: TransferOptions, spec: DataSpec) -> TransferOptions:
    """``source: auto``: holdout when the pool keeps ``size`` samples no client holds,
    else synthetic inputs (digits: the clients hold the whole pool)."""
    if options.source != "auto":
        return options
    enough = len(unheld_indices(spec)) >= options.size
    return dataclasses.replace(options, source="holdout" if enough else "synthetic")


def _hapfnas_data_check(options: dict[str, Any], spec: DataSpec) -> None:
    transfer = resolve_transfer(_hapfnas_options(options).transfer, spec)
    if spec.val_fraction <= 0:
        raise ConfigError("method=hapfnas measures subnets on the clients' validation splits: "
                          "dataset.val_fraction must be > 0")
    if transfer.source != "holdout":
        return
    free = len(unheld_indices(spec))
    if free < transfer.size:
        raise ConfigError(
            f"method.transfer.source=holdout needs method.transfer.size={transfer.size} pool "
            f"samples that no client holds, but {spec.name} with {spec.num_clients} clients "
            f"leaves {free} unheld (dataset.max_samples_per_client="
            f"{spec.max_samples_per_client}); lower method.transfer.size, cap the clients with "
            "dataset.max_samples_per_client, or use method.transfer.source=synthetic")


def hapfnas_transfer(settings: RunSettings, options: TransferOptions) -> TransferSet:
    """The server's transfer set: unheld pool samples or synthetic inputs (see nas/distill.py).

    The labelled report split is the held-out part (holdout) or, for synthetic inputs,
    as many unheld pool samples as there are held-out inputs (None if there are none).
    """
    spec, task = settings.data, task_shape(settings)
    options = resolve_transfer(options, spec)
    raw = load_raw(spec.name, spec.root, seed=spec.seed, synthetic_samples=spec.synthetic_samples)
    norm = normalisation(spec.name)
    rng = numpy_rng(settings.seed, HAPFNAS_TRANSFER)
    free = rng.permutation(unheld_indices(spec))
    n_distill, n_held = options.counts()
    if options.source == "synthetic":
        x = synthetic_inputs(options.size, (task.in_channels, task.image_size, task.image_size),
                             rng)
        labelled = select(raw, np.sort(free[:n_held]), norm) if free.size else None
        return TransferSet(distill=x[:n_distill], heldout=x[n_distill:], labelled=labelled)
    if free.size < options.size:
        raise ConfigError(f"method.transfer.size={options.size} > {free.size} unheld samples")
    held = select(raw, np.sort(free[n_distill:options.size]), norm)
    return TransferSet(distill=select(raw, np.sort(free[:n_distill]), norm).x, heldout=held.x,
                       labelled=held)


def _knowledge_fn(settings: RunSettings, width: int) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int_seed(settings.seed, MODEL_INIT, HAPFNAS_TRANSFER))
            return knowledge_model(task_shape(settings), width)
    return build


def _hapfnas_strategy(settings: RunSettings, budget: Budget,
                      train_config: dict[str, Any]) -> PersonalizedStrategy:
    opts = _hapfnas_options(settings.method_options)
    transfer = resolve_transfer(opts.transfer, settings.data)
    if transfer != opts.transfer:
        print(f"[pfednas] hapfnas: method.transfer.source=auto -> {transfer.source} "
              f"({settings.data.name}, {settings.data.num_clients} clients)", flush=True)
        opts = dataclasses.replace(opts, transfer=transfer)
    return HAPFNASStrategy(budget=budget, train_config=train_config,
                           supernet=seeded_supernet(settings), options=opts,
                           transfer=hapfnas_transfer(settings, opts.transfer),
                           knowledge_fn=_knowledge_fn(settings, opts.knowledge_width))


def _hapfnas_client(settings: RunSettings, env: ClientEnv, context: Context) -> NumPyClient:
    opts = _hapfnas_options(settings.method_options)
    return HAPFNASClient(env, get_space(**settings.search_space), task_shape(settings),
                         knowledge_width=opts.knowledge_width,
                         bn_recalibrate=opts.bn_recalibrate,
                         personal_head=opts.personal_head, state=context.state)


def _hapfnas_check(options: dict[str, Any], fed: Federation) -> None:
    opts = _hapfnas_options(options)
    try:
        opts.plan(fed.num_rounds)
    except ValueError as err:
        raise ConfigError(f"method (hapfnas): {err}") from err


METHODS: Mapping[str, MethodSpec] = MappingProxyType({spec.name: spec for spec in (
    MethodSpec("fedavg", _fedavg_strategy, _fedavg_client, _fedavg_check),
    MethodSpec("local", _local_strategy, _local_client, _local_check),
    MethodSpec("perfedrlnas", _perfedrlnas_strategy, _perfedrlnas_client, _perfedrlnas_check,
               selects_on_val=True),
    MethodSpec("spider", _spider_strategy, _spider_client, partial(_spider_check, search=True),
               spaces=("darts_s2",), selects_on_val=True),
    MethodSpec("ditto", _spider_strategy, _spider_client, partial(_spider_check, search=False),
               spaces=("darts_s2",)),
    MethodSpec("fedrep", _fedrep_strategy, _fedrep_client,
               partial(_options_check, FedRepOptions.from_config, "fedrep")),
    MethodSpec("fedbabu", _fedbabu_strategy, _fedbabu_client,
               partial(_options_check, FedBABUOptions.from_config, "fedbabu")),
    MethodSpec("fednas", _fednas_strategy, _fednas_client,
               partial(_options_check, FedNASOptions.from_config, "fednas"),
               spaces=("darts_s2",), selects_on_val=True),
    MethodSpec("hapfnas", _hapfnas_strategy, _hapfnas_client, _hapfnas_check,
               data_check=_hapfnas_data_check, selects_on_val=True),
)})
