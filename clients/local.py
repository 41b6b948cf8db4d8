"""Local-only client: its model lives in ``Context.state`` and never leaves it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, RecordDict
from flwr.client import NumPyClient
from torch import nn

from pfednas.clients.common import ClientEnv, hyper_from_config, test_reply, train_generator
from pfednas.options.baselines import LocalRound
from pfednas.train import get_arrays, set_arrays, train_epochs
from pfednas.wire.messages import RoundConfig

STATE_KEY = "local_model"


class LocalClient(NumPyClient):
    """Trains its own model on its own data; evaluates it on its own test split.

    The server sends no weights: each evaluation request says how many epochs
    to train since the previous one, so the total equals rounds x local epochs.
    """

    def __init__(self, env: ClientEnv, model_fn: Callable[[], nn.Module],
                 state: RecordDict, arch: str) -> None:
        self.env = env
        self.model_fn, self.arch = model_fn, arch
        self.state = state

    def _load(self) -> nn.Module:
        model = self.model_fn()
        if STATE_KEY in self.state:
            record = self.state[STATE_KEY]
            assert isinstance(record, ArrayRecord)
            set_arrays(model, record.to_numpy_ndarrays())
        return model

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]
            ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        raise RuntimeError("Local clients do not take part in federated training rounds")

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]
                 ) -> tuple[float, int, dict[str, Any]]:
        round_config = RoundConfig.read(config)
        model = self._load()
        epochs = LocalRound.read(config).train_epochs
        trained = None
        if epochs > 0:
            trained = train_epochs(
                model, self.env.data.train, epochs=epochs, hyper=hyper_from_config(config),
                generator=train_generator(self.env, round_config.server_round),
                device=self.env.device)
            self.state[STATE_KEY] = ArrayRecord(numpy_ndarrays=get_arrays(model))
        return test_reply(model, self.env, trained, arch=self.arch)
