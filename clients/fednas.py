"""FedNAS client (He et al., 2020; the global-NAS reference of PerFedRLNAS's Table 3).

Training: receives the whole mixed-op ``darts_s2`` supernet — weights and the
architecture parameters α — runs first-order DARTS search epochs on it (α steps
on its validation split, weight steps on its train split:
``pfednas.nas.darts_search``) and replies with all of it, α included.
Evaluation: receives the derived global architecture's network (``arch`` in the
config, arrays in ``Supernet.slice`` order), re-estimates its BatchNorm
statistics on its train split (``bn_recalibrate``; the supernet's running
statistics were gathered on the mixed edges, so the derived network's inputs
differ), fine-tunes all its weights for ``finetune_epochs`` on its train split,
re-estimates the statistics once more and reports its test accuracy; the
fine-tuned copy is not kept.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.client import NumPyClient
from torch import nn

from pfednas.clients.common import (
    ClientEnv,
    finetune_then_test,
    hyper_from_config,
    peak_memory_mb,
    train_generator,
    work_metrics,
)
from pfednas.clients.subnet import build_subnet, recalibrate_on
from pfednas.nas.darts_search import ArchHyper, search_epochs
from pfednas.options.baselines import FedNASRound
from pfednas.search import DartsS2Space, TaskShape
from pfednas.search.darts_mixed import DartsMixedNet
from pfednas.train import get_arrays, set_arrays
from pfednas.wire.messages import RoundConfig, Sgd, SubnetEvaluation


class FedNASClient(NumPyClient):
    def __init__(self, env: ClientEnv, space: DartsS2Space, task: TaskShape, *,
                 bn_recalibrate: bool = True) -> None:
        self.env, self.space, self.task = env, space, task
        self.bn_recalibrate = bn_recalibrate

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]
            ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        round_config = RoundConfig.read(config)
        net = DartsMixedNet(self.space, self.task)
        set_arrays(net, parameters)
        own = FedNASRound.read(config)
        arch = ArchHyper(lr=own.arch_lr, weight_decay=own.arch_weight_decay)
        stats = search_epochs(net, self.env.data.train, self.env.data.val,
                              epochs=round_config.local_epochs,
                              hyper=hyper_from_config(config), arch=arch,
                              generator=train_generator(self.env, round_config.server_round),
                              device=self.env.device)
        metrics = {"train_loss": stats.loss, **work_metrics(stats),
                   "peak_memory_mb": peak_memory_mb(self.env.device)}
        return get_arrays(net), len(self.env.data.train.y), metrics

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]
                 ) -> tuple[float, int, dict[str, Any]]:
        arch = SubnetEvaluation.read(config).arch
        net = build_subnet(self.space, self.task, arch, parameters)
        self.recalibrate(net, config)
        return finetune_then_test(net, self.env, config, arch=arch,
                                  after_tuning=lambda tuned: self.recalibrate(tuned, config))

    def recalibrate(self, net: nn.Module, config: dict[str, Any]) -> None:
        if self.bn_recalibrate:
            recalibrate_on(net, self.env.data.train, Sgd.read(config).batch_size, self.env.device)
