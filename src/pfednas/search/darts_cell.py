"""The DARTS cell of the ``darts_s2`` space (:mod:`pfednas.search.darts_s2`): its per-edge
operation mask :class:`CellMask`, :class:`Cell`, and the plans (:mod:`pfednas.search.layers`)
of a cell and of the s2 operations (DARTS's ``OPS``: :func:`operation`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pfednas.search.layers import Act, At, BatchNorm, Container, Conv, Part
from pfednas.search.ops import DynamicBatchNorm2d, DynamicConv2d, conv_out

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


class FactorizedReduce(nn.Module):
    """DARTS stride-2 skip: two offset 1×1 stride-2 convs, concatenated (odd sides padded).

    Parts (:func:`factorized_reduce`): ``relu``, ``conv_1``, ``conv_2``, ``bn``.
    """

    relu: nn.Module
    conv_1: DynamicConv2d
    conv_2: DynamicConv2d
    bn: DynamicBatchNorm2d

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        x = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


class Cell(nn.Module):
    """A DARTS cell holding only the operations its edge masks keep (parts: :func:`cell_plan`)."""

    preprocess0: nn.Module
    preprocess1: nn.Module
    edges: nn.ModuleList

    def __init__(self, *, steps: int, multiplier: int, reduction: bool) -> None:
        super().__init__()
        self.reduction, self.steps, self.multiplier = reduction, steps, multiplier

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


# -- plans (pfednas.search.layers): what builds a cell, shapes it and costs it -------------
def relu_conv_bn(name: str, c_in: int, c_out: int, side: int) -> list[Part]:
    """DARTS's ``ReLUConvBN`` (1×1, affine-free BatchNorm) on a ``side``² map."""
    return [
        Container(name, nn.Sequential),
        At(Act(f"{name}.0", "relu", c_in), side),
        Conv(f"{name}.1", c_in, c_out, 1),
        BatchNorm(f"{name}.2", c_out, affine=False),
    ]


def factorized_reduce(name: str, c_in: int, c_out: int, side: int) -> list[Part]:
    """:class:`FactorizedReduce` on a ``side``² map (both convs read it, padded to even)."""
    return [
        Container(name, FactorizedReduce),
        At(Act(f"{name}.relu", "relu", c_in), side),
        Conv(f"{name}.conv_1", c_in, c_out // 2, 1, stride=2),
        At(Conv(f"{name}.conv_2", c_in, c_out - c_out // 2, 1, stride=2), side),
        BatchNorm(f"{name}.bn", c_out, affine=False),
    ]


def sep_conv(name: str, c: int, kernel: int, stride: int, side: int) -> list[Part]:
    """DARTS's separable conv: (ReLU, depthwise k×k, pointwise, BN) twice, padding k // 2."""
    return [
        Container(name, nn.Sequential),
        At(Act(f"{name}.0", "relu", c), side),
        Conv(f"{name}.1", c, c, kernel, stride=stride, depthwise=True),
        Conv(f"{name}.2", c, c, 1),
        BatchNorm(f"{name}.3", c, affine=False),
        Act(f"{name}.4", "relu", c),
        Conv(f"{name}.5", c, c, kernel, depthwise=True),
        Conv(f"{name}.6", c, c, 1),
        BatchNorm(f"{name}.7", c, affine=False),
    ]


def operation(name: str, op: str, c: int, stride: int, side: int) -> list[Part]:
    """The ``OPS`` registry of the s2 space (affine-free BatchNorm), as the submodule ``name``."""
    if op == "skip_connect":
        if stride == 1:
            return [At(Act(name, "identity", c), side)]
        return factorized_reduce(name, c, c, side)
    if op == "sep_conv_3x3":
        return sep_conv(name, c, 3, stride, side)
    raise ValueError(f"unknown operation {op!r}; known: {OP_NAMES}")


def cell_plan(
    name: str,
    edges: tuple[EdgeMask, ...],
    *,
    steps: int,
    multiplier: int,
    c_prev_prev: int,
    c_prev: int,
    c: int,
    reduction: bool,
    reduction_prev: bool,
    sides: tuple[int, int],
) -> list[Part]:
    """The plan of a :class:`Cell` holding the operations ``edges`` keep, as the submodule
    ``name``; ``sides`` are its two inputs' sides (the first is twice the second after a
    reduction cell, whose ``preprocess0`` halves it)."""
    pre = factorized_reduce if reduction_prev else relu_conv_bn
    side = sides[1]
    out = conv_out(side, 3, 2) if reduction else side
    plan: list[Part] = [
        Container(name, partial(Cell, steps=steps, multiplier=multiplier, reduction=reduction)),
        *pre(f"{name}.preprocess0", c_prev_prev, c, sides[0]),
        *relu_conv_bn(f"{name}.preprocess1", c_prev, c, side),
        Container(f"{name}.edges", nn.ModuleList),
    ]
    e = 0
    for i in range(steps):
        for j in range(2 + i):
            from_input = j < 2
            plan.append(Container(f"{name}.edges.{e}", nn.ModuleDict))
            for op in active_ops(edges[e]):
                plan += operation(
                    f"{name}.edges.{e}.{op}",
                    op,
                    c,
                    stride=2 if reduction and from_input else 1,
                    side=side if from_input else out,
                )
            e += 1
    return plan
