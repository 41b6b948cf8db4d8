"""HAPFNAS phase 1 on the server: distil the clients' knowledge models into the supernet.

The ensemble of the clients' latest knowledge models (each weighted as the strategy
decided) teaches the supernet on the server's transfer inputs with the sandwich rule
(:func:`pfednas.nas.distill.distill_supernet`). The round's server report holds the KL
of the largest and the smallest subnet to the ensemble on held-out transfer inputs, and
where the transfer set is labelled, their accuracy and the ensemble's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from pfednas.nas.aggregation import METHOD_MEAN, AggregationRule
from pfednas.nas.distill import (
    TransferSet,
    accuracy,
    calibrated_subnet,
    distill_supernet,
    ensemble_probs,
    mean_kl,
    torch_threads,
)
from pfednas.nas.phases import Phase
from pfednas.options.hapfnas import DistillOptions
from pfednas.search import Supernet
from pfednas.seeding import HAPFNAS_DISTILL, numpy_rng, torch_generator

Knowledge = Mapping[int, tuple[list[np.ndarray], float]]  # client id -> (arrays, weight)


def teachers(knowledge: Knowledge, knowledge_fn: Callable[[], nn.Module]
             ) -> list[tuple[nn.Module, float]]:
    """The knowledge models, in client order, in eval mode, with their weights."""
    out = []
    for cid in sorted(knowledge):
        arrays, weight = knowledge[cid]
        model = knowledge_fn()
        model.load_state_dict({k: torch.as_tensor(a) for k, a in
                               zip(model.state_dict(), arrays, strict=True)})
        out.append((model.eval(), weight))
    return out


def distill_round(supernet: Supernet, transfer: TransferSet, knowledge: Knowledge,
                  knowledge_fn: Callable[[], nn.Module], options: DistillOptions, *,
                  seed: int, server_round: int, rule: AggregationRule = METHOD_MEAN
                  ) -> dict[str, Any]:
    """Distil the knowledge ensemble into ``supernet`` (in place); the round's server report.
    ``rule``: how the teachers' probabilities combine (:func:`ensemble_probs`)."""
    with torch_threads(options.threads):
        tic = time.perf_counter()
        ensemble = teachers(knowledge, knowledge_fn)
        x, held = torch.as_tensor(transfer.distill), torch.as_tensor(transfer.heldout)
        probs = ensemble_probs(ensemble, x, options.temperature, rule)
        loss = distill_supernet(supernet, x, probs, options=options,
                                rng=numpy_rng(seed, HAPFNAS_DISTILL, server_round),
                                generator=torch_generator(seed, HAPFNAS_DISTILL, server_round))
        held_probs = ensemble_probs(ensemble, held, options.temperature, rule)
        report: dict[str, Any] = {"phase": int(Phase.DISTILL), "teachers": len(ensemble),
                                  "distill_loss": loss}
        labelled = transfer.labelled
        space = supernet.space
        for name, arch in (("max", space.max_arch()), ("min", space.min_arch())):
            net = calibrated_subnet(supernet, arch, x)
            report[f"kl_{name}"] = mean_kl(net, held, held_probs, options.temperature)
            if labelled is not None:
                report[f"acc_{name}"] = accuracy(net, labelled)
        if labelled is not None:
            lab = ensemble_probs(ensemble, torch.as_tensor(labelled.x), options.temperature,
                                 rule)
            report["acc_ensemble"] = float((lab.argmax(1).numpy() == labelled.y).mean())
        report["distill_seconds"] = time.perf_counter() - tic
        return report
