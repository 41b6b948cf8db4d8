"""FedAvg's client, and FedProx's (its loss with the proximal term), with local fine-tuning
before the personalized evaluation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from flwr.client import NumPyClient

from pfednas.clients.common import (
    ClientEnv,
    finetune_then_test,
    hyper_from_config,
    peak_memory_mb,
    train_generator,
    work_metrics,
)
from pfednas.search import ElasticNet
from pfednas.train import get_arrays, proximal_penalty, set_arrays, train_epochs
from pfednas.wire.messages import RoundConfig


class FedAvgClient(NumPyClient):
    """Trains the global model on its train split; fine-tunes a copy to evaluate."""

    def __init__(self, env: ClientEnv, model_fn: Callable[[], ElasticNet[Any]],
                 arch: str) -> None:
        self.env = env
        self.model_fn, self.arch = model_fn, arch  # the model and its architecture string

    def _model(self, parameters: list[np.ndarray]) -> ElasticNet[Any]:
        model = self.model_fn()
        set_arrays(model, parameters)
        return model

    def penalty(self, model: ElasticNet[Any]) -> Callable[[], torch.Tensor] | None:
        """A term of the client's own added to each batch's loss (none: FedAvg's)."""
        return None

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]
            ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        round_config = RoundConfig.read(config)
        model = self._model(parameters)
        stats = train_epochs(model, self.env.data.train, epochs=round_config.local_epochs,
                             hyper=hyper_from_config(config),
                             generator=train_generator(self.env, round_config.server_round),
                             device=self.env.device, penalty=self.penalty(model))
        metrics = {"train_loss": stats.loss, **work_metrics(stats),
                   "peak_memory_mb": peak_memory_mb(self.env.device)}
        return get_arrays(model), len(self.env.data.train.y), metrics

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]
                 ) -> tuple[float, int, dict[str, Any]]:
        return finetune_then_test(self._model(parameters), self.env, config, arch=self.arch)


class FedProxClient(FedAvgClient):
    """FedProx: FedAvg's client whose loss adds (μ/2) ‖w − w_t‖², w_t the global model it
    was sent this round (:func:`pfednas.train.proximal_penalty`)."""

    def __init__(self, env: ClientEnv, model_fn: Callable[[], ElasticNet[Any]], arch: str,
                 mu: float) -> None:
        super().__init__(env, model_fn, arch)
        self.mu = mu

    def penalty(self, model: ElasticNet[Any]) -> Callable[[], torch.Tensor] | None:
        if self.mu == 0:  # FedAvg's updates, bit for bit
            return None
        anchor = {name: p.detach().clone() for name, p in model.named_parameters()}
        params = dict(model.named_parameters())
        return lambda: proximal_penalty(params, anchor, self.mu)
