"""The transformer building blocks of the ``vit`` space (:mod:`pfednas.search.vit`): elastic
attention, block and stage, each with its plan (:mod:`pfednas.search.layers`): what builds
it, shapes it and counts its forward pass."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from pfednas.search.layers import (
    Act,
    BatchNorm,
    Container,
    Conv,
    LayerNorm,
    Linear,
    Part,
    Terms,
    under,
)
from pfednas.search.ops import (
    DynamicBatchNorm2d,
    DynamicConv2d,
    DynamicLayerNorm,
    DynamicLinear,
    Shapes,
)


@dataclass(frozen=True)
class TransformerStageConfig:
    width: int
    depth: int
    heads: int
    mlp_ratio: float


def mlp_hidden(width: int, mlp_ratio: float) -> int:
    return int(round(width * mlp_ratio))


class ElasticAttention(nn.Module):
    """Multi-head self-attention with a prefix of ``head_dim``-sized heads.

    Parts (:class:`Attention`): the ``q``, ``k``, ``v`` and ``proj`` linear layers.
    """

    q: DynamicLinear
    k: DynamicLinear
    v: DynamicLinear
    proj: DynamicLinear

    def __init__(self, *, head_dim: int) -> None:
        super().__init__()
        self.head_dim = head_dim

    def forward(self, x: Tensor, heads: int) -> Tensor:
        n, t, d = x.shape
        inner = heads * self.head_dim
        q, k, v = (
            f(x, inner).view(n, t, heads, self.head_dim).transpose(1, 2)
            for f in (self.q, self.k, self.v)
        )
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(n, t, inner), d)

    def cost_terms(self, inputs: tuple[Tensor, ...], output: Tensor) -> tuple[int, int]:
        """The two attention matmuls and the attention matrix (projections count themselves)."""
        n, t, _ = inputs[0].shape
        inner = self.q.weight.shape[0]
        return 2 * n * t * t * inner, n * (inner // self.head_dim) * t * t


@dataclass(frozen=True)
class Attention:
    """The :class:`ElasticAttention` module of a plan, which counts its two matmuls over the
    map's tokens (its projections are parts of their own)."""

    name: str
    heads: int
    head_dim: int

    def build(self) -> nn.Module:
        return ElasticAttention(head_dim=self.head_dim)

    def shapes(self) -> Shapes:
        return []

    def cost(self, side: int) -> Terms:
        tokens, inner = side * side, self.heads * self.head_dim
        return 2 * tokens * tokens * inner, self.heads * tokens * tokens, side


class ElasticTransformerBlock(nn.Module):
    """Pre-norm transformer block with elastic width, heads and MLP ratio
    (parts: :func:`transformer_block`)."""

    norm1: DynamicLayerNorm
    attn: ElasticAttention
    norm2: DynamicLayerNorm
    fc1: DynamicLinear
    act: nn.Module
    fc2: DynamicLinear

    def forward(self, x: Tensor, heads: int, mlp_ratio: float) -> Tensor:
        d = int(x.shape[-1])  # a tensor under torch.jit.trace: the width is fixed there
        x = x + self.attn(self.norm1(x), heads)
        return x + self.fc2(self.act(self.fc1(self.norm2(x), mlp_hidden(d, mlp_ratio))), d)


class ElasticTransformerStage(nn.Module):
    """Conv embedding (3×3, stride) then transformer blocks over the feature-map tokens
    (parts: :func:`transformer_stage`)."""

    embed: DynamicConv2d
    embed_bn: DynamicBatchNorm2d
    embed_act: nn.Module
    blocks: nn.ModuleList

    def forward(self, x: Tensor, cfg: TransformerStageConfig) -> Tensor:
        x = self.embed_act(self.embed_bn(self.embed(x, cfg.width)))
        n, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        for block in self.blocks[: cfg.depth]:
            tokens = block(tokens, cfg.heads, cfg.mlp_ratio)
        return tokens.transpose(1, 2).reshape(n, c, h, w)


def transformer_block(name: str, width: int, heads: int, head_dim: int, hidden: int) -> list[Part]:
    """The plan of an :class:`ElasticTransformerBlock`, as the submodule ``name``."""
    inner = heads * head_dim
    parts: list[Part] = [
        LayerNorm("norm1", width),
        Attention("attn", heads, head_dim),
        *(Linear(f"attn.{p}", width, inner) for p in ("q", "k", "v")),
        Linear("attn.proj", inner, width),
        LayerNorm("norm2", width),
        Linear("fc1", width, hidden),
        Act("act", "gelu", hidden),
        Linear("fc2", hidden, width),
    ]
    return [Container(name, ElasticTransformerBlock), *under(name, parts)]


def transformer_stage(
    name: str, in_width: int, cfg: TransformerStageConfig, *, stride: int, head_dim: int
) -> list[Part]:
    """The plan of an :class:`ElasticTransformerStage`, as the submodule ``name``."""
    parts: list[Part] = [
        Conv("embed", in_width, cfg.width, 3, stride=stride),
        BatchNorm("embed_bn", cfg.width),
        Act("embed_act", "hswish", cfg.width),
        Container("blocks", nn.ModuleList),
    ]
    hidden = mlp_hidden(cfg.width, cfg.mlp_ratio)
    for b in range(cfg.depth):
        parts += transformer_block(f"blocks.{b}", cfg.width, cfg.heads, head_dim, hidden)
    return [Container(name, ElasticTransformerStage), *under(name, parts)]
