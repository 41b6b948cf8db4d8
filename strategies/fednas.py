"""Global federated NAS reference: FedNAS (He et al., "FedNAS: Federated Deep Learning via
Neural Architecture Search", 2020), as in the PerFedRLNAS paper's Table 3.

One mixed-op ``darts_s2`` supernet (``pfednas.search.darts_mixed``) whose
architecture parameters α are ``nn.Parameter`` in its ``state_dict``. Each round
N sampled clients receive all of it, run first-order DARTS search epochs
(``pfednas.clients.fednas``) and return weights *and* α; the server averages
every array, sample-weighted (FedAvg: :class:`FedAvgFTStrategy`'s maths and
checkpoint), so α is federated exactly like the weights.

Personalized evaluation: the server derives one global architecture (argmax
operation per edge), extracts that network with the supernet's weights and
sends it to every client, which re-estimates its BatchNorm statistics on its
train split (``bn_recalibrate``: the supernet's statistics are those of the
*mixed* edges, not of the derived network's), fine-tunes it for
``finetune_epochs``, re-estimates them again and reports its test accuracy.
At intermediate evaluation rounds the same is done with the current α; the
final round gives the reference figures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import Message, MessageType

from pfednas.options.baselines import FedNASOptions  # noqa: F401 (re-exported)
from pfednas.records import StageResult
from pfednas.search import Arch
from pfednas.search.darts_mixed import DartsMixedNet
from pfednas.strategies.base import Budget
from pfednas.strategies.budget import Roster
from pfednas.strategies.fedavg import FedAvgFTStrategy
from pfednas.strategies.outgoing import Outgoing
from pfednas.train import get_arrays, set_arrays
from pfednas.wire.messages import TEST_SPLIT, Sgd, SubnetEvaluation
from pfednas.wire.roles import state_roles


class FedNASStrategy(FedAvgFTStrategy):
    """FedAvg on the mixed-op supernet (weights and α); evaluates the derived architecture."""

    def __init__(self, *, budget: Budget, sgd: Sgd, net: DartsMixedNet,
                 options: FedNASOptions,
                 roster: Roster | None = None) -> None:
        super().__init__(budget=budget, sgd=sgd, roster=roster,
                         own_entries=options.round_entries(),
                         initial_arrays=get_arrays(net), finetune_epochs=options.finetune_epochs,
                         finetune_scope=options.finetune_scope, array_roles=state_roles(net))
        self.net, self.options = net, options

    def global_arch(self) -> tuple[Arch, list[np.ndarray]]:
        """The derived architecture of the current α, and its network's arrays."""
        set_arrays(self.net, self.arrays)
        arch = self.net.derive()
        return arch, get_arrays(self.net.extract(arch))

    def configure_evaluate(self, server_round: int) -> Outgoing[Arch]:
        """The derived architecture's network to every client; the plan: that architecture."""
        if not self.is_eval_round(server_round):
            return Outgoing()
        arch, subnet = self.global_arch()
        cfg = {**self.eval_config(server_round),
               **SubnetEvaluation(arch.to_str(), TEST_SPLIT).to_config()}
        return Outgoing([self.message(cid, MessageType.EVALUATE, cfg, subnet)
                         for cid in range(self.budget.num_clients)], plan=arch)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message],
                           sent: Outgoing[Any] | None = None) -> StageResult:
        """Every row names the architecture ``sent`` (its plan)."""
        result = super().aggregate_evaluate(server_round, replies, sent)
        arch = None if sent is None else sent.plan
        if arch is None:
            return result
        rows = [{**row, "arch": arch.to_str()} for row in result.evaluation]
        return dataclasses.replace(result, evaluation=rows)
