"""Per-client softmax policies over a search space, updated by REINFORCE.

PerFedRLNAS (Yao & Li), eqs. 5–7: client *i* holds one logit vector α_i^d per
search dimension *d*; p^d = softmax(α_i^d); an architecture v samples one
choice per dimension. For a reward r the REINFORCE ascent direction is

    r · ∇_α log p(v) = r · (onehot(v^d) − p^d)      for every dimension d.

A policy is stored flat (all dimensions concatenated) together with its
optimiser state, so that it travels into checkpoints as plain arrays. Two optimisers:
Adam, as the reference code (lr = 0.5, betas = (0.5, 0.999)), whose per-coordinate
normalisation moves a logit by ≈ lr per visit whatever the reward's size, so a policy
commits after a handful of visits; and plain gradient ascent, whose step is proportional
to the reward. The method's default is Adam 0.5, chosen on federated runs (it commits,
and that is what gets a client's own subnet trained; DESIGN.md, "Defaults come from
federated runs"): :class:`pfednas.options.perfedrlnas.PerFedRLNASOptions`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PolicyOptimizer:
    """``kind``: ``"sgd"`` (plain gradient ascent) or ``"adam"``; the method's defaults are
    :class:`pfednas.options.perfedrlnas.PerFedRLNASOptions`."""

    kind: str
    lr: float
    beta1: float = 0.5
    beta2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self) -> None:
        if self.kind not in ("sgd", "adam"):
            raise ValueError(f"policy optimizer must be 'sgd' or 'adam', got {self.kind!r}")
        if self.lr <= 0:
            raise ValueError(f"policy lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class PolicyState:
    """Flat logits and Adam moments of one client; ``steps`` counts its updates."""

    logits: np.ndarray
    m: np.ndarray
    v: np.ndarray
    steps: int = 0

    @staticmethod
    def uniform(sizes: Sequence[int]) -> PolicyState:
        n = int(sum(sizes))
        return PolicyState(np.zeros(n), np.zeros(n), np.zeros(n), 0)


def _segments(sizes: Sequence[int]) -> list[slice]:
    bounds = np.cumsum([0, *sizes])
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def probabilities(logits: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """One softmax distribution per dimension."""
    out = []
    for seg in _segments(sizes):
        z = logits[seg] - logits[seg].max()
        e = np.exp(z)
        out.append(e / e.sum())
    return out


def log_prob_gradient(logits: np.ndarray, sizes: Sequence[int],
                      indices: Sequence[int]) -> np.ndarray:
    """∇_α log p(v) = onehot(v^d) − p^d, concatenated over dimensions (eq. 7)."""
    if len(indices) != len(sizes):
        raise ValueError(f"{len(indices)} choices for {len(sizes)} dimensions")
    grad = np.empty_like(logits, dtype=np.float64)
    for seg, p, k in zip(_segments(sizes), probabilities(logits, sizes), indices, strict=True):
        g = -p
        g[k] += 1.0
        grad[seg] = g
    return grad


def reinforce_update(state: PolicyState, sizes: Sequence[int], indices: Sequence[int],
                     reward: float, opt: PolicyOptimizer) -> PolicyState:
    """One REINFORCE ascent step on ``reward · log p(indices)``."""
    g = reward * log_prob_gradient(state.logits, sizes, indices)
    if opt.kind == "sgd":
        return PolicyState(state.logits + opt.lr * g, state.m, state.v, state.steps + 1)
    t = state.steps + 1
    m = opt.beta1 * state.m + (1 - opt.beta1) * g
    v = opt.beta2 * state.v + (1 - opt.beta2) * g * g
    m_hat = m / (1 - opt.beta1**t)
    v_hat = v / (1 - opt.beta2**t)
    return PolicyState(state.logits + opt.lr * m_hat / (np.sqrt(v_hat) + opt.eps), m, v, t)


def log_probability(logits: np.ndarray, sizes: Sequence[int], indices: Sequence[int]) -> float:
    """log p(v) = Σ_d log p^d(v^d)."""
    return float(sum(np.log(p[k]) for p, k in zip(probabilities(logits, sizes), indices,
                                                   strict=True)))


def argmax_indices(logits: np.ndarray, sizes: Sequence[int]) -> list[int]:
    """The most probable choice per dimension (ties: the first, i.e. the cheapest)."""
    return [int(np.argmax(logits[seg])) for seg in _segments(sizes)]


def entropy(logits: np.ndarray, sizes: Sequence[int]) -> float:
    """Summed entropy over dimensions (nats): how undecided a policy still is."""
    return float(sum(-(p * np.log(np.clip(p, 1e-12, None))).sum()
                     for p in probabilities(logits, sizes)))
