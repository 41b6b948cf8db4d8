"""Local training baseline: no communication of weights at all.

Each client trains its own model on its own data. At every evaluation round the
server only tells each client how many epochs to train since the previous
evaluation, so a client trains ``num_rounds x local_epochs`` epochs in total and
reports its test accuracy along the way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flwr.app import Message, MessageType

from pfednas.options.baselines import LocalRound
from pfednas.records import StageResult
from pfednas.strategies.base import Budget
from pfednas.strategies.budget import Roster
from pfednas.strategies.fixed_arch import FixedArchStrategy
from pfednas.strategies.outgoing import Outgoing
from pfednas.wire.messages import Sgd


class LocalStrategy(FixedArchStrategy):
    def __init__(self, *, budget: Budget, sgd: Sgd,
                 roster: Roster | None = None) -> None:
        super().__init__(budget=budget, sgd=sgd, roster=roster)

    def train_clients(self, server_round: int) -> list[int]:
        """Every client, at evaluation rounds: each trains in its evaluation request."""
        return list(range(self.budget.num_clients)) if self.is_eval_round(server_round) else []

    def configure_train(self, server_round: int) -> Outgoing[Any]:
        return Outgoing()

    def aggregate_train(self, server_round: int, replies: Iterable[Message],
                        sent: Outgoing[Any] | None = None) -> StageResult:
        return StageResult()

    def configure_evaluate(self, server_round: int) -> Outgoing[Any]:
        if not self.is_eval_round(server_round):
            return Outgoing()
        # the rounds since the previous evaluation (a multiple of eval_every, or 0)
        previous = (server_round - 1) // self.budget.eval_every * self.budget.eval_every
        epochs = (server_round - previous) * self.budget.local_epochs
        cfg = self.round_config(server_round, **LocalRound(train_epochs=epochs).to_config())
        return Outgoing([self.message(cid, MessageType.EVALUATE, cfg)
                         for cid in range(self.budget.num_clients)])
