"""FedRep client (Collins et al., "Exploiting Shared Representations for Personalized
Federated Learning", ICML'21, Algorithm 1).

The head is personal: it lives in ``Context.state`` and never leaves the client
(before its first round a client starts from the seeded initial head). Each
training round the client receives the global body, trains its head for
``head_epochs`` with the body frozen, then the body for ``body_epochs`` with the
head frozen, keeps the head and replies with the body only. Personalized
evaluation: the received body with the client's own head, optionally after
``finetune_epochs`` of head-only training on the current body (FedRep's
procedure for clients new to the body, Sec. 5; the tuned head is not kept).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, RecordDict
from flwr.client import NumPyClient
from torch import nn

from pfednas.body_head import StateSplit, load_parts, take, train_part
from pfednas.clients.common import (
    ClientEnv,
    hyper_from_config,
    peak_memory_mb,
    test_reply,
    train_generator,
    with_no_ft,
    work_metrics,
)
from pfednas.edge.kept import AS_PUBLISHED, FINETUNED
from pfednas.options.baselines import FedRepRound
from pfednas.search import ElasticNet
from pfednas.train import TrainStats, evaluate, get_arrays
from pfednas.wire.messages import RoundConfig

HEAD_KEY = "fedrep_head"
HEAD_PHASE, BODY_PHASE, FINETUNE_PHASE = 1, 2, 3


class FedRepClient(NumPyClient):
    def __init__(self, env: ClientEnv, model_fn: Callable[[], ElasticNet[Any]],
                 state: RecordDict, arch: str) -> None:
        self.env, self.model_fn, self.state, self.arch = env, model_fn, state, arch

    def model(self, body: list[np.ndarray]) -> tuple[nn.Module, StateSplit]:
        """The seeded model with the received body and this client's personal head."""
        net = self.model_fn()
        split = StateSplit.of(net)
        head = None
        if HEAD_KEY in self.state:
            record = self.state[HEAD_KEY]
            assert isinstance(record, ArrayRecord)
            head = record.to_numpy_ndarrays()
        load_parts(net, split, body=body, head=head)
        return net, split

    def _train(self, net: nn.Module, keys: list[str], epochs: int, config: dict[str, Any],
               phase: int) -> TrainStats:
        round_config = RoundConfig.read(config)
        if epochs <= 0:
            return TrainStats(loss=0.0, samples=0, seconds=0.0)
        return train_part(net, keys, self.env.data.train, epochs=epochs,
                          hyper=hyper_from_config(config),
                          generator=train_generator(self.env, round_config.server_round, phase),
                          device=self.env.device)

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]
            ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        phases = FedRepRound.read(config)
        net, split = self.model(parameters)
        head = self._train(net, split.head_keys(), phases.head_epochs, config, HEAD_PHASE)
        body = self._train(net, split.body_keys(), phases.body_epochs, config, BODY_PHASE)
        arrays = get_arrays(net)
        self.state[HEAD_KEY] = ArrayRecord(numpy_ndarrays=take(arrays, split.head))
        metrics = {"train_loss": body.loss, "head_train_loss": head.loss,
                   **work_metrics(head, body),
                   "peak_memory_mb": peak_memory_mb(self.env.device)}
        return take(arrays, split.body), len(self.env.data.train.y), metrics

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]
                 ) -> tuple[float, int, dict[str, Any]]:
        net, split = self.model(parameters)
        epochs = int(config.get("finetune_epochs", 0))
        if epochs == 0:
            return test_reply(net, self.env, None, arch=self.arch)
        as_published = evaluate(net, self.env.data.test, device=self.env.device).accuracy
        self.env.kept(AS_PUBLISHED, self.arch, net, as_published)
        tuned = self._train(net, split.head_keys(), epochs, config, FINETUNE_PHASE)
        return with_no_ft(test_reply(net, self.env, tuned, arch=self.arch, kind=FINETUNED),
                          as_published)
