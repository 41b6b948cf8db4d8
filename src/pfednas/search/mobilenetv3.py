"""``mobilenetv3``: Once-for-All style elastic MobileNetV3 (Cai et al., ICLR'20).

Network: stem conv 3×3 → elastic inverted-residual stages → 1×1 conv to
``head_width`` → global pool → linear classifier (the head).  Elastic:

* input resolution (a scale of the image side; the input is resized by
  bilinear interpolation inside ``forward``),
* per stage: output width (prefix channels) and depth (the first ``d`` blocks),
* per block: depthwise kernel {3, 5, 7} (plain centre crop of the 7×7 kernel,
  no learned kernel transform) and expand ratio {3, 4, 6} (prefix of the
  hidden channels);
* optionally (``stem_mults``, ``head_mults`` with more than one choice) the stem's and the
  head's widths (prefix channels), so that a space reaches down to very small devices.

Stride-2 positions (stem, then stages) are kept only while the smallest
resolution's feature map stays ≥ ``min_feature`` pixels, so 8×8 inputs work.

Dimensions, in order: ``resolution``; ``stem_width`` where elastic; then per stage ``s``:
``s{s}_width``, ``s{s}_depth`` and per block slot ``b``: ``s{s}_b{b}_kernel``,
``s{s}_b{b}_expand`` (slots beyond the depth are inactive but still part of the value, as in
PerFedRLNAS's policy); ``head_width`` last, where elastic.

String grammar (body after ``mobilenetv3:``)::

    r<scale>[-s<stem>]-<stage>-<stage>-...[-h<head>]
                                      stage := w<width>d<depth>_<block>_<block>...
                                      block := k<kernel>e<expand>

e.g. ``mobilenetv3:r0.75-w24d2_k3e4_k5e6_k3e3-w32d1_k7e3_k3e3_k5e4-...``;
every block slot is listed, the first ``d`` are active.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch.nn.functional as F
from torch import Tensor, nn

from pfednas.search.arch import Arch, Dimension
from pfednas.search.blocks import mb_block, stem
from pfednas.search.layers import (
    Act,
    BatchNorm,
    Container,
    Conv,
    Linear,
    Part,
    build_into,
)
from pfednas.search.ops import (
    DynamicBatchNorm2d,
    DynamicConv2d,
    DynamicLinear,
    adapt_strides,
    make_divisible,
)
from pfednas.search.space import ElasticNet, SearchSpace, TaskShape


@dataclass(frozen=True)
class MBStageConfig:
    width: int
    blocks: tuple[tuple[int, float], ...]  # (kernel, expand ratio) of the active blocks


@dataclass(frozen=True)
class MBNetConfig:
    resolution: int
    stages: tuple[MBStageConfig, ...]
    stem_width: int | None = None  # None: the spec's (a space without an elastic stem)
    head_width: int | None = None  # None: the spec's


@dataclass(frozen=True)
class MBNetSpec:
    """The fixed structure around the elastic choices."""

    in_channels: int
    num_classes: int
    stem_width: int
    strides: tuple[int, ...]  # stem, then one per stage
    se: tuple[bool, ...]
    acts: tuple[str, ...]
    head_width: int
    divisor: int


class MobileNetV3Net(ElasticNet[MBNetConfig]):
    """Elastic MobileNetV3 built for one configuration (the supernet: the largest)."""

    stem_conv: DynamicConv2d
    stem_bn: DynamicBatchNorm2d
    stem_act: nn.Module
    stages: nn.ModuleList
    final_conv: DynamicConv2d
    final_bn: DynamicBatchNorm2d
    final_act: nn.Module
    classifier: DynamicLinear

    def __init__(self, spec: MBNetSpec, config: MBNetConfig) -> None:
        super().__init__()
        self.config = config
        build_into(self, mb_net(spec, config))

    def forward_config(self, x: Tensor, config: MBNetConfig) -> Tensor:
        if x.shape[-1] != config.resolution or x.shape[-2] != config.resolution:
            x = F.interpolate(
                x, size=(config.resolution, config.resolution), mode="bilinear", align_corners=False
            )
        x = self.stem_act(self.stem_bn(self.stem_conv(x, config.stem_width)))
        for blocks, stage in zip(self.stages, config.stages, strict=True):
            for block, (kernel, expand) in zip(
                cast(nn.ModuleList, blocks), stage.blocks, strict=False
            ):
                x = block(x, stage.width, kernel, expand)
        x = self.final_act(self.final_bn(self.final_conv(x, config.head_width)))
        return self.classifier(x.mean((2, 3)))

    def head_parameter_names(self) -> list[str]:
        return ["classifier.weight", "classifier.bias"]


def mb_net(spec: MBNetSpec, config: MBNetConfig) -> list[Part]:
    """:class:`MobileNetV3Net`'s plan for ``config``: what builds it, shapes it and costs it."""
    stem_width = config.stem_width or spec.stem_width
    head_width = config.head_width or spec.head_width
    plan: list[Part] = [*stem(spec.in_channels, stem_width, spec.strides[0]),
                        Container("stages", nn.ModuleList)]
    width = stem_width
    for s, stage in enumerate(config.stages):
        plan.append(Container(f"stages.{s}", nn.ModuleList))
        for b, (kernel, expand) in enumerate(stage.blocks):
            plan += mb_block(
                f"stages.{s}.{b}",
                width if b == 0 else stage.width,
                stage.width,
                kernel,
                expand,
                stride=spec.strides[s + 1] if b == 0 else 1,
                use_se=spec.se[s],
                act=spec.acts[s],
                divisor=spec.divisor,
                residual=b > 0,
            )
        width = stage.width
    return plan + [
        Conv("final_conv", width, head_width, 1),
        BatchNorm("final_bn", head_width),
        Act("final_act", "hswish", head_width),
        Linear("classifier", head_width, spec.num_classes, pooled=True),
    ]


_STAGE = re.compile(r"w(\d+)d(\d+)((?:_k\d+e[\d.]+)+)")
_BLOCK = re.compile(r"_k(\d+)e([\d.]+)")


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"bad mobilenetv3 value {text!r}") from None


def _index(choices: tuple[object, ...], value: float, what: str) -> int:
    for i, c in enumerate(choices):
        if abs(float(c) - value) < 1e-9:  # type: ignore[arg-type]
            return i
    raise ValueError(f"{what}={value:g} is not one of {choices}")


class MobileNetV3Space(SearchSpace):
    """OFA-style elastic MobileNetV3 space; see the module docstring for the grammar."""

    name = "mobilenetv3"
    nests_by_index = True  # choices ascend; a smaller one runs on a larger one's weights

    def __init__(
        self,
        *,
        base_widths: Sequence[int] = (24, 32, 48, 64),
        width_mults: Sequence[float] = (0.5, 0.75, 1.0),
        depths: Sequence[int] = (1, 2, 3),
        kernels: Sequence[int] = (3, 5, 7),
        expand_ratios: Sequence[float] = (3, 4, 6),
        resolution_scales: Sequence[float] = (0.75, 0.875, 1.0),
        stem_width: int = 16,
        head_width: int = 256,
        stem_stride: int = 2,
        stage_strides: Sequence[int] = (1, 2, 2, 1),
        stage_se: Sequence[bool] = (False, True, False, True),
        stage_acts: Sequence[str] = ("relu", "relu", "hswish", "hswish"),
        divisor: int = 4,
        min_feature: int = 2,
        stem_mults: Sequence[float] = (1.0,),
        head_mults: Sequence[float] = (1.0,),
    ) -> None:
        n = len(base_widths)
        if not len(stage_strides) == len(stage_se) == len(stage_acts) == n:
            raise ValueError(
                "base_widths, stage_strides, stage_se and stage_acts need one entry per stage"
            )
        self.divisor = divisor
        self.requested_strides = (stem_stride, *stage_strides)
        self.stage_se, self.stage_acts = tuple(stage_se), tuple(stage_acts)
        self.min_feature = min_feature
        self.max_depth = max(depths)
        dims = [Dimension("resolution", tuple(sorted(float(r) for r in resolution_scales)))]
        stems = tuple(sorted({make_divisible(stem_width * m, divisor) for m in stem_mults}))
        heads = tuple(sorted({make_divisible(head_width * m, divisor) for m in head_mults}))
        # elastic only with a choice (one choice adds no dimension: archs stay as they were)
        self.elastic_stem, self.elastic_head = len(stems) > 1, len(heads) > 1
        self.stem_width = max(stems) if self.elastic_stem else stem_width
        self.head_width = max(heads) if self.elastic_head else head_width
        if self.elastic_stem:
            dims.append(Dimension("stem_width", stems))
        for s, base in enumerate(base_widths):
            widths = tuple(sorted({make_divisible(base * m, divisor) for m in width_mults}))
            dims += [
                Dimension(f"s{s}_width", widths),
                Dimension(f"s{s}_depth", tuple(sorted(depths))),
            ]
            for b in range(self.max_depth):
                dims += [
                    Dimension(f"s{s}_b{b}_kernel", tuple(sorted(kernels))),
                    Dimension(f"s{s}_b{b}_expand", tuple(sorted(expand_ratios))),
                ]
        if self.elastic_head:
            dims.append(Dimension("head_width", heads))
        self.dimensions = tuple(dims)
        self.num_stages = n
        self.first_stage = 2 if self.elastic_stem else 1  # the first stage dimension's index

    def width_scaled(self, rate: float) -> MobileNetV3Space:
        """The space whose largest network is this one's with every hidden width scaled by
        ``rate`` (:meth:`width_scaled_config`); rate 1: this space."""
        if rate == 1:
            return self
        config = self.width_scaled_config(rate)
        config.pop("name")
        return MobileNetV3Space(**config)

    def width_scaled_config(self, rate: float) -> dict[str, Any]:
        """The ``search_space`` config of :meth:`width_scaled` (a kept slice's spec names it):
        HeteroFL's ``ceil(rate · C)`` for the stem, each stage and the head of the largest
        network; the expanded and squeeze-and-excitation widths follow the scaled input
        width, rounded to one channel (``divisor: 1``)."""
        from pfednas.search.width import check_rate, scaled_width

        check_rate(rate)
        largest = self.values(self.max_arch())
        first = [self.dimensions[0], *self.dimensions[self.first_stage:self.first_stage + 4]]
        choices = [list(d.choices) for d in first]
        return {
            "name": self.name,
            "base_widths": [scaled_width(rate, int(largest[f"s{s}_width"]))
                            for s in range(self.num_stages)],
            "width_mults": [1.0], "depths": choices[2], "kernels": choices[3],
            "expand_ratios": choices[4], "resolution_scales": choices[0],
            "stem_width": scaled_width(rate, self.stem_width),
            "head_width": scaled_width(rate, self.head_width),
            "stem_stride": self.requested_strides[0],
            "stage_strides": list(self.requested_strides[1:]),
            "stage_se": list(self.stage_se), "stage_acts": list(self.stage_acts),
            "divisor": 1, "min_feature": self.min_feature,
        }

    # -- string form -----------------------------------------------------------
    def format_body(self, indices: tuple[int, ...]) -> str:
        v = [d.choices[i] for d, i in zip(self.dimensions, indices, strict=True)]
        parts, pos = [f"r{v[0]:g}"], self.first_stage
        if self.elastic_stem:
            parts.append(f"s{v[1]}")
        for _ in range(self.num_stages):
            stage = f"w{v[pos]}d{v[pos + 1]}"
            pos += 2
            for _ in range(self.max_depth):
                stage += f"_k{v[pos]}e{v[pos + 1]:g}"
                pos += 2
            parts.append(stage)
        if self.elastic_head:
            parts.append(f"h{v[-1]}")
        return "-".join(parts)

    def parse_body(self, body: str) -> tuple[int, ...]:
        head, *stages = body.split("-")
        stem = stages.pop(0) if self.elastic_stem and stages else None
        last = stages.pop() if self.elastic_head and stages else None
        if (not head.startswith("r") or len(stages) != self.num_stages
                or (self.elastic_stem and not (stem or "").startswith("s"))
                or (self.elastic_head and not (last or "").startswith("h"))):
            raise ValueError(f"bad mobilenetv3 architecture body {body!r}")
        dims = iter(self.dimensions)
        out = [_index(next(dims).choices, _number(head[1:]), "resolution")]
        if stem is not None:
            out.append(_index(next(dims).choices, _number(stem[1:]), "stem width"))
        for stage in stages:
            m = _STAGE.fullmatch(stage)
            blocks = _BLOCK.findall(m.group(3)) if m else []
            if m is None or len(blocks) != self.max_depth:
                raise ValueError(f"bad mobilenetv3 stage {stage!r}")
            out += [_index(next(dims).choices, float(m.group(k)), "width/depth") for k in (1, 2)]
            for kernel, expand in blocks:
                out += [_index(next(dims).choices, float(kernel), "kernel")]
                out += [_index(next(dims).choices, float(expand), "expand")]
        if last is not None:
            out.append(_index(next(dims).choices, _number(last[1:]), "head width"))
        return tuple(out)

    def encode(self, arch: Arch) -> np.ndarray:
        """Chosen values per dimension, with inactive blocks' kernel/expand set to 0 (OFA-style)."""
        code = super().encode(arch)
        pos = self.first_stage
        for _ in range(self.num_stages):
            depth, pos = int(code[pos + 1]), pos + 2
            code[pos + 2 * depth : pos + 2 * self.max_depth] = 0.0
            pos += 2 * self.max_depth
        return code

    # -- networks ----------------------------------------------------------------
    def net_config(self, arch: Arch, task: TaskShape) -> MBNetConfig:
        v = list(self.values(arch).values())
        resolution = max(1, round(task.image_size * v[0]))
        stages, pos = [], self.first_stage
        for _ in range(self.num_stages):
            width, depth = int(v[pos]), int(v[pos + 1])
            blocks = tuple(
                (int(v[pos + 2 + 2 * b]), float(v[pos + 3 + 2 * b])) for b in range(depth)
            )
            stages.append(MBStageConfig(width, blocks))
            pos += 2 + 2 * self.max_depth
        return MBNetConfig(resolution, tuple(stages),
                           stem_width=int(v[1]) if self.elastic_stem else None,
                           head_width=int(v[-1]) if self.elastic_head else None)

    def spec(self, task: TaskShape) -> MBNetSpec:
        smallest = max(1, round(task.image_size * float(self.dimensions[0].choices[0])))  # type: ignore[arg-type]
        return MBNetSpec(
            in_channels=task.in_channels,
            num_classes=task.num_classes,
            stem_width=self.stem_width,
            strides=adapt_strides(self.requested_strides, smallest, self.min_feature),
            se=self.stage_se,
            acts=self.stage_acts,
            head_width=self.head_width,
            divisor=self.divisor,
        )

    def build_net(self, config: MBNetConfig, task: TaskShape) -> MobileNetV3Net:
        return MobileNetV3Net(self.spec(task), config)

    def net_plan(self, config: MBNetConfig, task: TaskShape) -> list[Part]:
        return mb_net(self.spec(task), config)

    def input_side(self, config: MBNetConfig, task: TaskShape) -> int:
        return config.resolution  # the input is resized to the resolution first
