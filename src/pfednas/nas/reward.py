"""PerFedRLNAS rewards (Yao & Li, eqs. 8–9) and simulated round times.

    r_i = Acc_i − mean(latest Acc of every client seen so far)
              − λ_time · (RT_i − min_j RT_j)                          (eq. 8)
    r_i = … − φ_i,  φ_i = 1, Acc_i = 0, RT_i = max_j RT_j             (eq. 9)
          for a subnet whose training memory exceeds client i's budget.

The accuracy baseline is taken after this round's measured accuracies enter
the history (so a first round is centred on its own mean); over-budget clients
measured nothing and do not enter it.

In a deployment the accuracies are claims: one client reporting 1.0 would pull every
other client's reward down by (1.0 − its true accuracy) / K through the mean. There the
baseline is the *median* of the history (``robust=True``), which one claim moves by at
most one rank; a simulation keeps the paper's mean.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass

from pfednas.search.cost_model import TRAIN_MACS_PER_FORWARD


@dataclass(frozen=True)
class Outcome:
    """One participating client's round: accuracy, round time, and whether it was over budget."""

    accuracy: float
    round_time: float
    over_budget: bool = False


def round_rewards(outcomes: Mapping[int, Outcome], history: Mapping[int, float],
                  lambda_time: float, *, robust: bool = False
                  ) -> tuple[dict[int, float], dict[int, float]]:
    """Rewards of one round, and the accuracy history updated with its measurements.

    Parameters
    ----------
    outcomes:
        client id → :class:`Outcome` for every client sampled this round.
    history:
        client id → latest measured accuracy, before this round.
    lambda_time:
        Weight of the round-time penalty (paper: 0.001 per second).
    robust:
        The median of the history as the baseline instead of its mean (a deployment).
    """
    new_history = dict(history)
    for cid, out in outcomes.items():
        if not out.over_budget:
            new_history[cid] = out.accuracy
    if not new_history:
        baseline = 0.0
    elif robust:
        baseline = float(statistics.median(new_history.values()))
    else:
        baseline = sum(new_history.values()) / len(new_history)
    measured = [o.round_time for o in outcomes.values() if not o.over_budget]
    fastest = min(measured) if measured else 0.0
    slowest = max(measured) if measured else 0.0
    rewards = {}
    for cid, out in outcomes.items():
        if out.over_budget:
            rewards[cid] = 0.0 - baseline - lambda_time * (slowest - fastest) - 1.0
        else:
            rewards[cid] = out.accuracy - baseline - lambda_time * (out.round_time - fastest)
    return rewards, new_history


def simulated_round_time(*, compute_seconds: float, speed_factor: float, bytes_moved: int,
                         bandwidth_bps: float) -> float:
    """Compute time of a speed-1 client × the client's slowdown + transfer time over its link."""
    return compute_seconds * speed_factor + 8.0 * bytes_moved / bandwidth_bps




def training_seconds(*, forward_macs_per_sample: float, samples: int, epochs: int,
                     macs_per_second: float) -> float:
    """Deterministic compute time of local training on a speed-1 client (the cost model).

    ``forward_macs_per_sample``: ``Supernet.cost(arch).flops`` at batch size 1.
    """
    return (TRAIN_MACS_PER_FORWARD * forward_macs_per_sample * samples * epochs
            / macs_per_second)
