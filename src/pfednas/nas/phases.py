"""HAPFNAS's three phases as an explicit plan over the federation's rounds.

Rounds ``1..R`` are cut into consecutive blocks: knowledge distillation
(``distill`` rounds, may be 0), predictor data collection and search
(``search`` rounds, at least 1: the search runs after the last of them), then
heteroFedAvg (``hetero`` rounds, at least 1: personalized evaluation happens
there). The phase of a round is a pure function of its number, so a run
resumed from a checkpoint knows which phase it is in without storing it.
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
