"""SPIDER Trainer (Mushtaq et al., TMLR, Alg. 1): the weight-sharing regulariser and the pair step.

Each client holds a *global* supernet ``w`` (trained by FedAvg) and a *local*
model ``v_k`` whose architecture ``A_k`` is a sub-mask of the supernet's. Per
minibatch it takes a global step on cross-entropy, then a local step on

    h_k(v_k) = F_k(v_k, A_k) + (λ/2) ‖v_k − w_share‖²                      (eq. 4)

where ``w_share`` are the **round-start** global weights on exactly the
coordinates the local architecture still has (Alg. 1, lines 11–14). In
``darts_s2`` every kept operation is full size, so the shared coordinates are
the local model's parameters, matched to the supernet's by name.

Unlike the reference code, weight decay and gradient clipping are applied to
both models (the reference ignored its weight-decay flag and clipped the local
gradients after the step, a no-op). Pure torch; no Flower.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pfednas.data import ArrayDataset
from pfednas.train import (
    CountingForward,
    Hyper,
    LossTally,
    MomentumSGD,
    proximal_penalty,
    to_tensors,
)


def shared_anchor(local: nn.Module, global_net: nn.Module) -> dict[str, Tensor]:
    """``w_share``: detached copies of the global parameters the local model also has (eq. 4).

    Parameters are matched by name; a local parameter with no global counterpart
    of the same shape is not regularised.
    """
    glob = dict(global_net.named_parameters())
    return {name: glob[name].detach().clone() for name, p in local.named_parameters()
            if name in glob and glob[name].shape == p.shape}


@dataclass(frozen=True)
class PairHyper:
    """Optimisation of the pair: SGD (momentum, weight decay) shared, λ and clipping."""

    hyper: Hyper
    lam: float
    grad_clip: float  # max global L2 norm of each model's gradient; <= 0 disables


@dataclass(frozen=True)
class PairStats:
    """The pair's training: its losses, the samples each model passed, its seconds and
    ``macs``, the training MACs of both models (the cost model's, as ``TrainStats.macs``)."""

    global_loss: float
    local_loss: float
    penalty: float
    samples: int
    seconds: float
    macs: int = 0


def _step(model: nn.Module, optimizer: MomentumSGD, loss: Tensor, grad_clip: float) -> None:
    optimizer.zero_grad()
    loss.backward()
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()


def train_pair(global_net: nn.Module, local_net: nn.Module, data: ArrayDataset, *,
               epochs: int, pair: PairHyper, generator: torch.Generator,
               device: torch.device) -> PairStats:
    """Alternate a global CE step and a local eq.-4 step on every minibatch (Alg. 1, 15–18).

    ``w_share`` is taken once, before the first step: the round-start global
    weights. Fresh optimisers each round (momentum is not carried over rounds).
    """
    start = time.perf_counter()
    global_net.to(device).train()
    local_net.to(device).train()
    anchor = shared_anchor(local_net, global_net)
    # torch's SGD update without ``torch.optim``, whose first optimizer in a process imports
    # ``torch._dynamo`` (a deployed ClientApp starts a process per message)
    opt_global = MomentumSGD(global_net.parameters(), pair.hyper)
    opt_local = MomentumSGD(local_net.parameters(), pair.hyper)
    local_params = dict(local_net.named_parameters())
    x, y = to_tensors(data, device)
    n, size = len(y), pair.hyper.batch_size
    tallies = (LossTally(), LossTally(), LossTally())  # global CE, local CE, penalty
    forward_global, forward_local = CountingForward(global_net), CountingForward(local_net)
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).to(device)
        for begin in range(0, n, size):
            idx = order[begin:begin + size]
            if len(idx) < 2 and n >= 2:  # BatchNorm needs two samples in train mode
                continue
            xb, yb = x[idx], y[idx]
            g_loss = F.cross_entropy(forward_global(xb), yb)
            _step(global_net, opt_global, g_loss, pair.grad_clip)
            ce = F.cross_entropy(forward_local(xb), yb)
            penalty = proximal_penalty(local_params, anchor, pair.lam)
            _step(local_net, opt_local, ce + penalty, pair.grad_clip)
            for tally, value in zip(tallies, (g_loss, ce, penalty), strict=True):
                tally.add(value, len(idx))
    seen = tallies[0].samples
    g, loc, pen = (tally.mean() for tally in tallies)
    return PairStats(global_loss=g, local_loss=loc, penalty=pen, samples=seen,
                     seconds=time.perf_counter() - start,
                     macs=forward_global.training_macs(seen) + forward_local.training_macs(seen))
