"""The DARTS cell of the ``darts_s2`` space (:mod:`pfednas.search.darts_s2`): its per-edge
operation mask :class:`CellMask`, the s2 operations (DARTS's ``OPS``) and :class:`Cell`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pfednas.search.ops import DynamicBatchNorm2d, DynamicConv2d

OP_NAMES = ("skip_connect", "sep_conv_3x3")

EdgeMask = tuple[bool, bool]


@dataclass(frozen=True)
class CellMask:
    """Per-edge operation masks (skip, sep) of the normal and the reduction cell."""

    normal: tuple[EdgeMask, ...]
    reduce: tuple[EdgeMask, ...]

    def to_array(self) -> np.ndarray:
        """Boolean array of shape (2 cell types, edges, 2 ops)."""
        return np.array([self.normal, self.reduce], dtype=bool)

    @classmethod
    def from_array(cls, array: np.ndarray) -> CellMask:
        a = np.asarray(array, dtype=bool)
        if a.ndim != 3 or a.shape[0] != 2 or a.shape[2] != 2:
            raise ValueError(f"mask array must have shape (2, edges, 2), got {a.shape}")
        normal, reduce = (tuple((bool(e[0]), bool(e[1])) for e in cell) for cell in a)
        return cls(normal, reduce)

    def edges(self, reduction: bool) -> tuple[EdgeMask, ...]:
        return self.reduce if reduction else self.normal


def active_ops(edge: EdgeMask) -> list[str]:
    return [name for name, keep in zip(OP_NAMES, edge, strict=True) if keep]


class ReLUConvBN(nn.Sequential):
    """ReLU, k×k conv (padding k // 2), BN."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, affine: bool) -> None:
        super().__init__(
            nn.ReLU(),
            DynamicConv2d(c_in, c_out, kernel, stride=stride),
            DynamicBatchNorm2d(c_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """DARTS separable conv: (ReLU, depthwise k×k, pointwise, BN) twice; padding k // 2."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, affine: bool) -> None:
        super().__init__(
            nn.ReLU(),
            DynamicConv2d(c_in, c_in, kernel, stride=stride, depthwise=True),
            DynamicConv2d(c_in, c_in, 1),
            DynamicBatchNorm2d(c_in, affine=affine),
            nn.ReLU(),
            DynamicConv2d(c_in, c_in, kernel, depthwise=True),
            DynamicConv2d(c_in, c_out, 1),
            DynamicBatchNorm2d(c_out, affine=affine),
        )


class FactorizedReduce(nn.Module):
    """DARTS stride-2 skip: two offset 1×1 stride-2 convs, concatenated (odd sides padded)."""

    def __init__(self, c_in: int, c_out: int, affine: bool) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.conv_1 = DynamicConv2d(c_in, c_out // 2, 1, stride=2)
        self.conv_2 = DynamicConv2d(c_in, c_out - c_out // 2, 1, stride=2)
        self.bn = DynamicBatchNorm2d(c_out, affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        x = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


def make_op(name: str, c: int, stride: int) -> nn.Module:
    """The ``OPS`` registry of the s2 space (affine-free BatchNorm)."""
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine=False)
    if name == "sep_conv_3x3":
        return SepConv(c, c, 3, stride, affine=False)
    raise ValueError(f"unknown operation {name!r}; known: {OP_NAMES}")


class Cell(nn.Module):
    """A DARTS cell holding only the operations its edge masks keep."""

    def __init__(
        self,
        edges: tuple[EdgeMask, ...],
        *,
        steps: int,
        multiplier: int,
        c_prev_prev: int,
        c_prev: int,
        c: int,
        reduction: bool,
        reduction_prev: bool,
    ) -> None:
        super().__init__()
        self.reduction, self.steps, self.multiplier = reduction, steps, multiplier
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(c_prev_prev, c, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(c_prev_prev, c, 1, 1, affine=False)
        self.preprocess1 = ReLUConvBN(c_prev, c, 1, 1, affine=False)
        self.edges = nn.ModuleList()
        e = 0
        for i in range(steps):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                self.edges.append(
                    nn.ModuleDict({n: make_op(n, c, stride) for n in active_ops(edges[e])})
                )
                e += 1

    def forward(self, s0: Tensor, s1: Tensor, edges: tuple[EdgeMask, ...]) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        e = 0
        for _ in range(self.steps):
            terms = [
                self._op(e + j, name)(h)
                for j, h in enumerate(states)
                for name in active_ops(edges[e + j])
            ]
            e += len(states)
            states.append(sum(terms[1:], terms[0]) if terms else self._zeros(states[1]))
        return torch.cat(states[-self.multiplier :], dim=1)

    def _op(self, edge: int, name: str) -> nn.Module:
        ops = cast(nn.ModuleDict, self.edges[edge])
        if name not in ops:
            raise ValueError(
                f"edge {edge} has no {name}: the mask is not a sub-mask of this network"
            )
        return ops[name]

    def _zeros(self, s1: Tensor) -> Tensor:
        n, c, h, w = s1.shape
        if self.reduction:
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        return s1.new_zeros(n, c, h, w)
