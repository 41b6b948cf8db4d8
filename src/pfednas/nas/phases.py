"""HAPFNAS's three phases as an explicit plan over the federation's rounds.

Rounds ``1..R`` are cut into consecutive blocks: knowledge distillation
(``distill`` rounds, may be 0), predictor data collection and search
(``search`` rounds, at least 1: the search runs after the last of them), then
heteroFedAvg (``hetero`` rounds, at least 1: personalized evaluation happens
there). The phase of a round is a pure function of its number, so a run
resumed from a checkpoint knows which phase it is in without storing it. The options of
phases 1 and 2 live here too, beside the plan (:mod:`pfednas.options.hapfnas` takes them
into the method's options).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Phase(IntEnum):
    DISTILL = 1
    SEARCH = 2
    HETERO = 3


@dataclass(frozen=True)
class PhasePlan:
    distill: int
    search: int
    hetero: int

    def __post_init__(self) -> None:
        if self.distill < 0 or self.search < 1 or self.hetero < 1:
            raise ValueError("phase rounds: need distill >= 0, search >= 1 and hetero >= 1, got "
                             f"{self.distill}, {self.search}, {self.hetero}")

    @property
    def total(self) -> int:
        return self.distill + self.search + self.hetero

    def phase_of(self, server_round: int) -> Phase:
        if not 1 <= server_round <= self.total:
            raise ValueError(f"round {server_round} outside 1..{self.total}")
        if server_round <= self.distill:
            return Phase.DISTILL
        if server_round <= self.distill + self.search:
            return Phase.SEARCH
        return Phase.HETERO

    def first_round(self, phase: Phase) -> int:
        return 1 + sum(self.rounds(p) for p in Phase if p < phase)

    def rounds(self, phase: Phase) -> int:
        return {Phase.DISTILL: self.distill, Phase.SEARCH: self.search,
                Phase.HETERO: self.hetero}[phase]

    def index_in_phase(self, server_round: int) -> int:
        """0 for the first round of its phase, 1 for the second, ..."""
        return server_round - self.first_round(self.phase_of(server_round))

    def is_last_of_phase(self, server_round: int) -> bool:
        phase = self.phase_of(server_round)
        return self.index_in_phase(server_round) == self.rounds(phase) - 1


# -- the phases' options (HAPFNAS's method.distill.*, predictor.*, evolution.*) -----------
MEASURE_SPLITS = ("val", "train_val")


@dataclass(frozen=True)
class DistillOptions:
    """Phase 1's sandwich distillation of the knowledge models' ensemble into the supernet."""

    temperature: float = 3.0       # softmax temperature of the ensemble's soft labels (KL)
    steps: int = 100            # sandwich steps per round (largest + smallest + random ones)
    batch_size: int = 64           # transfer inputs per distillation step
    lr: float = 0.05               # the server's SGD on the supernet while distilling
    momentum: float = 0.9          # (that SGD's momentum)
    weight_decay: float = 0.0      # (that SGD's weight decay)
    random_subnets: int = 2     # besides the largest and the smallest
    threads: int = 1            # server torch threads while distilling (it shares the CPUs)

    def __post_init__(self) -> None:
        if self.temperature <= 0 or self.lr <= 0:
            raise ValueError("distill.temperature and distill.lr must be > 0")
        if self.steps < 0 or self.batch_size < 2 or self.random_subnets < 0:
            raise ValueError("distill: need steps >= 0, batch_size >= 2, random_subnets >= 0")
        if self.threads < 1:
            raise ValueError("distill.threads must be >= 1")
        if self.momentum < 0 or self.weight_decay < 0:
            raise ValueError("distill.momentum and distill.weight_decay must be >= 0")


@dataclass(frozen=True)
class PredictorOptions:
    """Phase 2's per-client random-forest predictors (fitted on the server)."""

    archs_per_client: int = 40   # M: subnets each client measures
    trees: int = 100               # the random forest's trees
    folds: int = 5               # cross-validation of the reported Spearman / MAE
    min_pairs: int = 6           # fewer valid pairs: the client uses the pooled pairs of all
    # the client's split the subnets are measured on: val | train_val (the distilled supernet
    # never saw client data, so its train split is as unseen as val, and 4x the samples cut
    # the noise)
    measure_on: str = "train_val"

    def __post_init__(self) -> None:
        if self.measure_on not in MEASURE_SPLITS:
            raise ValueError(f"predictor.measure_on must be {'|'.join(MEASURE_SPLITS)}, got "
                             f"{self.measure_on!r}")
        if self.archs_per_client < 2 or self.trees < 1 or self.folds < 2:
            raise ValueError("predictor: need archs_per_client >= 2, trees >= 1, folds >= 2")
        if self.min_pairs < 2:
            raise ValueError("predictor.min_pairs must be >= 2")


@dataclass(frozen=True)
class EvolutionOptions:
    """Phase 2's predictor-guided evolutionary search within each client's budget."""

    population: int = 40           # genomes (architectures) per generation
    generations: int = 20          # rounds of selection, crossover and mutation
    parents: int = 10          # kept each generation (elitism)
    mutation_prob: float = 0.15  # per gene
    crossover_prob: float = 0.5    # per child: uniform crossover of two parents, else a copy
    max_tries: int = 100       # draws per wanted genome before giving up on filling a slot

    def __post_init__(self) -> None:
        if self.population < 2 or not 1 <= self.parents < self.population:
            raise ValueError("evolution: need population >= 2 and 1 <= parents < population")
        if self.generations < 0 or self.max_tries < 1:
            raise ValueError("evolution: need generations >= 0 and max_tries >= 1")
        if not (0 <= self.mutation_prob <= 1 and 0 <= self.crossover_prob <= 1):
            raise ValueError("evolution: mutation_prob and crossover_prob must be in [0, 1]")
