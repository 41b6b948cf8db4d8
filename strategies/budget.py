"""What a strategy is built with: the federation's budget (:class:`Budget`: clients, rounds,
epochs, evaluations, timeouts, the seed, weighting and a deployment's bounds), how the
configured values become it, and what the server knows of its clients and its run before
the first round (:class:`Roster`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pfednas.hardware.profile import ClientProfile, ProfileBounds
from pfednas.nas.aggregation import MEDIAN, METHOD_MEAN, AggregationRule
from pfednas.settings import Federation

if TYPE_CHECKING:
    from pfednas.search import Arch, Cost


@dataclass(frozen=True)
class Budget:
    """Federation budgets every strategy takes (keyword-only, validated by the config)."""

    num_clients: int
    clients_per_round: int
    num_rounds: int
    local_epochs: int
    eval_every: int
    round_timeout: float
    seed: int
    # the federation's defaults (pfednas.settings.Federation: the one place they are stated)
    min_replies: int = Federation.min_replies
    weighting: str = "samples"        # samples | uniform (the federation's null: the method's)
    examples_tolerance: float = Federation.examples_tolerance
    eval_timeout: float | None = Federation.eval_timeout  # None: no limit
    eval_finetune: str = Federation.eval_finetune
    finetune_both: bool = Federation.finetune_both
    # a deployment whose nodes claim their own hardware (federation.profiles=nodes): profiles
    # are claims within bounds, num_examples weighs only where the operator bounds it
    # (partition_sizes), budgets count real bytes; a deployment with the simulation's
    # profiles is built as the simulation (False)
    deployment: bool = False
    # each training update's RMS at most this × the round's upper median (None: unbounded)
    update_norm_bound: float | None = None
    # how the server combines what the clients return: each method's mean, or a rule robust
    # per coordinate (pfednas.nas.aggregation)
    aggregation: AggregationRule = METHOD_MEAN

    def __post_init__(self) -> None:
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be {'|'.join(WEIGHTINGS)}, got {self.weighting!r}")
        if not self.examples_tolerance >= 0:  # NaN too
            raise ValueError(f"examples_tolerance must be >= 0, got {self.examples_tolerance}")
        if self.eval_finetune not in ("final", "all"):
            raise ValueError(f"eval_finetune must be final|all, got {self.eval_finetune!r}")
        bound = self.update_norm_bound
        if bound is not None and not 0 < bound < math.inf:
            raise ValueError(f"update_norm_bound must be null or a finite number > 0, got {bound}")


WEIGHTINGS = ("samples", "uniform")
DEPLOYMENT_NORM_BOUND = 10.0  # update_norm_bound of a deployment that sets none
DEPLOYMENT_AGGREGATION = MEDIAN  # aggregation of a deployment that sets none


def eval_timeout_for(configured: float | None, *, deployment: bool, round_timeout: float,
                     local_epochs: int, finetune_epochs: int) -> float | None:
    """``federation.eval_timeout`` as the Budget takes it: as configured; null → no limit in
    a simulation (its clients are the run's own processes), and in a deployment the round
    timeout scaled by the evaluation's work against a training round's:
    ``round_timeout × (1 + F / E)`` (F fine-tuning epochs and a test pass, where a round
    trains E epochs), so one silent node costs at most that, not Flower's 12-hour message
    lifetime."""
    if configured is not None or not deployment:
        return configured
    return round_timeout * (1 + finetune_epochs / max(local_epochs, 1))


def norm_bound_for(configured: float | None, *, deployment: bool) -> float | None:
    """``federation.update_norm_bound`` as the Budget takes it: null → off in a simulation
    (published results unchanged), :data:`DEPLOYMENT_NORM_BOUND` in a deployment; 0 → off."""
    if configured is None:
        return DEPLOYMENT_NORM_BOUND if deployment else None
    return None if configured == 0 else float(configured)


def aggregation_for(configured: str | None, trim_fraction: float, *,
                    deployment: bool) -> AggregationRule:
    """``federation.aggregation`` as the Budget takes it: null → each method's mean in a
    simulation (published results unchanged), :data:`DEPLOYMENT_AGGREGATION` in a
    deployment (the coordinate-wise median: no strict minority of the round's clients can
    steer a coordinate beyond the honest values)."""
    if configured is None:
        configured = DEPLOYMENT_AGGREGATION if deployment else "mean"
    return AggregationRule(configured, trim_fraction)


@dataclass(frozen=True)
class FixedChoice:
    """A deployment's ``method.arch=fits_all``, chosen once the nodes' profiles are known:
    the architecture every client gets, the clients it excludes (and why), and the
    strategy's new initial arrays and their roles (None: the strategy holds no model)."""

    arch: str
    excluded: Mapping[int, str]
    arrays: list[Any] | None = None
    roles: list[str] | None = None
    # the architecture's cost against the claimed budgets, for the evaluation rows
    fixed_cost: tuple[Arch, Cost] | None = None


@dataclass(frozen=True)
class Roster:
    """What the server knows of its clients and its run before the first round; a strategy
    takes it at construction and nothing sets it later."""

    # client id -> hardware profile: a simulation's seeded draw (pfednas.methods.
    # client_profiles), the same for every method; in a deployment the nodes claim theirs
    # on first contact (a resumed export: the claims the run recorded)
    profiles: Mapping[int, ClientProfile] = field(default_factory=dict)
    # each client's bound on its num_examples: its partition size (a simulation) or the
    # operator's federation.client_examples (a deployment); None: its first report
    partition_sizes: tuple[int, ...] | None = None
    pins: Mapping[int, bytes] | None = None  # client id -> its node's public key (PEM)
    # a deployment: what a node may claim as its profile (None: the defaults)
    profile_bounds: ProfileBounds | None = None
    # this run and its resumptions, sent in every round config: clients restore their saved
    # state only from files of the same lineage
    lineage: str = ""
    # a deployment's baselines with method.arch=fits_all: the choice from the claimed profiles
    choose_fixed_arch: Callable[[Mapping[int, ClientProfile], ProfileBounds],
                                FixedChoice] | None = None
    # a fixed-architecture baseline: its architecture and cost, which each evaluation row
    # records against the client's memory budget (None: a NAS method's rows carry their own;
    # a deployment's fits_all, chosen later, brings its own in its FixedChoice)
    fixed_cost: tuple[Arch, Cost] | None = None
