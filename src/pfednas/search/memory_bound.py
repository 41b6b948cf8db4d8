"""Real bytes a subnet's training needs: the cost model's memory estimate, calibrated.

:attr:`~pfednas.search.arch.Cost.memory_bytes` (weights, gradients, optimizer
state and every leaf module's output) is what the *simulation* compares budgets
with; those budgets are fractions of the largest subnet's estimate, so only the
ratios of estimates matter there and the estimate stays as it is (published
cells depend on it).

A *deployment* compares the estimate with real bytes (a node's stated or
measured budget), and there the estimate undercounts: measured in a fresh
process, as a deployed ClientApp runs (``benchmarks/bench_cost_model.py``,
``docs/MEASUREMENTS.md`` "Cost model against measurement"), the peak resident
memory of building a subnet and training it two steps is the estimate times a
factor (autograd keeps tensors that are no module's output: residual sums,
concatenations, reshaped copies) plus a constant of tens of MiB (the first
training step maps PyTorch's and oneDNN's code and allocator pools).
:func:`training_memory_upper_bound` is that line, fitted per search space with a
margin, and :data:`CALIBRATION` holds its constants as
:func:`derive_calibration` computes them from the committed measurements
(``docs/bench/cost_model/results.json``; a test recomputes them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np

from pfednas.search.arch import Cost

MIB = 2**20
FACTOR_STEP = 0.05
SLOPE_MARGIN = 1.10  # the fitted slope × this: room for architectures the sample missed
NOISE_SDS = 3  # the constant's margin: this many standard deviations of repeated measurements


@dataclass(frozen=True)
class MemoryCalibration:
    """``bound = factor × Cost.memory_bytes + constant_bytes`` for one search space."""

    factor: float
    constant_bytes: int

    def bound(self, estimate_bytes: float) -> int:
        return math.ceil(self.factor * estimate_bytes) + self.constant_bytes


@dataclass(frozen=True)
class MemorySample:
    """One subnet's estimate (``Cost.memory_bytes``) and its measured peak, in bytes."""

    estimate_bytes: int
    measured_bytes: int


CALIBRATION: Mapping[str, MemoryCalibration] = MappingProxyType({
    "darts_s2": MemoryCalibration(factor=1.1, constant_bytes=107 * MIB),
    "mobilenetv3": MemoryCalibration(factor=1.4, constant_bytes=39 * MIB),
    "vit": MemoryCalibration(factor=1.6, constant_bytes=51 * MIB),
})
"""Per search space, as ``benchmarks/bench_cost_model.py`` prints them (PyTorch 2.14 on an
x86 CPU with AVX512, glibc, one torch thread, batch sizes 8 to 64)."""


def training_memory_upper_bound(cost: Cost, space: str) -> int:
    """Bytes a fresh process needs to build a subnet and train it, beyond what it held before.

    Use this, not ``cost.memory_bytes``, wherever a cost meets a budget in real
    bytes, i.e. in a deployment: a node's stated (``memory-budget-mb``) or
    probed memory budget is fit by an architecture when
    ``training_memory_upper_bound(supernet.cost(arch, batch_size=B), space.name)
    <= budget_bytes``, ``B`` the run's training batch size. The budget it is
    compared with is what is left *after* the ClientApp has imported PyTorch and
    pfednas (the probe: limit minus the process's resident memory, minus a
    margin). Simulated budgets (fractions of the largest subnet's estimate)
    keep comparing ``cost.memory_bytes``.

    Measured on CPU with one torch thread, SGD with momentum (one optimizer
    state); more threads add a few MiB, another optimizer or a GPU is not
    covered. ``space`` is the search space's name (``SearchSpace.name``).
    """
    if space not in CALIBRATION:
        raise ValueError(f"no memory calibration for search space {space!r}; "
                         f"known: {', '.join(sorted(CALIBRATION))}")
    return CALIBRATION[space].bound(cost.memory_bytes)


def budgeted_cost(cost: Cost, space: str, *, real_bytes: bool) -> Cost:
    """The cost a memory budget is compared with, for one place to decide it.

    ``real_bytes`` (a deployment: budgets a node stated or measured in bytes):
    ``memory_bytes`` raised to :func:`training_memory_upper_bound`; otherwise (a
    simulation: budgets are fractions of the largest subnet's estimate) the cost as
    the model estimates it.
    """
    if not real_bytes:
        return cost
    return replace(cost, memory_bytes=training_memory_upper_bound(cost, space))


def derive_calibration(samples: Sequence[MemorySample], noise_sd_bytes: float) -> MemoryCalibration:
    """The bound's constants from measurements: a least-squares line, then margins.

    ``factor``: the fitted slope (at least 1: never below the estimate's own
    scale) × :data:`SLOPE_MARGIN`, rounded up to :data:`FACTOR_STEP`.
    ``constant_bytes``: the largest ``measured - factor × estimate`` of the
    samples plus :data:`NOISE_SDS` × ``noise_sd_bytes``, rounded up to a MiB.
    Every sample is then below its bound by at least that noise margin.
    """
    if len(samples) < 2:
        raise ValueError(f"need at least 2 samples, got {len(samples)}")
    estimate = np.array([s.estimate_bytes for s in samples], dtype=np.float64)
    measured = np.array([s.measured_bytes for s in samples], dtype=np.float64)
    slope = float(np.polyfit(estimate, measured, 1)[0]) if np.ptp(estimate) > 0 else 1.0
    factor = math.ceil(round(max(slope, 1.0) * SLOPE_MARGIN / FACTOR_STEP, 6)) * FACTOR_STEP
    factor = round(factor, 2)
    excess = float(np.max(measured - factor * estimate)) + NOISE_SDS * noise_sd_bytes
    return MemoryCalibration(factor=factor, constant_bytes=max(0, math.ceil(excess / MIB)) * MIB)
