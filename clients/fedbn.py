"""FedBN's client (Li et al., "FedBN: Federated Learning on Non-IID Features via Local Batch
Normalization", ICLR'21, Algorithm 1), with local fine-tuning before the personalized
evaluation.

Every BatchNorm layer is the client's own: its weights, biases and running statistics live in
``Context.state`` and never leave the client (before its first round a client starts from the
seeded initial ones). Each round the client receives the global model without its BatchNorm
entries, puts its own back, trains the whole model as FedAvg's client does, keeps the
BatchNorm entries and replies with the rest. Evaluation: the received model with the client's
own BatchNorm layers (as published), then after fine-tuning a copy (+FT).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, RecordDict

from pfednas.body_head import batchnorm_positions, complement, put, take
from pfednas.clients.common import ClientEnv
from pfednas.clients.fedavg import FedAvgClient
from pfednas.search import ElasticNet
from pfednas.train import get_arrays, set_arrays

BATCHNORM_KEY = "fedbn_batchnorm"


class FedBNClient(FedAvgClient):
    """FedAvg's client on the shared entries; the BatchNorm entries stay on the client."""

    def __init__(self, env: ClientEnv, model_fn: Callable[[], ElasticNet[Any]], arch: str,
                 state: RecordDict) -> None:
        super().__init__(env, model_fn, arch)
        self.state = state

    def _model(self, parameters: list[np.ndarray]) -> ElasticNet[Any]:
        """The seeded model with the received shared entries and this client's BatchNorm."""
        model = self.model_fn()
        arrays = get_arrays(model)
        local = batchnorm_positions(model)
        arrays = put(arrays, complement(local, len(arrays)), parameters)
        if BATCHNORM_KEY in self.state:
            record = self.state[BATCHNORM_KEY]
            assert isinstance(record, ArrayRecord)
            arrays = put(arrays, local, record.to_numpy_ndarrays())
        set_arrays(model, arrays)
        return model

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]
            ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        arrays, samples, metrics = super().fit(parameters, config)
        local = batchnorm_positions(self.model_fn())
        self.state[BATCHNORM_KEY] = ArrayRecord(numpy_ndarrays=take(arrays, local))
        return take(arrays, complement(local, len(arrays))), samples, metrics
