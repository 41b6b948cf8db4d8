"""One description per network: the list of its modules, which builds it and costs it.

A family's network is described once, as a *plan*: its modules in construction order, each
a small frozen record named by its ``state_dict`` path (``stages.0.1.dw_conv``). Three walks
read the same plan, so a layer is added in one place:

* :func:`build_into` builds the network's modules (the constructor: weights drawn in plan
  order, so a seeded build is unchanged);
* :func:`plan_shapes` gives the state shapes (``SearchSpace.state_shapes``);
* :func:`plan_cost` gives the forward pass's (MACs, activation elements) under the counting
  rule of :func:`~pfednas.search.cost_model.module_cost_terms` (``SearchSpace.forward_cost``).

The walks follow the feature map's side: a convolution sets it, every other part runs on the
current map, or on the pooled one-pixel map when it is ``pooled`` (a squeeze-and-excitation
gate, the classifier). A branch that starts from another map (an edge of a DARTS cell) wraps
its first part in :class:`At`, which names the side it starts on. The tests check the walks
against a ``meta`` build and a traced forward pass of every registered space.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from torch import nn

from pfednas.search.ops import (
    DynamicBatchNorm2d,
    DynamicConv2d,
    DynamicLayerNorm,
    DynamicLinear,
    Shapes,
    activation,
    conv_out,
)

Terms = tuple[int, int, int]
"""(MACs, activation elements, output side) of one part over one sample."""


class Part(Protocol):
    """One module of a plan."""

    @property
    def name(self) -> str: ...

    def build(self) -> nn.Module: ...

    def shapes(self) -> Shapes: ...

    def cost(self, side: int) -> Terms: ...


def _positions(side: int, pooled: bool) -> int:
    return 1 if pooled else side * side


@dataclass(frozen=True)
class Conv:
    """A :class:`DynamicConv2d` (``depthwise``: groups = channels, ``in_c == out``)."""

    name: str
    in_c: int
    out: int
    kernel: int
    stride: int = 1
    depthwise: bool = False
    bias: bool = False
    pooled: bool = False

    def build(self) -> nn.Module:
        return DynamicConv2d(
            self.in_c, self.out, self.kernel, stride=self.stride, depthwise=self.depthwise,
            bias=self.bias,
        )

    def shapes(self) -> Shapes:
        fan_in = 1 if self.depthwise else self.in_c
        out: Shapes = [(f"{self.name}.weight", (self.out, fan_in, self.kernel, self.kernel))]
        return out + [(f"{self.name}.bias", (self.out,))] if self.bias else out

    def cost(self, side: int) -> Terms:
        side = side if self.pooled else conv_out(side, self.kernel, self.stride)
        out = self.out * _positions(side, self.pooled)
        fan_in = 1 if self.depthwise else self.in_c
        return out * fan_in * self.kernel * self.kernel, out, side


@dataclass(frozen=True)
class Linear:
    """A :class:`DynamicLinear` on every position of the map (tokens), or on the pooled one."""

    name: str
    in_f: int
    out: int
    pooled: bool = False

    def build(self) -> nn.Module:
        return DynamicLinear(self.in_f, self.out)

    def shapes(self) -> Shapes:
        return [(f"{self.name}.weight", (self.out, self.in_f)), (f"{self.name}.bias", (self.out,))]

    def cost(self, side: int) -> Terms:
        out = self.out * _positions(side, self.pooled)
        return out * self.in_f, out, side


@dataclass(frozen=True)
class BatchNorm:
    """A :class:`DynamicBatchNorm2d`; ``affine=False``: no weight and bias (DARTS's cells)."""

    name: str
    channels: int
    affine: bool = True

    def build(self) -> nn.Module:
        return DynamicBatchNorm2d(self.channels, affine=self.affine)

    def shapes(self) -> Shapes:
        stats = (("weight", "bias") if self.affine else ()) + ("running_mean", "running_var")
        out: Shapes = [(f"{self.name}.{n}", (self.channels,)) for n in stats]
        return out + [(f"{self.name}.num_batches_tracked", ())]

    def cost(self, side: int) -> Terms:
        return 0, self.channels * side * side, side


@dataclass(frozen=True)
class LayerNorm:
    name: str
    width: int

    def build(self) -> nn.Module:
        return DynamicLayerNorm(self.width)

    def shapes(self) -> Shapes:
        return [(f"{self.name}.weight", (self.width,)), (f"{self.name}.bias", (self.width,))]

    def cost(self, side: int) -> Terms:
        return 0, self.width * side * side, side


@dataclass(frozen=True)
class Act:
    """An activation by name (:func:`~pfednas.search.ops.activation`) on ``width`` channels."""

    name: str
    fn: str
    width: int
    pooled: bool = False

    def build(self) -> nn.Module:
        return activation(self.fn)

    def shapes(self) -> Shapes:
        return []

    def cost(self, side: int) -> Terms:
        return 0, self.width * _positions(side, self.pooled), side


@dataclass(frozen=True)
class Container:
    """A module that holds the parts named under it (a block, a list of blocks): no state,
    no cost of its own; ``make`` builds it empty."""

    name: str
    make: Callable[[], nn.Module]

    def build(self) -> nn.Module:
        return self.make()

    def shapes(self) -> Shapes:
        return []

    def cost(self, side: int) -> Terms:
        return 0, 0, side


@dataclass(frozen=True)
class At:
    """``part`` run on a ``side``² map, whatever side the walk is at: the first part of a
    branch (a DARTS edge reads one of its cell's inputs, not the previous edge's output)."""

    part: Part
    side: int

    @property
    def name(self) -> str:
        return self.part.name

    def build(self) -> nn.Module:
        return self.part.build()

    def shapes(self) -> Shapes:
        return self.part.shapes()

    def cost(self, side: int) -> Terms:
        return self.part.cost(self.side)


Plan = Sequence[Part]
"""A network's (or a block's) parts in construction and ``state_dict`` order."""


def under(prefix: str, parts: Iterable[Part]) -> list[Part]:
    """``parts`` renamed into the submodule ``prefix`` (before any :class:`At` wraps them)."""
    return [replace(p, name=f"{prefix}.{p.name}") for p in parts]  # type: ignore[type-var]


def build_into(owner: nn.Module, plan: Plan) -> None:
    """Build every part of ``plan`` into ``owner``, in order (its parent must come first)."""
    for part in plan:
        parent, _, leaf = part.name.rpartition(".")
        (owner.get_submodule(parent) if parent else owner).add_module(leaf, part.build())


def plan_shapes(plan: Plan) -> Shapes:
    """(``state_dict`` key, shape) of the network ``plan`` builds, in order."""
    return [shape for part in plan for shape in part.shapes()]


def plan_cost(plan: Plan, side: int) -> tuple[int, int]:
    """(MACs, activation elements) of one sample's forward pass from a ``side``² input."""
    macs = act = 0
    for part in plan:
        m, a, side = part.cost(side)
        macs, act = macs + m, act + a
    return macs, act
