"""SPIDER (Mushtaq et al., TMLR) and Ditto (Li et al., 2021): the server side.

The server only knows the *global* supernet ``w`` (``darts_s2``, every
operation on every edge, weight-1 sums). Each round every client (cross-silo:
full participation by default, ``participation: all`` — the federation's
``clients_per_round`` is then ignored; ``participation: sampled`` draws
``clients_per_round`` clients as the other methods do) receives ``w``, runs
its searcher and the pair training of Alg. 1 (eq. 4) locally, and replies with
its copy of ``w`` only. The server takes their sample-weighted FedAvg, BatchNorm
buffers included (Alg. 1, line 6; :func:`pfednas.nas.fedavg.weighted_average`).

Personalized evaluation every ``eval_every`` rounds: each client's own local
model on its own test split, at the last round after ``finetune_epochs`` of
fine-tuning a copy of it (the protocol's +FT; the figure without it, the
papers', is reported beside it); the clients report the local architecture as an
integer code (:mod:`pfednas.wire.archcode`), decoded here into the ``arch``
string of the evaluation rows, and the local parameter count. Local weights
and masks never reach the server. Checkpoint state: the global supernet and
which clients have trained (a client that never trained is sent ``w`` with its
evaluation request, to start its local model from).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from flwr.app import Message, MessageType

from pfednas.records import StageResult
from pfednas.search import Supernet
from pfednas.strategies.base import Budget
from pfednas.strategies.budget import Roster
from pfednas.strategies.fedavg import FedAvgFTStrategy
from pfednas.strategies.outgoing import Outgoing
from pfednas.wire.archcode import arch_from_code, code_capacity
from pfednas.wire.messages import Sgd
from pfednas.wire.roles import state_roles
from pfednas.wire.validation import MetricSpec

TRAIN_EXTRAS = ("local_loss", "penalty", "phase", "decided_edges", "num_params")


class SpiderStrategy(FedAvgFTStrategy):
    """FedAvg of the global supernet (inherited); SPIDER's participation, rows and evaluation.

    Every reply carries the client's local architecture code, checked against the
    space's range by the reply gate before anything here reads it.
    """

    TRAIN_REQUIRES = ("train_loss", "arch_code")
    EVALUATE_REQUIRES = ("arch_code",)
    arrays: list[np.ndarray]  # the global supernet's state (FedAvgFTStrategy's)

    def __init__(self, *, budget: Budget, sgd: Sgd, supernet: Supernet,
                 participation: str = "all", finetune_epochs: int = 0,
                 finetune_scope: str = "full",
                 roster: Roster | None = None) -> None:
        super().__init__(budget=budget, sgd=sgd, roster=roster,
                         initial_arrays=supernet.state_arrays(), finetune_epochs=finetune_epochs,
                         finetune_scope=finetune_scope, array_roles=state_roles(supernet.net))
        if participation not in ("all", "sampled"):
            raise ValueError(f"participation must be all|sampled, got {participation!r}")
        self.space = supernet.space
        self.participation = participation
        self.trained: set[int] = set()

    def metric_specs(self) -> dict[str, MetricSpec]:
        return {**super().metric_specs(),
                "arch_code": MetricSpec("arch_code", int, 0, code_capacity(self.space) - 1)}

    def arch_string(self, metrics: Mapping[str, Any]) -> str:
        if "arch_code" not in metrics:
            return ""
        return arch_from_code(self.space, int(metrics["arch_code"])).to_str()

    # -- training ------------------------------------------------------------------------------
    def sample_clients(self, server_round: int, population: int | None = None) -> list[int]:
        if self.participation == "all":
            return list(range(self.budget.num_clients))
        return super().sample_clients(server_round, population)

    def train_row(self, metrics: dict[str, Any]) -> dict[str, Any]:  # type: ignore[override]
        return {**super().train_row(metrics),
                **{k: metrics[k] for k in TRAIN_EXTRAS if k in metrics},
                "arch": self.arch_string(metrics)}

    def aggregate_train(self, server_round: int, replies: Iterable[Message],
                        sent: Outgoing[Any] | None = None) -> StageResult:
        result = super().aggregate_train(server_round, replies, sent)
        self.trained.update(int(row["client_id"]) for row in result.train)
        return result

    # -- personalized evaluation ---------------------------------------------------------------
    def configure_evaluate(self, server_round: int) -> Outgoing[Any]:
        if not self.is_eval_round(server_round):
            return Outgoing()
        cfg = self.eval_config(server_round)
        return Outgoing([self.message(cid, MessageType.EVALUATE, cfg,
                                      None if cid in self.trained else self.arrays)
                         for cid in range(self.budget.num_clients)])

    def reply_details(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """The client's local architecture, from its reply's code (the gate has checked the
        code's range)."""
        return {"arch": self.arch_string(metrics)}

    # -- checkpoints ---------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        out = {f"supernet_{i}": a for i, a in enumerate(self.arrays)}
        out["trained"] = np.array([c in self.trained for c in range(self.budget.num_clients)])
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        loaded = [state[f"supernet_{i}"] for i in range(len(self.arrays))]
        if [a.shape for a in loaded] != [a.shape for a in self.arrays]:
            raise ValueError("checkpoint does not match the supernet's shapes")
        self.arrays = loaded
        self.trained = {int(c) for c in np.flatnonzero(state["trained"])}
