"""Simulated client hardware: compute slowdown, link bandwidth and memory budget.

The PerFedRLNAS paper draws memory budgets from U(2, 16) GB for models of
ImageNet size. The models here are far smaller, so budgets are drawn as
fractions of the largest subnet's estimated training memory
(``Supernet.cost(max_arch).memory_bytes``): the default U(0.25, 1.0) is a 4:1
spread (the paper's budgets spread 8:1), and most clients cannot train the largest
subnet.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class HardwareSpread:
    """A simulation's client hardware (``federation.hardware``): each field's distribution
    over the clients, uniform between low and high, drawn once per run for its seed."""

    speed_low: float = 1.0            # slowdown against a speed-1 client: U(low, high)
    speed_high: float = 4.0           # (the slowest clients are this many times slower)
    bandwidth_mbps_low: float = 100.0  # link, Mbit/s (the PerFedRLNAS paper: 100)
    bandwidth_mbps_high: float = 100.0  # (equal bounds: every link alike)
    # training-memory budget: U(low, high) x the largest subnet's estimate at the batch size,
    # a x4 spread (the papers' U(2, 16) GB is x8)
    memory_low: float = 0.25
    memory_high: float = 1.0           # (1: the best-equipped clients train the largest subnet)
    memory_budgets: bool = True        # false: no client has a memory budget
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


@dataclass(frozen=True)
class ClientHardware:
    speed_factor: float
    bandwidth_bps: float
    memory_bytes: float  # inf when budgets are off


def draw_hardware(num_clients: int, spread: HardwareSpread, reference_memory_bytes: float,
                  rng: np.random.Generator) -> list[ClientHardware]:
    speed = rng.uniform(spread.speed_low, spread.speed_high, num_clients)
    bw = rng.uniform(spread.bandwidth_mbps_low, spread.bandwidth_mbps_high, num_clients) * 1e6
    mem = rng.uniform(spread.memory_low, spread.memory_high, num_clients) * reference_memory_bytes
    if not spread.memory_budgets:
        mem = np.full(num_clients, np.inf)
    return [ClientHardware(float(s), float(b), float(m))
            for s, b, m in zip(speed, bw, mem, strict=True)]
