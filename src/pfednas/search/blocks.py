"""Once-for-All's elastic inverted-residual block (Cai et al., ICLR'20), described once.

:func:`mb_block` is the block's plan (:mod:`pfednas.search.layers`): the parts a block of
these sizes is built from, in order. The ``mobilenetv3`` and ``vit`` networks put it into
their own plans, so the same list builds the block, gives its state shapes and counts its
forward pass. :class:`ElasticMBBlock` and :class:`DynamicSE` hold the built parts and run
them at any nested, smaller size.
"""

from __future__ import annotations

from functools import partial

from torch import Tensor, nn

from pfednas.search.layers import Act, BatchNorm, Container, Conv, Part, under
from pfednas.search.ops import DynamicBatchNorm2d, DynamicConv2d, make_divisible

SE_REDUCTION = 4
"""Squeeze-and-excitation's hidden width: the block's hidden width ÷ 4 (rounded to the divisor)."""


class DynamicSE(nn.Module):
    """Squeeze-and-excitation with a hidden width that follows the input width.

    Parts (:func:`mb_block`): ``reduce`` (1×1 conv) → ``relu`` → ``expand`` (1×1 conv) →
    ``gate`` (hard sigmoid), on the pooled map.
    """

    reduce: DynamicConv2d
    relu: nn.Module
    expand: DynamicConv2d
    gate: nn.Module

    def __init__(self, *, divisor: int) -> None:
        super().__init__()
        self.divisor = divisor

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        mid = make_divisible(c // SE_REDUCTION, self.divisor)
        y = x.mean((2, 3), keepdim=True)
        y = self.gate(self.expand(self.relu(self.reduce(y, mid)), c))
        return x * y


class ElasticMBBlock(nn.Module):
    """OFA's dynamic inverted residual: 1×1 expand → k×k depthwise → [SE] → 1×1 project.

    ``residual`` is structural (fixed at construction): only non-first blocks
    of a stage, whose input and output widths are equal, have a shortcut. Its parts are
    :func:`mb_block`'s.
    """

    expand_conv: DynamicConv2d
    expand_bn: DynamicBatchNorm2d
    expand_act: nn.Module
    dw_conv: DynamicConv2d
    dw_bn: DynamicBatchNorm2d
    dw_act: nn.Module
    se: DynamicSE
    project_conv: DynamicConv2d
    project_bn: DynamicBatchNorm2d

    def __init__(self, *, divisor: int, residual: bool, use_se: bool) -> None:
        super().__init__()
        self.divisor, self.residual, self.use_se = divisor, residual, use_se

    def forward(
        self, x: Tensor, out_channels: int, kernel_size: int, expand_ratio: float
    ) -> Tensor:
        hidden = make_divisible(x.shape[1] * expand_ratio, self.divisor)
        y = self.expand_act(self.expand_bn(self.expand_conv(x, hidden)))
        y = self.dw_act(self.dw_bn(self.dw_conv(y, kernel_size=kernel_size)))
        if self.use_se:
            y = self.se(y)
        y = self.project_bn(self.project_conv(y, out_channels))
        return x + y if self.residual else y


def mb_block(
    name: str,
    in_c: int,
    out_c: int,
    kernel: int,
    expand: float,
    *,
    stride: int,
    use_se: bool,
    act: str,
    divisor: int,
    residual: bool,
) -> list[Part]:
    """The plan of an :class:`ElasticMBBlock` built with these sizes, as the submodule ``name``."""
    hidden = make_divisible(in_c * expand, divisor)
    parts: list[Part] = [
        Conv("expand_conv", in_c, hidden, 1),
        BatchNorm("expand_bn", hidden),
        Act("expand_act", act, hidden),
        Conv("dw_conv", hidden, hidden, kernel, stride=stride, depthwise=True),
        BatchNorm("dw_bn", hidden),
        Act("dw_act", act, hidden),
    ]
    if use_se:
        mid = make_divisible(hidden // SE_REDUCTION, divisor)
        parts += [
            Container("se", partial(DynamicSE, divisor=divisor)),
            Conv("se.reduce", hidden, mid, 1, bias=True, pooled=True),
            Act("se.relu", "relu", mid, pooled=True),
            Conv("se.expand", mid, hidden, 1, bias=True, pooled=True),
            Act("se.gate", "hsigmoid", hidden, pooled=True),
        ]
    parts += [Conv("project_conv", hidden, out_c, 1), BatchNorm("project_bn", out_c)]
    block = partial(ElasticMBBlock, divisor=divisor, residual=residual, use_se=use_se)
    return [Container(name, block), *under(name, parts)]


def stem(in_c: int, width: int, stride: int) -> list[Part]:
    """The conv stem of the ``mobilenetv3`` and ``vit`` networks: 3×3 conv, BatchNorm,
    Hardswish (``stem_conv``, ``stem_bn``, ``stem_act``)."""
    return [Conv("stem_conv", in_c, width, 3, stride=stride), BatchNorm("stem_bn", width),
            Act("stem_act", "hswish", width)]
