"""The largest architecture every client can train: the fixed-architecture baselines'
model when memory budgets are on (the constraint NAS is meant to lift).

Budgets are the clients' profiles (:mod:`pfednas.hardware.profile`): in a simulation
those PerFedRLNAS and HAPFNAS draw for the same seed (the ``HARDWARE`` stream,
U(low, high) × the largest subnet's training memory), so a baseline of a bench cell
gets the largest model that fits the cell's tightest client; in a deployment the
claimed budgets at or above the operator's floor. "Largest" = most parameters: random
samples plus the smallest and largest architectures, then a greedy climb that
raises one dimension's choice at a time while the result still fits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pfednas.hardware.profile import fits
from pfednas.search import Arch, SearchSpace
from pfednas.seeding import FIXED_ARCH_SEARCH, HARDWARE, LARGEST_IN_BUDGET, numpy_rng


def largest_fitting_arch(space: SearchSpace, fits: Callable[[Arch], bool],
                         size: Callable[[Arch], Any], rng: np.random.Generator | None,
                         samples: int = 2000, candidates: list[Arch] | None = None) -> Arch:
    """The architecture of largest ``size`` (a number, or a tuple compared in order) among
    those that ``fits`` (found by sampling and a greedy climb); the smallest architecture if
    nothing else fits. ``candidates``: the samples to start from (default: ``samples``
    drawn with ``rng``)."""
    if candidates is None:
        assert rng is not None
        candidates = [space.min_arch(), space.max_arch(),
                      *(space.sample(rng) for _ in range(samples))]
    fitting = [a for a in candidates if fits(a)]
    if not fitting:
        return space.min_arch()
    best = max(fitting, key=lambda a: (size(a), a.indices))
    sizes = [len(d.choices) for d in space.dimensions]
    improved = True
    while improved:
        improved = False
        for d, n in enumerate(sizes):
            if best.indices[d] + 1 >= n:
                continue
            indices = list(best.indices)
            indices[d] += 1
            step = space.arch_from_indices(indices)
            if fits(step) and size(step) > size(best):
                best, improved = step, True
    return best


def fits_all_budgets(space: SearchSpace, memory: Callable[[Arch], float],
                     budgets: list[float], size: Callable[[Arch], float], seed: int) -> Arch:
    """The largest architecture (by ``size``) whose ``memory`` is within every one of
    ``budgets``: the fixed-architecture baselines' ``method.arch=fits_all`` (the same
    search stream for a seed, so every method that asks gets the same architecture)."""
    tightest = min(budgets)
    return largest_fitting_arch(space, lambda a: fits(tightest, memory(a)), size,
                                numpy_rng(seed, HARDWARE, FIXED_ARCH_SEARCH))


def largest_in_budgets(space: SearchSpace, memory: Callable[[Arch], float],
                       params: Callable[[Arch], float], budgets: dict[int, float], seed: int,
                       samples: int = 2000) -> dict[int, Arch]:
    """Each client's subnet of largest ``memory`` within its own budget, ties by ``params``
    (the ``largest_in_budget`` control): one seeded pool of candidates for every client,
    then a greedy climb from each client's best."""
    rng = numpy_rng(seed, HARDWARE, LARGEST_IN_BUDGET)
    pool = [space.min_arch(), space.max_arch(), *(space.sample(rng) for _ in range(samples))]
    def size(arch: Arch) -> tuple[float, float]:
        return memory(arch), params(arch)

    def within(budget: float) -> Callable[[Arch], bool]:
        return lambda arch: fits(budget, memory(arch))

    return {cid: largest_fitting_arch(space, within(budget), size, None, candidates=pool)
            for cid, budget in sorted(budgets.items())}


def random_in_budget(space: SearchSpace, fits_budget: Callable[[Arch], bool],
                     rng: np.random.Generator, tries: int = 2000) -> Arch:
    """A random subnet within budget (the ``random_in_budget`` control): a uniform draw from
    the space, redrawn until one fits (uniform over the subnets within budget); where none
    of ``tries`` fits (a budget few subnets fit), the last draw shrunk one random dimension
    at a time (its choice one step smaller) until it fits; the smallest subnet if nothing
    does."""
    arch = space.min_arch()
    for _ in range(tries):
        arch = space.sample(rng)
        if fits_budget(arch):
            return arch
    indices = list(arch.indices)
    while any(indices):
        shrinkable = [d for d, i in enumerate(indices) if i > 0]
        indices[shrinkable[int(rng.integers(len(shrinkable)))]] -= 1
        arch = space.arch_from_indices(indices)
        if fits_budget(arch):
            return arch
    return space.min_arch()
