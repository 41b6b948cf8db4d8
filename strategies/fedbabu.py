"""FedBABU (Oh et al., "FedBABU: Toward Enhanced Representation for Federated Image
Classification", ICLR'22).

During federated training the head stays at its random initialisation: clients
train only the body (head frozen) and the server averages only the bodies,
sample-weighted (FedAvg on the body: :class:`FedAvgFTStrategy`'s maths and
checkpoint on the body arrays). The head is never trained, sent or averaged —
every client rebuilds the same seeded initial head. Personalized evaluation:
each client fine-tunes the head (``finetune_scope: head``) or the whole model
(``full``) for ``finetune_epochs`` on its train split, then evaluates
(``pfednas.clients.fedbabu``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pfednas.options.baselines import FedBABUOptions  # noqa: F401 (re-exported)
from pfednas.strategies.base import Budget
from pfednas.strategies.budget import Roster
from pfednas.strategies.fedavg import FedAvgFTStrategy
from pfednas.wire.messages import Sgd


class FedBABUStrategy(FedAvgFTStrategy):
    """FedAvg on the body; evaluation messages carry the fine-tuning mode and epochs."""

    def __init__(self, *, budget: Budget, sgd: Sgd,
                 initial_body: list[np.ndarray], options: FedBABUOptions,
                 body_roles: Sequence[str] | None = None,
                 roster: Roster | None = None) -> None:
        # the mode travels as FedAvg+FT's finetune_scope, in its evaluation message's
        # fine-tuning entries (pfednas.wire.messages.Finetune)
        super().__init__(budget=budget, sgd=sgd, roster=roster,
                         initial_arrays=initial_body, finetune_epochs=options.finetune_epochs,
                         finetune_scope=options.finetune_scope, array_roles=body_roles)
        self.options = options
