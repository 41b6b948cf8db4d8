"""The federation's budget a strategy runs on (:class:`Budget`: clients, rounds, epochs,
evaluations, timeouts, the seed, weighting and a deployment's bounds) and how the
configured values become it."""

from __future__ import annotations

import math
from dataclasses import dataclass


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
    min_replies: int = 1
    weighting: str = "samples"        # samples | uniform: what weights averages and merges
    examples_tolerance: float = 0.5   # deployment: allowed rise over the first num_examples
    eval_timeout: float | None = None  # seconds to wait for evaluation replies; None: no limit
    eval_finetune: str = "final"  # final: fine-tune only at the last round's evaluation | all
    finetune_both: bool = False  # evaluations also fine-tune at the other scope, report both
    # a deployment: num_examples weighs only where the operator bounds it (partition_sizes)
    deployment: bool = False
    # each training update's RMS at most this × the round's lower median (None: unbounded)
    update_norm_bound: float | None = None

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
