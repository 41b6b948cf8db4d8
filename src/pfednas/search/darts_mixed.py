"""The ``darts_s2`` supernet with continuous architecture weights (DARTS's ``MixedOp``).

DARTS (Liu et al., ICLR'19, ``cnn/model_search.py``) relaxes the choice of an
operation on edge (i, j) to a softmax mixture, ō(x) = Σ_o softmax(α_{i,j})_o · o(x),
and learns α by gradient descent beside the weights. FedNAS (He et al., 2020)
trains one such supernet by FedAvg on the weights *and* α; the PerFedRLNAS paper
(Table 3) uses it as the global-NAS reference.

:class:`DartsMixedNet` wraps the ``darts_s2`` network built for the full mask
(every edge holds skip_connect and sep_conv_3x3; ops, cells and keys are
``pfednas.search.darts_s2``'s) and adds ``alpha_normal`` / ``alpha_reduce``
of shape (edges, 2) as ``nn.Parameter``: they are in ``state_dict``, so they
travel in messages and are averaged with the weights. :meth:`derive` takes the
argmax operation per edge (a ``darts_s2`` :class:`Arch` with one op per edge),
and :meth:`extract` builds that standalone network with the supernet's weights.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from pfednas.search.arch import Arch
from pfednas.search.darts_s2 import OP_NAMES, Cell, CellMask, DartsNet, DartsS2Space
from pfednas.search.space import TaskShape

ALPHA_KEYS = ("alpha_normal", "alpha_reduce")


def _full_mask(num_edges: int) -> CellMask:
    both = ((True, True),) * num_edges
    return CellMask(both, both)


class DartsMixedNet(nn.Module):
    """``darts_s2`` supernet whose edges mix their two operations by softmax(α)."""

    def __init__(self, space: DartsS2Space, task: TaskShape) -> None:
        super().__init__()
        self.space, self.task = space, task
        self.alpha_normal = nn.Parameter(torch.zeros(space.num_edges, len(OP_NAMES)))
        self.alpha_reduce = nn.Parameter(torch.zeros(space.num_edges, len(OP_NAMES)))
        self.net: DartsNet = space.build_net(_full_mask(space.num_edges), task)

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha_normal, self.alpha_reduce]

    def weight_parameters(self) -> list[nn.Parameter]:
        return list(self.net.parameters())

    def forward(self, x: Tensor) -> Tensor:
        weights = {False: self.alpha_normal.softmax(-1), True: self.alpha_reduce.softmax(-1)}
        s0 = s1 = self.net.stem(x)
        for cell in cast(list[Cell], self.net.cells):
            s0, s1 = s1, _mixed_cell(cell, s0, s1, weights[cell.reduction])
        return cast(Tensor, self.net.classifier(s1.mean((2, 3))))

    def derive(self) -> Arch:
        """One operation per edge: the argmax of its α (DARTS's discretisation, no pruning)."""
        def edges(alpha: Tensor) -> tuple[tuple[bool, bool], ...]:
            best = alpha.detach().argmax(-1).tolist()
            return tuple((b == 0, b == 1) for b in best)

        return self.space.arch_from_mask(CellMask(edges(self.alpha_normal),
                                                  edges(self.alpha_reduce)))

    def extract(self, arch: Arch) -> DartsNet:
        """The standalone ``darts_s2`` network of ``arch`` holding copies of these weights."""
        sub = self.space.build_net(self.space.mask(arch), self.task)
        full = self.net.state_dict()
        sub.load_state_dict({k: full[k].clone() for k in sub.state_dict()}, strict=True)
        return sub


def _mixed_cell(cell: Cell, s0: Tensor, s1: Tensor, weights: Tensor) -> Tensor:
    """A DARTS cell's forward with each edge's ops weighted by ``weights[edge]``."""
    states = [cell.preprocess0(s0), cell.preprocess1(s1)]
    e = 0
    for _ in range(cell.steps):
        terms = [weights[e + j, k] * cast(nn.ModuleDict, cell.edges[e + j])[name](h)
                 for j, h in enumerate(states) for k, name in enumerate(OP_NAMES)]
        e += len(states)
        states.append(sum(terms[1:], terms[0]))
    return torch.cat(states[-cell.multiplier:], dim=1)
