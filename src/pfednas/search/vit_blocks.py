"""The transformer building blocks of the ``vit`` space (:mod:`pfednas.search.vit`): elastic
attention, block and stage, and the closed forms of their state shapes and forward costs."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

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
    """Multi-head self-attention with a prefix of ``head_dim``-sized heads."""

    def __init__(self, width: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.head_dim = head_dim
        inner = heads * head_dim
        self.q = DynamicLinear(width, inner)
        self.k = DynamicLinear(width, inner)
        self.v = DynamicLinear(width, inner)
        self.proj = DynamicLinear(inner, width)

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


class ElasticTransformerBlock(nn.Module):
    """Pre-norm transformer block with elastic width, heads and MLP ratio."""

    def __init__(self, width: int, heads: int, head_dim: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = DynamicLayerNorm(width)
        self.attn = ElasticAttention(width, heads, head_dim)
        self.norm2 = DynamicLayerNorm(width)
        self.fc1 = DynamicLinear(width, mlp_hidden(width, mlp_ratio))
        self.act = nn.GELU()
        self.fc2 = DynamicLinear(mlp_hidden(width, mlp_ratio), width)

    def forward(self, x: Tensor, heads: int, mlp_ratio: float) -> Tensor:
        d = x.shape[-1]
        x = x + self.attn(self.norm1(x), heads)
        return x + self.fc2(self.act(self.fc1(self.norm2(x), mlp_hidden(d, mlp_ratio))), d)


class ElasticTransformerStage(nn.Module):
    """Conv embedding (3×3, stride) then transformer blocks over the feature-map tokens."""

    def __init__(
        self, in_width: int, cfg: TransformerStageConfig, *, stride: int, head_dim: int
    ) -> None:
        super().__init__()
        self.embed = DynamicConv2d(in_width, cfg.width, 3, stride=stride)
        self.embed_bn = DynamicBatchNorm2d(cfg.width)
        self.embed_act = nn.Hardswish()
        self.blocks = nn.ModuleList(
            ElasticTransformerBlock(cfg.width, cfg.heads, head_dim, cfg.mlp_ratio)
            for _ in range(cfg.depth)
        )

    def forward(self, x: Tensor, cfg: TransformerStageConfig) -> Tensor:
        x = self.embed_act(self.embed_bn(self.embed(x, cfg.width)))
        n, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        for block in self.blocks[: cfg.depth]:
            tokens = block(tokens, cfg.heads, cfg.mlp_ratio)
        return tokens.transpose(1, 2).reshape(n, c, h, w)


def linear_shapes(prefix: str, out_f: int, in_f: int | None) -> Shapes:
    """Weight and bias shapes of a linear layer, or of a LayerNorm when ``in_f`` is None."""
    weight = (out_f,) if in_f is None else (out_f, in_f)
    return [(f"{prefix}.weight", weight), (f"{prefix}.bias", (out_f,))]


def transformer_block_shapes(prefix: str, width: int, inner: int, hidden: int) -> Shapes:
    out = linear_shapes(f"{prefix}.norm1", width, None)
    for name in ("q", "k", "v"):
        out += linear_shapes(f"{prefix}.attn.{name}", inner, width)
    out += linear_shapes(f"{prefix}.attn.proj", width, inner) + linear_shapes(
        f"{prefix}.norm2", width, None
    )
    return (
        out
        + linear_shapes(f"{prefix}.fc1", hidden, width)
        + linear_shapes(f"{prefix}.fc2", width, hidden)
    )


def transformer_block_cost(
    width: int, heads: int, head_dim: int, hidden: int, tokens: int
) -> tuple[int, int]:
    """Per-sample (MACs, activations) of one :class:`ElasticTransformerBlock` over ``tokens``."""
    inner = heads * head_dim
    macs = (
        3 * tokens * inner * width  # q, k, v
        + 2 * tokens * tokens * inner  # attention matmuls (ElasticAttention.cost_terms)
        + tokens * width * inner  # proj
        + 2 * tokens * hidden * width  # fc1, fc2
    )
    act = (
        2 * tokens * width  # norm1, norm2
        + heads * tokens * tokens  # attention matrix
        + 3 * tokens * inner  # q, k, v
        + 2 * tokens * width  # proj, fc2
        + 2 * tokens * hidden  # fc1, GELU
    )
    return macs, act
