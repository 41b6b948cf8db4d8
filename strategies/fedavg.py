"""FedAvg + local fine-tuning (the FT baseline of the seed papers' tables).

Training: N sampled clients train the global model ``local_epochs`` epochs and the
server takes their sample-weighted average (FedAvg, McMahan et al. 2017), or with a robust
``federation.aggregation`` each entry's trimmed mean or median over them
(:func:`pfednas.nas.aggregation.aggregate`; BatchNorm statistics alike).
Personalized evaluation: every client fine-tunes the current global model on its
own train split for ``finetune_epochs`` (paper default 10) and reports its test
accuracy; the fine-tuned copies are not kept. ``finetune_scope``: ``full`` (the whole
model, the papers' FedAvg+FT) or ``head`` (the classifier only, body and BatchNorm
frozen: FedBABU's fine-tuning), so that every method's fine-tuning can be tuned alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from flwr.app import Message, MessageType

from pfednas.body_head import FINETUNE_SCOPES, check_scope
from pfednas.nas.aggregation import aggregate
from pfednas.records import StageResult
from pfednas.strategies.base import Budget
from pfednas.strategies.budget import Roster
from pfednas.strategies.fixed_arch import FixedArchStrategy
from pfednas.strategies.outgoing import Outgoing
from pfednas.wire.messages import RoundEntries, Sgd
from pfednas.wire.validation import array_specs


class FedAvgFTStrategy(FixedArchStrategy):
    TRAIN_REQUIRES = ("train_loss",)
    arrays: list[np.ndarray]  # the global model (SPIDER: the supernet), in state_dict order

    def __init__(self, *, budget: Budget, sgd: Sgd,
                 initial_arrays: list[np.ndarray], finetune_epochs: int,
                 finetune_scope: str = "full", array_roles: Sequence[str] | None = None,
                 roster: Roster | None = None, own_entries: RoundEntries | None = None) -> None:
        """``array_roles``: what each array is (``pfednas.wire.roles.state_roles`` of the
        model), so that replies' BatchNorm statistics are checked as statistics."""
        super().__init__(budget=budget, sgd=sgd, roster=roster, own_entries=own_entries)
        if finetune_epochs < 0:
            raise ValueError(f"finetune_epochs must be >= 0, got {finetune_epochs}")
        check_scope("finetune_scope", finetune_scope, FINETUNE_SCOPES)
        self.arrays: list[np.ndarray] = [np.asarray(a) for a in initial_arrays]
        self.roles: list[str] | None = None if array_roles is None else list(array_roles)
        array_specs(self.arrays, self.roles)  # one role per array, known roles
        self.finetune_epochs, self.finetune_scope = finetune_epochs, finetune_scope

    def adopt_model(self, arrays: list[np.ndarray], roles: list[str] | None) -> None:
        """Start from ``arrays`` (a deployment's fits_all model, or its body)."""
        self.arrays = [np.asarray(a) for a in arrays]
        self.roles = None if roles is None else list(roles)
        array_specs(self.arrays, self.roles)

    def state(self) -> dict[str, np.ndarray]:
        return {f"global_{i}": a for i, a in enumerate(self.arrays)}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        arrays = [state[f"global_{i}"] for i in range(len(self.arrays))]
        if [a.shape for a in arrays] != [a.shape for a in self.arrays]:
            raise ValueError("checkpoint does not match the model's shapes")
        self.arrays = arrays

    def configure_train(self, server_round: int) -> Outgoing[Any]:
        cfg = self.round_config(server_round)
        return Outgoing([self.message(cid, MessageType.TRAIN, cfg, self.arrays, self.roles)
                         for cid in self.train_clients(server_round)])

    def aggregate_train(self, server_round: int, replies: Iterable[Message],
                        sent: Outgoing[Any] | None = None) -> StageResult:
        rows, updates = [], []
        for metrics, arrays in self.train_replies(replies):
            rows.append(self.train_row(metrics))
            updates.append((arrays, self.weight(metrics)))
        if updates and self.enough(len(updates)):
            merged = aggregate(updates, self.budget.aggregation, reference=self.arrays)
            self.arrays = merged.arrays
            self.screened(rows, merged.kept)
        return StageResult(train=rows)

    def configure_evaluate(self, server_round: int) -> Outgoing[Any]:
        if not self.is_eval_round(server_round):
            return Outgoing()
        cfg = self.eval_config(server_round)
        return Outgoing([self.message(cid, MessageType.EVALUATE, cfg, self.arrays)
                         for cid in range(self.budget.num_clients)])

    def eval_config(self, server_round: int) -> dict[str, Any]:
        """An evaluation's config: the round's, with this round's fine-tuning."""
        return self.round_config(server_round,
                                 **self.finetune_config(server_round, self.finetune_scope))
