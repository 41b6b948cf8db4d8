"""What every client role shares: its data, device, seed and the message config."""

from __future__ import annotations

import resource
from dataclasses import dataclass
from typing import Any

import torch

from pfednas.data import ClientData
from pfednas.seeding import CLIENT_TRAIN, torch_generator
from pfednas.train import Hyper, TrainStats, evaluate, num_parameters


@dataclass(frozen=True)
class ClientEnv:
    """A client's fixed surroundings, built once by the ClientApp."""

    client_id: int
    data: ClientData
    device: torch.device
    seed: int


def hyper_from_config(config: dict[str, Any]) -> Hyper:
    return Hyper(lr=float(config["lr"]), momentum=float(config["momentum"]),
                 weight_decay=float(config["weight_decay"]), batch_size=int(config["batch_size"]))


def train_generator(env: ClientEnv, server_round: int, phase: int = 0) -> torch.Generator:
    """The shuffling stream of this client in this round (and phase)."""
    return torch_generator(env.seed, CLIENT_TRAIN, env.client_id, server_round, phase)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA allocator peak, else the resident-set peak."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_reply(net: torch.nn.Module, env: ClientEnv, trained: TrainStats | None
               ) -> tuple[float, int, dict[str, Any]]:
    """The personalized-evaluation reply: ``net`` on the client's test split, with the
    seconds and sample-passes of the training this request did first (if any)."""
    result = evaluate(net, env.data.test, device=env.device)
    return result.loss, result.samples, {"accuracy": result.accuracy,
                                         "num_params": num_parameters(net),
                                         **work_metrics(trained)}


def work_metrics(*trained: TrainStats | None) -> dict[str, float | int]:
    """``train_seconds`` and ``sample_passes`` (samples through forward + backward) of the
    training runs a request did: the client compute the benchmark protocol measures."""
    done = [t for t in trained if t is not None]
    return {"train_seconds": float(sum(t.seconds for t in done)),
            "sample_passes": int(sum(t.samples for t in done))}
