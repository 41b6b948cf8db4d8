"""FedBABU client (Oh et al., "FedBABU: Toward Enhanced Representation for Federated
Image Classification", ICLR'22, Algorithm 1).

The head stays at its random initialisation during federated training: every
client builds the same seeded model, so the head is the same everywhere and
never trained, sent or averaged. A training round loads the received body,
trains it for ``local_epochs`` with the head frozen and replies with the body
only. Personalized evaluation fine-tunes a copy for ``finetune_epochs`` —
``finetune: head`` (the paper's default: body frozen) or ``full`` — on the
client's train split, then evaluates it on its test split.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.client import NumPyClient

from pfednas.body_head import StateSplit, load_parts, take, train_part
from pfednas.clients.common import (
    ClientEnv,
    finetune_then_test,
    hyper_from_config,
    peak_memory_mb,
    train_generator,
    work_metrics,
)
from pfednas.search import ElasticNet
from pfednas.train import get_arrays
from pfednas.wire.messages import RoundConfig


class FedBABUClient(NumPyClient):
    def __init__(self, env: ClientEnv, model_fn: Callable[[], ElasticNet[Any]],
                 arch: str) -> None:
        self.env, self.model_fn, self.arch = env, model_fn, arch

    def model(self, body: list[np.ndarray]) -> tuple[ElasticNet[Any], StateSplit]:
        """The seeded model (its head: the random initialisation) with the received body."""
        net = self.model_fn()
        split = StateSplit.of(net)
        load_parts(net, split, body=body)
        return net, split

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]
            ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        round_config = RoundConfig.read(config)
        net, split = self.model(parameters)
        stats = train_part(net, split.body_keys(), self.env.data.train,
                           epochs=round_config.local_epochs, hyper=hyper_from_config(config),
                           generator=train_generator(self.env, round_config.server_round),
                           device=self.env.device)
        metrics = {"train_loss": stats.loss, **work_metrics(stats),
                   "peak_memory_mb": peak_memory_mb(self.env.device)}
        return take(get_arrays(net), split.body), len(self.env.data.train.y), metrics

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]
                 ) -> tuple[float, int, dict[str, Any]]:
        net, _ = self.model(parameters)
        return finetune_then_test(net, self.env, config, arch=self.arch, default_scope="head")
