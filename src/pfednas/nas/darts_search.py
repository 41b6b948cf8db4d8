"""First-order DARTS search epochs: a FedNAS client's local update.

DARTS (Liu et al., ICLR'19, Alg. 1, first-order approximation ξ = 0) and
FedNAS (He et al., 2020, Alg. 1, local search): per minibatch,

1. an architecture step: α ← α − η_α ∇_α L_val(w, α) on a validation batch,
   with its own optimizer (Adam, lr 3e-3, betas (0.5, 0.999), weight decay
   1e-3 — DARTS's ``arch_learning_rate`` / ``arch_weight_decay``);
2. a weight step: w ← w − η_w ∇_w L_train(w, α) on a train batch (SGD with
   momentum, the federation's local hyperparameters).

Validation batches are drawn by cycling through a shuffled validation split.
Plain PyTorch, no Flower.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pfednas.data import ArrayDataset
from pfednas.search.darts_mixed import DartsMixedNet
from pfednas.train import CountingForward, Hyper, LossTally, TrainStats, to_tensors


@dataclass(frozen=True)
class ArchHyper:
    """The architecture optimizer (DARTS defaults)."""

    lr: float = 3e-3
    weight_decay: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)


def _batches(n: int, batch_size: int, generator: torch.Generator,
             device: torch.device) -> Iterator[torch.Tensor]:
    """Shuffled index batches of size ≥ 2 (BatchNorm), endlessly, reshuffled every pass."""
    while True:
        order = torch.randperm(n, generator=generator).to(device)
        for begin in range(0, n, batch_size):
            idx = order[begin:begin + batch_size]
            if len(idx) >= 2 or n < 2:
                yield idx


def search_epochs(net: DartsMixedNet, train: ArrayDataset, val: ArrayDataset, *, epochs: int,
                  hyper: Hyper, arch: ArchHyper, generator: torch.Generator,
                  device: torch.device) -> TrainStats:
    """``epochs`` passes over ``train``, alternating α steps (val) and weight steps (train).

    Without validation data the α steps are skipped (plain weight training).
    Returns the mean training loss of the weight steps.
    """
    start = time.perf_counter()
    net.to(device).train()
    x, y = to_tensors(train, device)
    xv, yv = to_tensors(val, device)
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=hyper.lr, momentum=hyper.momentum,
                            weight_decay=hyper.weight_decay)
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=arch.lr, betas=arch.betas,
                             weight_decay=arch.weight_decay)
    val_batches = _batches(len(yv), hyper.batch_size, generator, device) if len(yv) else None
    tally, arch_seen, n = LossTally(), 0, len(y)
    forward = CountingForward(net)  # per sample, the same for both steps (one network)
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).to(device)
        for begin in range(0, n, hyper.batch_size):
            idx = order[begin:begin + hyper.batch_size]
            if len(idx) < 2 and n >= 2:
                continue
            if val_batches is not None:
                vidx = next(val_batches)
                a_opt.zero_grad(set_to_none=True)
                F.cross_entropy(net(xv[vidx]), yv[vidx]).backward()
                a_opt.step()
                arch_seen += len(vidx)
            w_opt.zero_grad(set_to_none=True)
            net.alpha_normal.grad = net.alpha_reduce.grad = None
            loss = F.cross_entropy(forward(x[idx]), y[idx])
            loss.backward()
            w_opt.step()
            tally.add(loss, len(idx))
    seen = tally.samples
    # samples: forward + backward passes of both steps (weights on train, alpha on val)
    return TrainStats(loss=tally.mean(), samples=seen + arch_seen,
                      seconds=time.perf_counter() - start,
                      macs=forward.training_macs(seen + arch_seen))
