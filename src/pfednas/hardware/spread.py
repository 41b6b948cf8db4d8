"""Simulated client hardware: compute slowdown, link bandwidth and memory budget.

The PerFedRLNAS paper draws memory budgets from U(2, 16) GB for models of
ImageNet size. The models here are far smaller, so budgets are drawn as
fractions of the largest subnet's estimated training memory
(``Supernet.cost(max_arch).memory_bytes``): the default U(0.25, 1.0) is a 4:1
spread (the paper's budgets spread 8:1), and most clients cannot train the largest
subnet.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

UNIFORM, LOG_UNIFORM, LEVELS = "uniform", "log_uniform", "levels"
MEMORY_DISTRIBUTIONS = (UNIFORM, LOG_UNIFORM, LEVELS)
HETEROFL_RATES = (1.0, 0.5, 0.25, 0.125, 0.0625)
"""HeteroFL's five capacity levels (model rates 1, 1/2, 1/4, 1/8, 1/16; Diao et al., ICLR'21)."""


@dataclass(frozen=True)
class HardwareSpread:
    """A simulation's client hardware (``federation.hardware``): each field's distribution
    over the clients, drawn once per run for its seed (uniform between low and high; memory
    also log-uniform, or discrete device levels with shares)."""

    speed_low: float = 1.0            # slowdown against a speed-1 client: U(low, high)
    speed_high: float = 4.0           # (the slowest clients are this many times slower)
    bandwidth_mbps_low: float = 100.0  # link, Mbit/s (the PerFedRLNAS paper: 100)
    bandwidth_mbps_high: float = 100.0  # (equal bounds: every link alike)
    # training-memory budget: U(low, high) x the largest subnet's estimate at the batch size,
    # a x4 spread (the papers' U(2, 16) GB is x8)
    memory_low: float = 0.25
    memory_high: float = 1.0           # (1: the best-equipped clients train the largest subnet)
    memory_budgets: bool = True        # false: no client has a memory budget
    # uniform: U(memory_low, memory_high) x the largest subnet's | log_uniform: log-uniform
    # between the same bounds (a x16 spread: memory_low=0.0625) | levels: each client one of
    # memory_levels, a width rate r whose budget is the training memory of the global model's
    # width-r slice (HeteroFL's client of level r fits exactly; search_space=mobilenetv3)
    memory_distribution: str = UNIFORM
    # levels: the width rates (in (0, 1]); the default is HeteroFL's five, 1 .. 1/16
    memory_levels: Any = field(default_factory=lambda: list(HETEROFL_RATES))
    # levels: each level's share of the clients (summing to 1); null: equal shares
    memory_level_shares: Any = None
    # true: a small device is also a slow one: each client's slowdown runs from speed_low
    # (the largest memory) to speed_high (the smallest), log-linearly in its memory
    speed_follows_memory: bool = False
    # multiply-accumulates per second of a speed-1 client: the simulated round time's
    # compute term (``pfednas.nas.reward.training_seconds``)
    macs_per_second: float = 1e9

    def __post_init__(self) -> None:
        for name in ("speed", "bandwidth_mbps", "memory"):
            low, high = getattr(self, f"{name}_low"), getattr(self, f"{name}_high")
            if not 0 < low <= high:
                raise ValueError(f"hardware.{name}: need 0 < low <= high, got {low}, {high}")
        if not self.macs_per_second > 0:
            raise ValueError(f"hardware.macs_per_second must be > 0, got {self.macs_per_second}")
        if self.memory_distribution not in MEMORY_DISTRIBUTIONS:
            raise ValueError(f"hardware.memory_distribution must be "
                             f"{'|'.join(MEMORY_DISTRIBUTIONS)}, got {self.memory_distribution!r}")
        object.__setattr__(self, "memory_levels", _rates(self.memory_levels))
        object.__setattr__(self, "memory_level_shares",
                           _shares(self.memory_level_shares, len(self.memory_levels)))

    @property
    def levels(self) -> tuple[tuple[float, float], ...]:
        """(rate, share) of each device level, largest first (``memory_distribution:
        levels``)."""
        shares = self.memory_level_shares or (1 / len(self.memory_levels),) * len(
            self.memory_levels)
        return tuple(sorted(zip(self.memory_levels, shares, strict=True), reverse=True))


def _rates(value: Any) -> tuple[float, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        raise ValueError(f"hardware.memory_levels must be a non-empty list of rates, got {value!r}")
    for rate in value:
        if not (isinstance(rate, int | float) and not isinstance(rate, bool)
                and math.isfinite(rate) and 0 < rate <= 1):
            raise ValueError(f"hardware.memory_levels: each rate must be in (0, 1], got {rate!r}")
    if len(set(value)) != len(value):
        raise ValueError(f"hardware.memory_levels: rates must differ, got {list(value)}")
    return tuple(float(r) for r in value)


def _shares(value: Any, levels: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != levels:
        raise ValueError(f"hardware.memory_level_shares must be null or a list of {levels} "
                         f"shares (one per memory_levels entry), got {value!r}")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
               and v > 0 for v in value):
        raise ValueError(f"hardware.memory_level_shares: each share must be > 0, got "
                         f"{list(value)}")
    if abs(sum(value) - 1) > 1e-6:
        raise ValueError(f"hardware.memory_level_shares must sum to 1, got {list(value)} "
                         f"(sum {sum(value):g})")
    return tuple(float(v) for v in value)


@dataclass(frozen=True)
class ClientHardware:
    speed_factor: float
    bandwidth_bps: float
    memory_bytes: float  # inf when budgets are off
    level: float | None = None  # memory_distribution levels: the client's width rate


def level_counts(shares: Sequence[float], num_clients: int) -> list[int]:
    """Clients per level: ``share × num_clients`` rounded by largest remainder (ties to the
    earlier level), summing to ``num_clients``."""
    exact = [s * num_clients for s in shares]
    counts = [math.floor(e) for e in exact]
    order = sorted(range(len(shares)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:num_clients - sum(counts)]:
        counts[i] += 1
    return counts


def draw_hardware(num_clients: int, spread: HardwareSpread, reference_memory_bytes: float,
                  rng: np.random.Generator,
                  level_memory: Callable[[float], float] | None = None) -> list[ClientHardware]:
    """Each client's hardware. ``level_memory``: a level's memory budget from its width rate
    (``memory_distribution: levels``; the training memory of the global model's slice).
    The uniform spread's draws are those of every earlier version."""
    speed = rng.uniform(spread.speed_low, spread.speed_high, num_clients)
    bw = rng.uniform(spread.bandwidth_mbps_low, spread.bandwidth_mbps_high, num_clients) * 1e6
    levels: list[float | None] = [None] * num_clients
    if spread.memory_distribution == LEVELS:
        if level_memory is None:
            raise ValueError("hardware.memory_distribution=levels needs each level's memory")
        rates = [rate for rate, _ in spread.levels]
        counts = level_counts([share for _, share in spread.levels], num_clients)
        order = rng.permutation(num_clients)
        assigned = [rate for rate, n in zip(rates, counts, strict=True) for _ in range(n)]
        for cid, rate in zip(order, assigned, strict=True):
            levels[int(cid)] = rate
        mem = np.array([level_memory(r) for r in levels if r is not None])
        bounds = (level_memory(min(rates)), level_memory(max(rates)))
    elif spread.memory_distribution == LOG_UNIFORM:
        mem = np.exp(rng.uniform(math.log(spread.memory_low), math.log(spread.memory_high),
                                 num_clients)) * reference_memory_bytes
        bounds = (spread.memory_low * reference_memory_bytes,
                  spread.memory_high * reference_memory_bytes)
    else:
        mem = rng.uniform(spread.memory_low, spread.memory_high,
                          num_clients) * reference_memory_bytes
        bounds = (spread.memory_low * reference_memory_bytes,
                  spread.memory_high * reference_memory_bytes)
    if spread.speed_follows_memory:
        speed = np.array([slowdown(m, bounds, (spread.speed_low, spread.speed_high))
                          for m in mem])
    if not spread.memory_budgets:
        mem = np.full(num_clients, np.inf)
    return [ClientHardware(float(s), float(b), float(m), level)
            for s, b, m, level in zip(speed, bw, mem, levels, strict=True)]


def slowdown(memory: float, memory_bounds: tuple[float, float],
             speed_bounds: tuple[float, float]) -> float:
    """A client's slowdown when speed follows memory: ``speed_low`` at the largest memory,
    ``speed_high`` at the smallest, log-linear in between."""
    low_mem, high_mem = memory_bounds
    fast, slow = speed_bounds
    if high_mem <= low_mem or fast == slow:
        return fast
    t = math.log(high_mem / memory) / math.log(high_mem / low_mem)
    return fast * (slow / fast) ** min(1.0, max(0.0, t))
