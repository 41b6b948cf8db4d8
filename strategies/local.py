"""Local training baseline: no communication of weights at all.

Each client trains its own model on its own data. At every evaluation round the
server only tells each client how many epochs to train since the previous
evaluation, so a client trains ``num_rounds x local_epochs`` epochs in total and
reports its test accuracy along the way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import Message, MessageType

from pfednas.records import StageResult
from pfednas.strategies.base import Budget, PersonalizedStrategy
from pfednas.strategies.budget import Roster
from pfednas.strategies.outgoing import Outgoing
from pfednas.wire.messages import Sgd


class LocalStrategy(PersonalizedStrategy):
    def __init__(self, *, budget: Budget, sgd: Sgd,
                 roster: Roster | None = None) -> None:
        super().__init__(budget=budget, sgd=sgd, roster=roster)
        self.last_eval_round = 0

    def state(self) -> dict[str, np.ndarray]:
        return {"last_eval_round": np.array(self.last_eval_round)}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.last_eval_round = int(state["last_eval_round"])

    def train_clients(self, server_round: int) -> list[int]:
        """Every client, at evaluation rounds: each trains in its evaluation request."""
        return list(range(self.budget.num_clients)) if self.is_eval_round(server_round) else []

    def configure_train(self, server_round: int) -> Iterable[Message]:
        return []

    def aggregate_train(self, server_round: int, replies: Iterable[Message],
                        sent: Outgoing[Any] | None = None) -> StageResult:
        return StageResult()

    def configure_evaluate(self, server_round: int) -> Iterable[Message]:
        if not self.is_eval_round(server_round):
            return []
        epochs = (server_round - self.last_eval_round) * self.budget.local_epochs
        self.last_eval_round = server_round
        cfg = self.round_config(server_round, train_epochs=epochs)
        return [self.message(cid, MessageType.EVALUATE, cfg)
                for cid in range(self.budget.num_clients)]
