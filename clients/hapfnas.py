"""HAPFNAS client: knowledge model (phase 1), subnet evaluations (phase 2), subnet (phase 3).

The message config's ``phase`` says which role a request is for:

1. ``train``: train the received *knowledge model* (a small CNN of
   ``knowledge_width``, never the supernet) on the train split; reply with it,
   its validation accuracy and the training time.
2. ``evaluate``: the distilled supernet's subnet ``cover`` that contains every
   architecture of ``archs`` (``;``-separated) arrives; each subnet is extracted,
   its BatchNorm statistics are re-estimated on the train split, and its own
   classifier's accuracy on the **validation** split (``measure_on=train_val``:
   train + val) is replied as ``acc_<i>``. Test data are never touched by the search.
3. ``train`` / ``evaluate`` of the client's personalized subnet: the
   :class:`~pfednas.clients.subnet.SubnetClient` role (heteroFedAvg training,
   personalized evaluation on the test split), with the client's own classifier head
   if ``personal_head`` is on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import RecordDict
from flwr.client import NumPyClient

from pfednas.clients.common import (
    ClientEnv,
    hyper_from_config,
    peak_memory_mb,
    train_generator,
    work_metrics,
)
from pfednas.clients.subnet import SubnetClient, measured_macs, recalibrate_on
from pfednas.data import ArrayDataset
from pfednas.nas.models import SmallCNN
from pfednas.nas.phases import Phase
from pfednas.options.hapfnas import HAPFNASMeasure, HAPFNASPhase
from pfednas.search import SearchSpace, TaskShape
from pfednas.train import evaluate, get_arrays, set_arrays, train_epochs
from pfednas.wire.messages import RoundConfig, Sgd

KNOWLEDGE_STREAM = 7  # train_generator phase key of knowledge-model training
ARCH_SEPARATOR = ";"


def knowledge_model(task: TaskShape, width: int) -> SmallCNN:
    return SmallCNN(in_channels=task.in_channels, image_size=task.image_size,
                    num_classes=task.num_classes, width=width)


class HAPFNASClient(NumPyClient):
    def __init__(self, env: ClientEnv, space: SearchSpace, task: TaskShape, *,
                 knowledge_width: int, bn_recalibrate: bool, personal_head: bool = False,
                 state: RecordDict | None = None, sandwich_students: int = 0) -> None:
        self.env, self.space, self.task = env, space, task
        self.knowledge_width = knowledge_width
        self.subnet = SubnetClient(env, space, task, bn_recalibrate=bn_recalibrate,
                                   personal_head=personal_head, state=state,
                                   sandwich_students=sandwich_students)

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]
            ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        if HAPFNASPhase.read(config).phase == Phase.DISTILL:
            return self.train_knowledge(parameters, config)
        return self.subnet.fit(parameters, config)

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]
                 ) -> tuple[float, int, dict[str, Any]]:
        if HAPFNASPhase.read(config).phase == Phase.SEARCH:
            return self.evaluate_archs(parameters, config)
        return self.subnet.evaluate(parameters, config)

    def train_knowledge(self, parameters: list[np.ndarray], config: dict[str, Any]
                        ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        round_config = RoundConfig.read(config)
        model = knowledge_model(self.task, self.knowledge_width)
        set_arrays(model, parameters)
        generator = train_generator(self.env, round_config.server_round, KNOWLEDGE_STREAM)
        stats = train_epochs(model, self.env.data.train, epochs=round_config.local_epochs,
                             hyper=hyper_from_config(config), generator=generator,
                             device=self.env.device)
        val = evaluate(model, self.env.data.val, device=self.env.device)
        metrics = {"train_loss": stats.loss, **work_metrics(stats),
                   "val_accuracy": val.accuracy, "forward_macs": float(val.macs),
                   "peak_memory_mb": peak_memory_mb(self.env.device)}
        return get_arrays(model.cpu()), len(self.env.data.train.y), metrics

    def evaluate_archs(self, parameters: list[np.ndarray], config: dict[str, Any]
                       ) -> tuple[float, int, dict[str, Any]]:
        supernet = self.space.build_supernet(num_classes=self.task.num_classes,
                                             in_channels=self.task.in_channels,
                                             image_size=self.task.image_size)
        # only the subnet covering this request's architectures arrived: its arrays go to
        # their supernet positions, from which each (contained) subnet is cut
        measure = HAPFNASMeasure.read(config)
        supernet.scatter(self.space.arch_from_str(measure.cover), parameters)
        supernet.eval()
        batch_size, train, val = Sgd.read(config).batch_size, self.env.data.train, self.env.data.val
        if measure.measure_on == "train_val":  # never trained on: as unseen as val
            val = ArrayDataset(x=np.concatenate([train.x, val.x]),
                               y=np.concatenate([train.y, val.y]))
        metrics: dict[str, Any] = {}
        losses, forward = [], 0.0
        for i, text in enumerate(measure.archs.split(ARCH_SEPARATOR)):
            net = supernet.extract(self.space.arch_from_str(text))
            recalibrated = recalibrate_on(net, train, batch_size, self.env.device)
            result = evaluate(net, val, device=self.env.device)
            metrics[f"acc_{i}"] = result.accuracy
            losses.append(result.loss)
            forward += measured_macs(result, recalibrated)
        return float(np.mean(losses)), len(val.y), {**metrics, "forward_macs": forward}
