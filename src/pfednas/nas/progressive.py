"""SPIDER-Searcher (Mushtaq et al., TMLR, Alg. 2): perturbation-based progressive search.

The local architecture is a per-edge operation mask of shape (cell types,
edges, operations) — ``darts_s2``'s :class:`~pfednas.search.CellMask` as an
array. A client's search runs in three phases, counted in the rounds ``t`` the
client has trained (``t = 0, 1, …``):

1. warm-up, ``t < t_s``: the local model trains at its initial mask;
2. search: on rounds with ``t ≥ t_s`` and ``t mod τ = 0``, for each cell type
   pick one random undecided edge (the client's own generator), measure the
   validation accuracy with each of its operations removed, **keep the
   operation whose removal lowers the accuracy most** and drop the others
   (Alg. 2, lines 6–9); ``τ`` rounds of recovery training follow;
3. final training, once every edge is decided (the caller then trains on
   train + validation — never before).

Only operation decisions are made (the reference's extra input-edge pruning
after the 14 operation decisions is not part of the paper's Alg. 2). Pure
numpy; the accuracy of a mask is a callable supplied by the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

WARMUP, SEARCH, FINAL = 1, 2, 3


@dataclass(frozen=True)
class SearchSchedule:
    """``t_s`` warm-up rounds and ``τ`` recovery rounds between decisions (Alg. 2)."""

    warmup_rounds: int
    recovery_rounds: int

    def __post_init__(self) -> None:
        if self.warmup_rounds < 0 or self.recovery_rounds < 1:
            raise ValueError("warmup_rounds must be >= 0 and recovery_rounds >= 1, got "
                             f"{self.warmup_rounds} and {self.recovery_rounds}")


@dataclass(frozen=True)
class EdgeDecision:
    cell: int
    edge: int
    kept: int
    accuracy_without: tuple[float, ...]  # per operation (NaN where not active)


def phase_of(rounds: int, decided: np.ndarray, schedule: SearchSchedule) -> int:
    if bool(np.all(decided)):
        return FINAL
    return WARMUP if rounds < schedule.warmup_rounds else SEARCH


def last_decision_round(schedule: SearchSchedule, edges: int) -> int:
    """The client round in which the search decides its last of ``edges`` edges per cell
    type (one per cell type per decision round) and the final phase begins."""
    first = schedule.warmup_rounds + (-schedule.warmup_rounds) % schedule.recovery_rounds
    return first + (edges - 1) * schedule.recovery_rounds


def is_decision_round(rounds: int, decided: np.ndarray, schedule: SearchSchedule) -> bool:
    """Alg. 2, line 3: ``t ≥ t_s`` and ``t`` a multiple of ``τ`` and an edge left."""
    return (rounds >= schedule.warmup_rounds and rounds % schedule.recovery_rounds == 0
            and not bool(np.all(decided)))


def pick_edges(decided: np.ndarray, rng: np.random.Generator) -> list[tuple[int, int]]:
    """One uniformly random undecided edge per cell type (cell types in order)."""
    picks = []
    for cell in range(decided.shape[0]):
        open_edges = np.flatnonzero(~decided[cell])
        if open_edges.size:
            picks.append((cell, int(rng.choice(open_edges))))
    return picks


def decide_edge(mask: np.ndarray, cell: int, edge: int,
                accuracy: Callable[[np.ndarray], float]) -> tuple[np.ndarray, EdgeDecision]:
    """Keep the operation whose removal hurts validation accuracy most; drop the others.

    ``accuracy(m)`` evaluates the model under mask ``m``. Ties keep the first
    operation. An edge with a single active operation keeps it unevaluated.
    """
    active = np.flatnonzero(mask[cell, edge])
    if active.size == 0:
        raise ValueError(f"edge ({cell}, {edge}) has no active operation")
    without = np.full(mask.shape[2], np.nan)
    if active.size > 1:
        for op in active:
            trial = mask.copy()
            trial[cell, edge, op] = False
            without[op] = accuracy(trial)
    kept = int(active[np.argmin(without[active])]) if active.size > 1 else int(active[0])
    new = mask.copy()
    new[cell, edge] = False
    new[cell, edge, kept] = True
    return new, EdgeDecision(cell, edge, kept, tuple(float(a) for a in without))


def search_round(mask: np.ndarray, decided: np.ndarray, rounds: int, schedule: SearchSchedule,
                 rng: np.random.Generator, accuracy: Callable[[np.ndarray], float]
                 ) -> tuple[np.ndarray, np.ndarray, list[EdgeDecision]]:
    """One round of Alg. 2: decide an edge per cell type if this is a decision round."""
    if not is_decision_round(rounds, decided, schedule):
        return mask, decided, []
    decisions = []
    decided = decided.copy()
    for cell, edge in pick_edges(decided, rng):
        mask, decision = decide_edge(mask, cell, edge, accuracy)
        decided[cell, edge] = True
        decisions.append(decision)
    return mask, decided, decisions
