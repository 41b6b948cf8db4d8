"""HAPFNAS phase 2: predictor-guided evolutionary search under a resource budget.

An architecture is a genome of choice indices (``Arch.indices``), one per
search dimension. Choices the paper leaves open, and why:

* **Feasibility by construction** — every genome that enters the population
  passed ``feasible`` (the client's budget on ``Supernet.cost``); infeasible
  offspring are discarded and redrawn, never repaired or penalised. So the
  result can never be over budget, and no objective evaluation is spent on
  architectures the client could not run.
* **Initial population** — the caller's seed genomes that are feasible (the
  subnets the client measured: the predictor is most reliable near them),
  filled up with uniform feasible samples (rejection sampling).
* **Generations** — truncation selection keeps the ``parents`` best (elitism,
  so the best score never decreases); each child is, with probability
  ``crossover_prob``, a uniform crossover of two random parents, then mutated
  (each gene redrawn uniformly with probability ``mutation_prob``); otherwise a
  mutation of one random parent. Duplicates are skipped; scores are memoised
  and asked for in batches (a forest predicts a batch in one call).
* **Result** — the best genome ever scored; ties go to the one found first.

Pure numpy; the objective and the feasibility test are callables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pfednas.nas.phases import EvolutionOptions  # noqa: F401 (re-exported)

Genome = tuple[int, ...]


@dataclass(frozen=True)
class SearchResult:
    best: Genome
    score: float
    evaluated: int


def mutate(genome: Genome, sizes: Sequence[int], prob: float,
           rng: np.random.Generator) -> Genome:
    redraw = rng.random(len(sizes)) < prob
    fresh = [int(rng.integers(n)) for n in sizes]
    return tuple(f if r else g for g, f, r in zip(genome, fresh, redraw, strict=True))


def crossover(a: Genome, b: Genome, rng: np.random.Generator) -> Genome:
    take_a = rng.random(len(a)) < 0.5
    return tuple(x if t else y for x, y, t in zip(a, b, take_a, strict=True))


def evolve(sizes: Sequence[int], score: Callable[[list[Genome]], np.ndarray],
           feasible: Callable[[Genome], bool], *, options: EvolutionOptions,
           rng: np.random.Generator, seeds: Sequence[Genome] = ()) -> SearchResult:
    """Maximise ``score`` over feasible genomes; raises ``ValueError`` if none is found."""
    scores: dict[Genome, float] = {}

    def rate(genomes: list[Genome]) -> None:
        new = [g for g in genomes if g not in scores]
        if new:
            scores.update(zip(new, (float(s) for s in score(new)), strict=True))

    population = list(dict.fromkeys(g for g in map(tuple, seeds) if feasible(g)))
    population = population[:options.population]
    tries = 0
    while len(population) < options.population and tries < options.max_tries * options.population:
        tries += 1
        g = tuple(int(rng.integers(n)) for n in sizes)
        if g not in population and feasible(g):
            population.append(g)
    if not population:
        raise ValueError("no architecture within the budget was found")
    rate(population)
    for _ in range(options.generations):
        ranked = sorted(population, key=lambda g: -scores[g])  # stable: ties keep their order
        parents = ranked[:options.parents]
        children: list[Genome] = []
        tries = 0
        wanted = options.population - len(parents)
        while len(children) < wanted and tries < options.max_tries * wanted:
            tries += 1
            if len(parents) > 1 and rng.random() < options.crossover_prob:
                i, j = rng.choice(len(parents), 2, replace=False)
                child = crossover(parents[i], parents[j], rng)
            else:
                child = parents[int(rng.integers(len(parents)))]
            child = mutate(child, sizes, options.mutation_prob, rng)
            if child not in parents and child not in children and feasible(child):
                children.append(child)
        rate(children)
        population = parents + children
    best = max(scores, key=lambda g: scores[g])  # first maximum in insertion order
    return SearchResult(best=best, score=scores[best], evaluated=len(scores))
