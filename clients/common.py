"""What every client role shares: its data, device, seed and the message config."""

from __future__ import annotations

import resource
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

import torch

from pfednas.body_head import train_scope
from pfednas.data import ClientData
from pfednas.edge.kept import AS_PUBLISHED, FINETUNED, KeptModel
from pfednas.search import ElasticNet
from pfednas.seeding import CLIENT_TRAIN, torch_generator
from pfednas.train import Hyper, TrainStats, evaluate, num_parameters
from pfednas.wire.messages import SERVER_ROUND, Finetune, Sgd

FINETUNE_PHASE = 1  # train_generator's phase key of the fine-tuning before a test evaluation


@dataclass(frozen=True)
class ClientEnv:
    """A client's fixed surroundings, built once by the ClientApp."""

    client_id: int
    data: ClientData
    device: torch.device
    seed: int
    # where the final evaluation hands the models it tested (the ClientApp keeps them);
    # None: this evaluation keeps nothing
    keep: Callable[[KeptModel], None] | None = None

    def kept(self, kind: str, arch: str, net: torch.nn.Module, accuracy: float) -> None:
        """Hand ``net`` as tested (a copy of its weights) to :attr:`keep`, if any."""
        if self.keep is not None:
            state = {k: t.detach().cpu().numpy().copy() for k, t in net.state_dict().items()}
            self.keep(KeptModel(kind=kind, arch=arch, state=state, accuracy=accuracy))


def hyper_from_config(config: dict[str, Any]) -> Hyper:
    """The clients' SGD a message's config carries (:class:`pfednas.wire.messages.Sgd`)."""
    sgd = Sgd.read(config)
    return Hyper(lr=sgd.lr, momentum=sgd.momentum, weight_decay=sgd.weight_decay,
                 batch_size=sgd.batch_size)


def train_generator(env: ClientEnv, server_round: int, phase: int = 0) -> torch.Generator:
    """The shuffling stream of this client in this round (and phase)."""
    return torch_generator(env.seed, CLIENT_TRAIN, env.client_id, server_round, phase)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA allocator peak, else the resident-set peak."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_reply(net: torch.nn.Module, env: ClientEnv, trained: TrainStats | None, *,
               arch: str, kind: str = AS_PUBLISHED) -> tuple[float, int, dict[str, Any]]:
    """The personalized-evaluation reply: ``net`` (of architecture ``arch``) on the client's
    test split, with the seconds and sample-passes of the training this request did first
    (if any); ``net`` is kept as ``kind`` where this evaluation keeps its models."""
    result = evaluate(net, env.data.test, device=env.device)
    env.kept(kind, arch, net, result.accuracy)
    return result.loss, result.samples, {"accuracy": result.accuracy,
                                         "num_params": num_parameters(net),
                                         **work_metrics(trained)}


def finetune_then_test(net: ElasticNet[Any], env: ClientEnv, config: dict[str, Any], *,
                       arch: str, default_scope: str = "full",
                       after_tuning: Callable[[ElasticNet[Any]], None] | None = None,
                       ) -> tuple[float, int, dict[str, Any]]:
    """The personalized-evaluation reply after the protocol's fine-tuning: ``finetune_epochs``
    (none if 0) on the client's train split of the whole ``net``, or with ``finetune_scope: head``
    of its classifier head only (the body, BatchNorm included, as received); then
    ``after_tuning`` (a BatchNorm re-estimation) and :func:`test_reply`. ``net`` is changed.
    With fine-tuning the reply also carries ``accuracy_no_ft``, ``net`` tested as received
    (the figure as published), so every method that fine-tunes reports the same pair; with
    ``finetune_both`` (a tuning run) also ``accuracy_ft_full`` and ``accuracy_ft_head``, a
    copy fine-tuned at the other scope (its work is not counted: tuning, not the method).
    Where the evaluation keeps its models (``env.keep``), both tested networks are kept."""
    tune = Finetune.read(config, default_scope)
    epochs, scope = tune.epochs, tune.scope
    if epochs == 0:
        return test_reply(net, env, None, arch=arch)
    as_published = evaluate(net, env.data.test, device=env.device).accuracy
    env.kept(AS_PUBLISHED, arch, net, as_published)
    other: dict[str, float] = {}
    if tune.both:
        # the other scope on a copy, from the same start and the same shuffling stream, so
        # that each scope's accuracy is the one a run at that scope alone reports
        copy = deepcopy(net)
        other_scope = "head" if scope == "full" else "full"
        finetune(copy, other_scope, env, config, epochs, after_tuning)
        other[f"accuracy_ft_{other_scope}"] = evaluate(copy, env.data.test,
                                                       device=env.device).accuracy
        del copy
    tuned = finetune(net, scope, env, config, epochs, after_tuning)
    loss, samples, metrics = with_no_ft(test_reply(net, env, tuned, arch=arch, kind=FINETUNED),
                                        as_published)
    if other:
        other[f"accuracy_ft_{scope}"] = metrics["accuracy"]
    return loss, samples, {**metrics, **other}


def finetune(net: ElasticNet[Any], scope: str, env: ClientEnv, config: dict[str, Any],
             epochs: int, after_tuning: Callable[[ElasticNet[Any]], None] | None
             ) -> TrainStats:
    """``epochs`` of fine-tuning at ``scope`` on the client's train split (the protocol's
    shuffling stream of this round), then ``after_tuning``; ``net`` is changed."""
    tuned = train_scope(
        net, scope, env.data.train, epochs=epochs, hyper=hyper_from_config(config),
        generator=train_generator(env, int(config[SERVER_ROUND]), FINETUNE_PHASE),
        device=env.device)
    if after_tuning is not None:
        after_tuning(net)
    return tuned


def with_no_ft(reply: tuple[float, int, dict[str, Any]], as_published: float
               ) -> tuple[float, int, dict[str, Any]]:
    """An evaluation reply after fine-tuning, with the accuracy before it."""
    loss, samples, metrics = reply
    return loss, samples, {**metrics, "accuracy_no_ft": as_published}


def work_metrics(*trained: TrainStats | None) -> dict[str, float | int]:
    """``train_seconds``, ``sample_passes`` (samples through forward + backward) and
    ``train_macs`` (their multiply-accumulates by the cost model, ``TrainStats.macs``) of
    the training runs a request did: the client compute the benchmark protocol measures."""
    done = [t for t in trained if t is not None]
    return {"train_seconds": float(sum(t.seconds for t in done)),
            "sample_passes": int(sum(t.samples for t in done)),
            "train_macs": float(sum(t.macs for t in done))}
