"""What the baselines share: one architecture for every client.

A fixed-architecture strategy's evaluation rows carry that architecture's cost against
each client's memory budget, and in a deployment with ``method.arch=fits_all`` the
architecture is chosen once the nodes' claimed profiles are known
(:class:`pfednas.strategies.budget.FixedChoice`): the clients it leaves out are excluded,
the strategy adopts the chosen model and every round config names it (``fixed_arch``), so
that each client builds the same one. The NAS methods' strategies have none of this.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from pfednas.records import arch_details
from pfednas.strategies.base import Budget, PersonalizedStrategy
from pfednas.strategies.budget import Roster
from pfednas.wire.messages import RoundConfig, RoundEntries, Sgd


class FixedArchStrategy(PersonalizedStrategy):
    """A strategy that trains one architecture for every client (the baselines)."""

    def __init__(self, *, budget: Budget, sgd: Sgd, roster: Roster | None = None,
                 own_entries: RoundEntries | None = None) -> None:
        super().__init__(budget=budget, sgd=sgd, roster=roster, own_entries=own_entries)
        roster = Roster() if roster is None else roster
        # a deployment's fits_all: the architecture chosen from the claimed profiles (sent
        # in every round config) and what chooses it
        self.fixed_arch: str | None = None
        self.choose_fixed_arch = roster.choose_fixed_arch
        # the architecture and its cost, which each evaluation row records against the
        # client's memory budget (a deployment's fits_all: set once it is chosen)
        self.fixed_cost = roster.fixed_cost

    def profiles_bound(self) -> None:
        """A deployment's fits_all, chosen from the claimed profiles (where there is one):
        the clients below its floor are excluded, the strategy adopts its model."""
        if self.choose_fixed_arch is not None and self.profile_bounds is not None:
            choice = self.choose_fixed_arch(self.profiles, self.profile_bounds)
            self.fixed_arch, self.excluded = choice.arch, dict(choice.excluded)
            self.fixed_cost = choice.fixed_cost
            if choice.arrays is not None:
                self.adopt_model(choice.arrays, choice.roles)

    def adopt_model(self, arrays: list[np.ndarray], roles: list[str] | None) -> None:
        """Start from these arrays (a deployment's fits_all architecture, chosen once the
        profiles are known); a strategy that holds no model has none to adopt."""
        raise TypeError(f"{type(self).__name__} holds no model to adopt")

    def round_entries(self, server_round: int) -> RoundConfig:
        """The round's entries, with the fits_all architecture where one was chosen."""
        return dataclasses.replace(super().round_entries(server_round),
                                   fixed_arch=self.fixed_arch or "")

    def evaluation_details(self, client_id: int) -> dict[str, Any]:
        """The architecture, its cost and the client's memory budget (drawn in a
        simulation, claimed in a deployment)."""
        if self.fixed_cost is None:
            return {}
        arch, cost = self.fixed_cost
        profile = self.profiles.get(client_id)
        return arch_details(arch, cost, metric="memory",
                            budget=None if profile is None else profile.memory_bytes)

    def profile_summary(self) -> dict[str, Any]:
        """The profiles and exclusions, and first ``fixed_arch``, the one architecture a
        deployment's ``fits_all`` chose from them."""
        chosen = {"fixed_arch": self.fixed_arch} if self.fixed_arch else {}
        return {**chosen, **super().profile_summary()}
