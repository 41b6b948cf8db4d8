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
model on its own test split; the clients report the local architecture as an
integer code (:mod:`pfednas.nas.archcode`), decoded here into the ``arch``
string of the evaluation rows, and the local parameter count. Local weights
and masks never reach the server. Checkpoint state: the global supernet and
which clients have trained (a client that never trained is sent ``w`` with its
evaluation request, to start its local model from).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.serverapp import Grid

from pfednas.nas.archcode import arch_from_code
from pfednas.nas.fedavg import weighted_average
from pfednas.search import Supernet
from pfednas.strategies.base import Budget, PersonalizedStrategy

TRAIN_EXTRAS = ("local_loss", "penalty", "phase", "decided_edges", "num_params")


class SpiderStrategy(PersonalizedStrategy):
    def __init__(self, *, budget: Budget, train_config: dict[str, Any], supernet: Supernet,
                 participation: str = "all") -> None:
        super().__init__(budget=budget, train_config=train_config)
        if participation not in ("all", "sampled"):
            raise ValueError(f"participation must be all|sampled, got {participation!r}")
        self.space = supernet.space
        self.arrays = supernet.state_arrays()
        self.participation = participation
        self.trained: set[int] = set()
        self.arch_of: dict[int, str] = {}

    def current_arrays(self) -> ArrayRecord:
        return ArrayRecord(numpy_ndarrays=self.arrays)

    def arch_string(self, metrics: dict[str, Any]) -> str:
        if "arch_code" not in metrics:
            return ""
        return arch_from_code(self.space, int(metrics["arch_code"])).to_str()

    # -- training ------------------------------------------------------------------------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self.record.sampled = (list(range(self.budget.num_clients))
                               if self.participation == "all"
                               else self.sample_clients(server_round))
        cfg = self.round_config(server_round)
        return [self.message(cid, MessageType.TRAIN, cfg, self.arrays)
                for cid in self.record.sampled]

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        updates = []
        shapes = [a.shape for a in self.arrays]
        for metrics, reply in self.ok_replies(replies):
            arrays = reply.content["arrays"].to_numpy_ndarrays()  # type: ignore[union-attr]
            if [a.shape for a in arrays] != shapes:
                self.record.failures += 1
                continue
            cid = int(metrics["client_id"])
            self.trained.add(cid)
            self.record.train.append({**self.train_row(metrics),
                                      **{k: metrics[k] for k in TRAIN_EXTRAS if k in metrics},
                                      "arch": self.arch_string(metrics)})
            updates.append((arrays, float(metrics["num_examples"])))
        if not updates:
            return None, None
        self.arrays = weighted_average(updates)
        loss = float(np.mean([row["train_loss"] for row in self.record.train]))
        return self.current_arrays(), MetricRecord({"train_loss": loss})

    # -- personalized evaluation ---------------------------------------------------------------
    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        if not self.is_eval_round(server_round):
            return []
        cfg = self.round_config(server_round)
        return [self.message(cid, MessageType.EVALUATE, cfg,
                             None if cid in self.trained else self.arrays)
                for cid in range(self.budget.num_clients)]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        replies = list(replies)
        for reply in replies:
            if not reply.has_error():
                metrics = dict(reply.content["metrics"])  # type: ignore[arg-type]
                self.arch_of[int(cast(int, metrics["client_id"]))] = self.arch_string(metrics)
        return super().aggregate_evaluate(server_round, replies)

    def evaluation_details(self, client_id: int) -> dict[str, Any]:
        return {"arch": self.arch_of.get(client_id, "")}

    # -- checkpoints ---------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        out = {f"supernet_{i}": a for i, a in enumerate(self.arrays)}
        out["trained"] = np.array([c in self.trained for c in range(self.budget.num_clients)])
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        arrays = [state[f"supernet_{i}"] for i in range(len(self.arrays))]
        if [a.shape for a in arrays] != [a.shape for a in self.arrays]:
            raise ValueError("checkpoint does not match the supernet's shapes")
        self.arrays = arrays
        self.trained = {int(c) for c in np.flatnonzero(state["trained"])}
