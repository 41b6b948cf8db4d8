"""The two controls that isolate search: PerFedRLNAS without its policies.

Everything but the choice of architecture is PerFedRLNAS's (:mod:`strategies.perfedrlnas`):
the supernet, the subnet sent and trained, the overlap-aware merge, the evaluation and its
fine-tuning. Each client's architecture is fixed for the run, chosen once from its own
memory budget (its hardware profile; in a deployment once the nodes have claimed theirs):

* ``largest_in_budget``: the subnet of largest training-memory estimate the budget admits,
  ties by parameters (a seeded pool of candidates and a greedy climb,
  :func:`pfednas.nas.fitting.largest_in_budgets`): each client's model sized to its device,
  no search;
* ``random_in_budget``: a random subnet within the budget, drawn once per client from the
  run's seed (:func:`pfednas.nas.fitting.random_in_budget`).

A NAS method's gain counts against these: the first says what a client gains from a model
sized to its own device, the second what search adds over chance.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pfednas.nas.fitting import largest_in_budgets, random_in_budget
from pfednas.nas.reward import Outcome
from pfednas.search import Arch
from pfednas.seeding import ARCH_IN_BUDGET_RANDOM, ARCH_SAMPLING, ARCH_SEARCH, numpy_rng
from pfednas.strategies.perfedrlnas import PerFedRLNASStrategy

CHOICES = ("largest", "random")


class InBudgetStrategy(PerFedRLNASStrategy):
    def __init__(self, *, choice: str, **kwargs: Any) -> None:
        if choice not in CHOICES:
            raise ValueError(f"choice must be {'|'.join(CHOICES)}, got {choice!r}")
        super().__init__(**kwargs)
        self.choice = choice
        self.chosen: dict[int, Arch] = {}
        if not self.budget.deployment:
            self.choose()

    def profiles_bound(self) -> None:
        super().profiles_bound()
        self.choose()

    def choose(self) -> None:
        """Each client's architecture for the run, from its budget."""
        budgets = {cid: p.memory_bytes for cid, p in self.profiles.items()
                   if cid not in self.excluded}
        if self.choice == "largest":
            self.chosen = largest_in_budgets(
                self.space, self.memory, lambda a: float(self.supernet.cost(a).params),
                budgets, self.budget.seed)
        else:
            self.chosen = {cid: random_in_budget(
                self.space, self.within(cid),
                numpy_rng(self.budget.seed, ARCH_SAMPLING, ARCH_IN_BUDGET_RANDOM, cid))
                for cid in sorted(budgets)}

    def within(self, client_id: int) -> Callable[[Arch], bool]:
        return lambda arch: self.fits(client_id, arch)

    def sample_arch(self, client_id: int, server_round: int, phase: int = ARCH_SEARCH
                    ) -> Arch:
        return self.personalized_arch(client_id)

    def personalized_arch(self, client_id: int) -> Arch:
        return self.chosen.get(client_id, self.space.min_arch())

    def update_policies(self, outcomes: dict[int, Outcome], archs: Mapping[int, Arch],
                        lambda_time: float) -> dict[int, float]:
        """No policy: the architecture is fixed."""
        return {}

    def summary_extra(self, records: list[Any]) -> dict[str, Any]:
        return {**super().summary_extra(records), "arch_choice": f"{self.choice}_in_budget"}
