"""FedRep (Collins et al., "Exploiting Shared Representations for Personalized Federated
Learning", ICML'21).

The model is a shared body (representation) and a personal head. Each round N
sampled clients receive the global body; each trains its own head with the body
frozen (``head_epochs``), then the body with its head frozen (``body_epochs``,
default ``federation.local_epochs``), keeps the head and replies with the body
only (``pfednas.clients.fedrep``). The server averages the returned bodies,
sample-weighted (Algorithm 1, line 14) — FedAvg restricted to the body, so the
server state, its checkpoint and all the maths are :class:`FedAvgFTStrategy`'s
on the body arrays. Heads are never sent nor averaged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pfednas.options.baselines import FedRepOptions  # noqa: F401 (re-exported)
from pfednas.strategies.base import Budget
from pfednas.strategies.budget import Roster
from pfednas.strategies.fedavg import FedAvgFTStrategy
from pfednas.wire.messages import Sgd


class FedRepStrategy(FedAvgFTStrategy):
    """FedAvg on the body; the per-round config tells clients the two phases' epochs."""

    def __init__(self, *, budget: Budget, sgd: Sgd,
                 initial_body: list[np.ndarray], options: FedRepOptions,
                 body_roles: Sequence[str] | None = None,
                 roster: Roster | None = None) -> None:
        super().__init__(budget=budget, sgd=sgd, roster=roster,
                         own_entries=options.round_entries(budget.local_epochs),
                         initial_arrays=initial_body, finetune_epochs=options.finetune_epochs,
                         array_roles=body_roles)
        self.options = options
