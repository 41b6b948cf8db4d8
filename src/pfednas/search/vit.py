"""``vit``: a small NASViT-style hybrid (Gong et al., ICLR'22), elastic like Once-for-All.

Network: conv stem → elastic MBConv stages (width, depth, kernel; expand ratio
fixed) → elastic transformer stages → LayerNorm → token mean → linear classifier
(the head).  A transformer stage embeds its input with a 3×3 conv (+BN,
Hardswish; stride from the stage, which also gives position information — no
position embedding) into ``width`` channels, then runs ``depth`` pre-norm blocks
(multi-head self-attention, GELU MLP) over the ``H·W`` tokens; those blocks are in
:mod:`pfednas.search.vit_blocks`.

Nested slicing: widths are prefix channels / features; heads are a prefix of
the fixed-size head groups (``q``, ``k``, ``v`` are separate projections, so a
prefix of heads is a prefix of rows); the MLP hidden width
``round(width · mlp_ratio)`` is a prefix; depth keeps the first blocks; conv
kernels are centre crops (no learned kernel transform).

Dimensions, in order: per conv stage ``i``: ``c{i}_width``, ``c{i}_depth``,
``c{i}_kernel``; per transformer stage ``i``: ``t{i}_width``, ``t{i}_depth``,
``t{i}_heads``, ``t{i}_mlp``.

String grammar (body after ``vit:``), stages joined by ``-``::

    conv stage        := c<width>d<depth>k<kernel>
    transformer stage := t<width>d<depth>h<heads>m<mlp ratio>

e.g. ``vit:c16d2k3-c24d1k5-t48d2h3m2-t64d1h4m4``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from torch import Tensor, nn

from pfednas.search.arch import Arch, Dimension
from pfednas.search.blocks import mb_block, stem
from pfednas.search.layers import (
    Container,
    LayerNorm,
    Linear,
    Part,
    build_into,
)
from pfednas.search.ops import (
    DynamicBatchNorm2d,
    DynamicConv2d,
    DynamicLayerNorm,
    DynamicLinear,
    adapt_strides,
)
from pfednas.search.space import ElasticNet, SearchSpace, TaskShape
from pfednas.search.vit_blocks import (
    ElasticAttention,
    ElasticTransformerBlock,
    ElasticTransformerStage,
    TransformerStageConfig,
    mlp_hidden,
    transformer_stage,
)

__all__ = ["ConvStageConfig", "ElasticAttention", "ElasticTransformerBlock",
           "ElasticTransformerStage", "TransformerStageConfig", "VitConfig", "VitNet",
           "VitSpace", "VitSpec", "mlp_hidden"]


@dataclass(frozen=True)
class ConvStageConfig:
    width: int
    depth: int
    kernel: int


@dataclass(frozen=True)
class VitConfig:
    conv: tuple[ConvStageConfig, ...]
    transformer: tuple[TransformerStageConfig, ...]


@dataclass(frozen=True)
class VitSpec:
    in_channels: int
    num_classes: int
    stem_width: int
    strides: tuple[int, ...]  # stem, conv stages, transformer stages
    conv_expand: float
    head_dim: int
    divisor: int


class VitNet(ElasticNet[VitConfig]):
    """The hybrid conv/transformer network built for one configuration (parts: :func:`vit_net`)."""

    stem_conv: DynamicConv2d
    stem_bn: DynamicBatchNorm2d
    stem_act: nn.Module
    conv_stages: nn.ModuleList
    transformer_stages: nn.ModuleList
    norm: DynamicLayerNorm
    classifier: DynamicLinear

    def __init__(self, spec: VitSpec, config: VitConfig) -> None:
        super().__init__()
        self.config = config
        build_into(self, vit_net(spec, config))
        self.conv_expand = spec.conv_expand

    def forward_config(self, x: Tensor, config: VitConfig) -> Tensor:
        x = self.stem_act(self.stem_bn(self.stem_conv(x)))
        for blocks, cs in zip(self.conv_stages, config.conv, strict=True):
            for block in cast(nn.ModuleList, blocks)[: cs.depth]:
                x = block(x, cs.width, cs.kernel, self.conv_expand)
        for stage, ts in zip(self.transformer_stages, config.transformer, strict=True):
            x = stage(x, ts)
        tokens = self.norm(x.flatten(2).transpose(1, 2))
        return self.classifier(tokens.mean(1))

    def head_parameter_names(self) -> list[str]:
        return ["classifier.weight", "classifier.bias"]


def vit_net(spec: VitSpec, config: VitConfig) -> list[Part]:
    """:class:`VitNet`'s plan for ``config``: what builds it, shapes it and costs it."""
    plan: list[Part] = [*stem(spec.in_channels, spec.stem_width, spec.strides[0]),
                        Container("conv_stages", nn.ModuleList)]
    strides = iter(spec.strides[1:])
    width = spec.stem_width
    for i, cs in enumerate(config.conv):
        stride = next(strides)
        plan.append(Container(f"conv_stages.{i}", nn.ModuleList))
        for b in range(cs.depth):
            plan += mb_block(
                f"conv_stages.{i}.{b}",
                width if b == 0 else cs.width,
                cs.width,
                cs.kernel,
                spec.conv_expand,
                stride=stride if b == 0 else 1,
                use_se=False,
                act="hswish",
                divisor=spec.divisor,
                residual=b > 0,
            )
        width = cs.width
    plan.append(Container("transformer_stages", nn.ModuleList))
    for i, ts in enumerate(config.transformer):
        plan += transformer_stage(
            f"transformer_stages.{i}", width, ts, stride=next(strides), head_dim=spec.head_dim
        )
        width = ts.width
    return plan + [
        LayerNorm("norm", width),
        Linear("classifier", width, spec.num_classes, pooled=True),
    ]


_CONV = re.compile(r"c(\d+)d(\d+)k(\d+)")
_TRANSFORMER = re.compile(r"t(\d+)d(\d+)h(\d+)m([\d.]+)")


class VitSpace(SearchSpace):
    """Small NASViT-style hybrid space; see the module docstring for the grammar."""

    name = "vit"

    def __init__(
        self,
        *,
        stem_width: int = 16,
        conv_widths: Sequence[Sequence[int]] = ((16, 24), (24, 32)),
        conv_depths: Sequence[int] = (1, 2),
        conv_kernels: Sequence[int] = (3, 5),
        conv_expand: float = 4,
        transformer_widths: Sequence[Sequence[int]] = ((32, 48, 64), (48, 64, 80)),
        transformer_depths: Sequence[int] = (1, 2, 3),
        heads: Sequence[int] = (2, 3, 4),
        head_dim: int = 16,
        mlp_ratios: Sequence[float] = (2, 3, 4),
        stem_stride: int = 2,
        conv_strides: Sequence[int] = (1, 2),
        transformer_strides: Sequence[int] = (2, 1),
        divisor: int = 4,
        min_feature: int = 2,
    ) -> None:
        if len(conv_strides) != len(conv_widths) or len(transformer_strides) != len(
            transformer_widths
        ):
            raise ValueError("one stride per conv stage and per transformer stage")
        self.stem_width, self.conv_expand, self.head_dim = stem_width, conv_expand, head_dim
        self.divisor, self.min_feature = divisor, min_feature
        self.requested_strides = (stem_stride, *conv_strides, *transformer_strides)
        self.num_conv, self.num_transformer = len(conv_widths), len(transformer_widths)
        dims: list[Dimension] = []
        for i, widths in enumerate(conv_widths):
            dims += [
                Dimension(f"c{i}_width", tuple(sorted(widths))),
                Dimension(f"c{i}_depth", tuple(sorted(conv_depths))),
                Dimension(f"c{i}_kernel", tuple(sorted(conv_kernels))),
            ]
        for i, widths in enumerate(transformer_widths):
            dims += [
                Dimension(f"t{i}_width", tuple(sorted(widths))),
                Dimension(f"t{i}_depth", tuple(sorted(transformer_depths))),
                Dimension(f"t{i}_heads", tuple(sorted(heads))),
                Dimension(f"t{i}_mlp", tuple(sorted(float(m) for m in mlp_ratios))),
            ]
        self.dimensions = tuple(dims)

    # -- string form -------------------------------------------------------------
    def format_body(self, indices: tuple[int, ...]) -> str:
        v = [d.choices[i] for d, i in zip(self.dimensions, indices, strict=True)]
        c = 3 * self.num_conv
        parts = [f"c{v[p]}d{v[p + 1]}k{v[p + 2]}" for p in range(0, c, 3)]
        parts += [f"t{v[p]}d{v[p + 1]}h{v[p + 2]}m{v[p + 3]:g}" for p in range(c, len(v), 4)]
        return "-".join(parts)

    def parse_body(self, body: str) -> tuple[int, ...]:
        stages = body.split("-")
        if len(stages) != self.num_conv + self.num_transformer:
            raise ValueError(f"bad vit architecture body {body!r}")
        values: list[float] = []
        for i, stage in enumerate(stages):
            m = (_CONV if i < self.num_conv else _TRANSFORMER).fullmatch(stage)
            if m is None:
                raise ValueError(f"bad vit stage {stage!r}")
            values += [float(g) for g in m.groups()]
        out = []
        for d, value in zip(self.dimensions, values, strict=True):
            matches = [i for i, c in enumerate(d.choices) if abs(float(c) - value) < 1e-9]  # type: ignore[arg-type]
            if not matches:
                raise ValueError(f"{d.name}={value:g} is not one of {d.choices}")
            out.append(matches[0])
        return tuple(out)

    # -- networks ------------------------------------------------------------------
    def net_config(self, arch: Arch, task: TaskShape) -> VitConfig:
        v = list(self.values(arch).values())
        c = 3 * self.num_conv
        conv = tuple(
            ConvStageConfig(int(v[p]), int(v[p + 1]), int(v[p + 2])) for p in range(0, c, 3)
        )
        transformer = tuple(
            TransformerStageConfig(int(v[p]), int(v[p + 1]), int(v[p + 2]), float(v[p + 3]))
            for p in range(c, len(v), 4)
        )
        return VitConfig(conv, transformer)

    def spec(self, task: TaskShape) -> VitSpec:
        return VitSpec(
            in_channels=task.in_channels,
            num_classes=task.num_classes,
            stem_width=self.stem_width,
            strides=adapt_strides(self.requested_strides, task.image_size, self.min_feature),
            conv_expand=self.conv_expand,
            head_dim=self.head_dim,
            divisor=self.divisor,
        )

    def build_net(self, config: VitConfig, task: TaskShape) -> VitNet:
        return VitNet(self.spec(task), config)

    def net_plan(self, config: VitConfig, task: TaskShape) -> list[Part]:
        return vit_net(self.spec(task), config)
