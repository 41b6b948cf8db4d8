"""Subnet trainer: the PerFedRLNAS / heteroFedAvg client role.

Receives one subnet's arrays and its architecture string, trains it like a
FedAvg client, and replies with the trained arrays plus its validation accuracy
(the reward signal) and test accuracy (reported only). Clients do no more work
than in FedAvg. Evaluation requests run the received subnet as is — optionally after re-estimating
its BatchNorm statistics on the client's own train split (OFA's recalibration;
weights untouched) — on the client's test split.

With ``finetune_epochs`` = F > 0 in an evaluation request (the benchmark
protocol's fine-tuning setting, not part of the PerFedRLNAS paper) the client
first measures the slice as published (``accuracy_no_ft``), then fine-tunes it
for F epochs on its train split like FedAvg+FT (``finetune: head``: only the
classifier head, body and BatchNorm frozen, as FedBABU's fine-tuning), re-estimates
BatchNorm and reports that as ``accuracy``; the fine-tuned weights are not kept
(:func:`pfednas.clients.common.finetune_then_test`).

With ``sandwich_students`` = n > 0 (an option, not in the papers) each batch also trains n
subnets nested in the received one, distilled in place from its outputs (BigNAS's sandwich
rule within the client's subnet, :mod:`pfednas.nas.sandwich`); the reply is the same
subnet's arrays.

With ``personal_head`` (a PerFedRLNAS option, not in the paper: FedRep's rule on the
subnets) the classifier head is the client's own: it lives in ``Context.state``, replaces
the received head in every subnet the client trains or evaluates (a client's first
round starts from the received one), trains with the body, and never leaves the
client — the reply carries the head as it came, so the server's merge leaves the
shared head untouched. A space's head has one shape for all its subnets (``mobilenetv3``:
``head_width`` → classes), unless its head width is elastic (``head_mults``): then the
client keeps the widest head it has trained, nested as the supernet nests it, and a subnet
takes its prefix, the received head where the client has trained no such column
(:func:`overlay_head`); a stored head of another rank is refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, RecordDict
from flwr.client import NumPyClient
from torch import nn

from pfednas.body_head import StateSplit, put, take
from pfednas.clients.common import (
    ClientEnv,
    finetune_then_test,
    hyper_from_config,
    peak_memory_mb,
    train_generator,
    work_metrics,
)
from pfednas.data import ArrayDataset
from pfednas.nas.sandwich import in_place_step
from pfednas.search import ElasticNet, SearchSpace, TaskShape, recalibrate_batchnorm
from pfednas.seeding import SANDWICH_STUDENTS, numpy_rng
from pfednas.train import (
    EvalStats,
    evaluate,
    get_arrays,
    num_parameters,
    set_arrays,
    train_epochs,
)
from pfednas.wire.messages import VAL_SPLIT, RoundConfig, Sgd, SubnetEvaluation, SubnetTrain
from pfednas.wire.validation import PARAM


def with_statistics(arrays: list[np.ndarray], roles: list[str], statistics: list[np.ndarray]
                    ) -> list[np.ndarray]:
    """``arrays`` (a state_dict's, with their ``roles``) with the BatchNorm statistics
    replaced by ``statistics``, in order."""
    it = iter(statistics)
    out = [a if role == PARAM else next(it) for a, role in zip(arrays, roles, strict=True)]
    if next(it, None) is not None:
        raise ValueError("more BatchNorm statistics than the network holds")
    return out


def overlay_head(own: list[np.ndarray], onto: list[np.ndarray], arch: str
                 ) -> list[np.ndarray]:
    """``onto`` (arrays of a head's shapes) with ``own`` written over the part both hold, a
    prefix of every axis (the supernet's nesting): equal shapes give ``own``; an elastic head
    width gives the client's columns where it has them and ``onto``'s beyond. A different
    count or rank is refused."""
    if len(own) != len(onto) or any(a.ndim != b.ndim for a, b in zip(own, onto, strict=True)):
        raise ValueError(f"the personal head's shapes {[h.shape for h in own]} do not match "
                         f"subnet {arch}'s head {[r.shape for r in onto]}")
    out = []
    for mine, base in zip(own, onto, strict=True):
        if mine.shape == base.shape:
            out.append(mine)
            continue
        merged = np.array(base, copy=True)
        common = tuple(slice(0, min(a, b)) for a, b in zip(mine.shape, base.shape, strict=True))
        merged[common] = mine[common]
        out.append(merged)
    return out


def build_subnet(space: SearchSpace, task: TaskShape, arch_str: str,
                 arrays: list[np.ndarray]) -> ElasticNet[Any]:
    """The standalone network of ``arch_str`` holding ``arrays`` (``Supernet.slice`` order)."""
    arch = space.arch_from_str(arch_str)
    net = space.build_net(space.net_config(arch, task), task)
    set_arrays(net, arrays)
    return net


@torch.no_grad()
def recalibrate_on(net: nn.Module, data: ArrayDataset, batch_size: int,
                   device: torch.device) -> int:
    """Re-estimate the BatchNorm statistics of ``net`` on ``data`` (weights untouched); the
    samples passed forward.

    A last batch of one sample is skipped: BatchNorm cannot normalise it in train mode.
    """
    x = torch.as_tensor(data.x, device=device)
    net.to(device)
    starts = [i for i in range(0, len(x), batch_size) if len(x) - i >= 2 or i == 0]
    recalibrate_batchnorm(net, (x[i:i + batch_size] for i in starts))
    return sum(len(x[i:i + batch_size]) for i in starts)


def measured_macs(result: EvalStats, recalibrated: int) -> float:
    """The forward MACs of a measurement: its evaluation pass and the ``recalibrated``
    samples of the BatchNorm re-estimation before it (the same network, the same MACs per
    sample)."""
    per_sample = result.macs / max(result.samples, 1)
    return float(result.macs + per_sample * recalibrated)


HEAD_KEY = "personal_head"


class SubnetClient(NumPyClient):
    def __init__(self, env: ClientEnv, space: SearchSpace, task: TaskShape, *,
                 bn_recalibrate: bool, personal_head: bool = False,
                 state: RecordDict | None = None, sandwich_students: int = 0) -> None:
        if personal_head and state is None:
            raise ValueError("personal_head needs the client's state to keep its head in")
        self.env, self.space, self.task = env, space, task
        self.bn_recalibrate, self.personal_head = bn_recalibrate, personal_head
        self.sandwich_students = sandwich_students
        self.state = state if state is not None else RecordDict()

    def model(self, parameters: list[np.ndarray], arch: str
               ) -> tuple[ElasticNet[Any], StateSplit]:
        """The subnet of ``arch`` holding ``parameters``, with the client's own head if it
        keeps one and has trained one already."""
        net = build_subnet(self.space, self.task, arch, parameters)
        split = StateSplit.of(net)
        if self.personal_head and HEAD_KEY in self.state:
            received = take(parameters, split.head)
            head = overlay_head(self.stored_head(), received, arch)
            set_arrays(net, put(get_arrays(net), split.head, head))
        return net, split

    def stored_head(self) -> list[np.ndarray]:
        record = self.state[HEAD_KEY]
        assert isinstance(record, ArrayRecord)
        return record.to_numpy_ndarrays()

    def keep_head(self, trained: list[np.ndarray]) -> None:
        """Store the head just trained, written over the widest one kept
        (:func:`overlay_head`)."""
        if HEAD_KEY in self.state:
            kept = self.stored_head()
            wider = [k if k.size > t.size else t for k, t in zip(kept, trained, strict=True)]
            trained = overlay_head(trained, wider, "the kept head")
        self.state[HEAD_KEY] = ArrayRecord(numpy_ndarrays=trained)

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]
            ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        round_config, request = RoundConfig.read(config), SubnetTrain.read(config)
        net, split = self.model(parameters, request.arch)
        server_round = round_config.server_round
        students = in_place_step(
            net, self.space, self.task, self.space.arch_from_str(request.arch),
            numpy_rng(self.env.seed, SANDWICH_STUDENTS, self.env.client_id, server_round),
            self.sandwich_students)
        stats = train_epochs(net, self.env.data.train, epochs=round_config.local_epochs,
                             hyper=hyper_from_config(config),
                             generator=train_generator(self.env, server_round),
                             device=self.env.device, after_backward=students)
        val = evaluate(net, self.env.data.val, device=self.env.device)
        test = evaluate(net, self.env.data.test, device=self.env.device)
        metrics = {"train_loss": stats.loss, **work_metrics(stats),
                   "val_accuracy": val.accuracy, "accuracy": test.accuracy,
                   "forward_macs": float(val.macs + test.macs),
                   "peak_memory_mb": peak_memory_mb(self.env.device)}
        arrays = get_arrays(net)
        if self.personal_head:  # kept here; the reply carries the head as it came
            self.keep_head(take(arrays, split.head))
            arrays = put(arrays, split.head, take(parameters, split.head))
        return arrays, len(self.env.data.train.y), metrics

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]
                 ) -> tuple[float, int, dict[str, Any]]:
        request = SubnetEvaluation.read(config)
        net, _ = self.model(parameters, request.arch)
        recalibrated = self.recalibrate(net, config)
        if request.split == VAL_SPLIT:  # a search's measurement: nothing to keep
            result = evaluate(net, self.env.data.val, device=self.env.device)
            return result.loss, result.samples, {
                "accuracy": result.accuracy, "num_params": num_parameters(net),
                **work_metrics(), "forward_macs": measured_macs(result, recalibrated)}
        return finetune_then_test(
            net, self.env, config, arch=request.arch,
            after_tuning=lambda tuned: self.recalibrate(tuned, config))

    def recalibrate(self, net: nn.Module, config: dict[str, Any]) -> int:
        """Re-estimate ``net``'s BatchNorm statistics (``bn_recalibrate``); the samples
        passed."""
        if self.bn_recalibrate:
            return recalibrate_on(net, self.env.data.train, Sgd.read(config).batch_size,
                                  self.env.device)
        return 0

