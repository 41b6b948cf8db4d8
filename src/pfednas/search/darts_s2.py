"""``darts_s2``: the DARTS cell network with the s2 operation set {skip_connect, sep_conv_3x3}.

DARTS (Liu et al., ICLR'19, ``cnn/model_search.py``, ``operations.py``) with the
reduced space s2 of RobustDARTS (Zela et al., ICLR'20), as SPIDER (Mushtaq et
al., TMLR) uses it: stem conv (3·C) → ``layers`` cells, reduction cells at
``layers // 3`` and ``2 · layers // 3`` (channels doubled, stride 2 on the
edges from the two cell inputs) → global pool → linear classifier (the head).
Each cell has ``steps`` intermediate nodes, node ``i`` fed by ``2 + i`` edges
(14 edges for 4 steps), and outputs the concatenation of the last
``multiplier`` nodes.  BatchNorm inside cells is affine-free, as in SPIDER.
``skip_connect`` on a stride-2 edge is DARTS's ``FactorizedReduce`` (it has
parameters).  The cell and its operations are in :mod:`pfednas.search.darts_cell`.

An architecture is a per-edge operation mask α ∈ {0,1}² (skip, sep) per edge,
per cell type (normal, reduce) — :class:`CellMask`.  The supernet forward sums
the kept operations with weight 1 (SPIDER's global model: no softmax, no
architecture weights).  Extracting an architecture physically drops the pruned
operations' parameters.  An extracted network still accepts any sub-mask of
its own in ``forward(x, mask)`` (SPIDER's perturbation search).

Dimensions: ``normal_e0 … normal_e13``, ``reduce_e0 … reduce_e13``, each with
choices ``("skip", "sep", "both")`` — the non-empty masks — or, with
``allow_empty_edges=True``, ``("none", "skip", "sep", "both")`` (SPIDER's edge
decisions drop whole edges).  Edges are in DARTS order: node 0 ← (c_{k-2},
c_{k-1}), node 1 ← (c_{k-2}, c_{k-1}, node 0), …

String grammar (body after ``darts_s2:``)::

    n_<one letter per normal edge>-r_<one letter per reduce edge>
    letter := s (skip_connect) | c (sep_conv_3x3) | b (both) | o (none)

e.g. ``darts_s2:n_bbbbbbbbbbbbbb-r_scbbbbbbbbbbbb``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import Tensor, nn

from pfednas.search.arch import Arch, Dimension, TaskShape
from pfednas.search.clone import ClonePlan, Slot
from pfednas.search.darts_cell import OP_NAMES, Cell, CellMask, EdgeMask, cell_plan
from pfednas.search.layers import BatchNorm, Container, Conv, Linear, Part, build_into
from pfednas.search.ops import DynamicLinear, conv_out
from pfednas.search.space import ElasticNet, SearchSpace

__all__ = ["OP_NAMES", "Cell", "CellMask", "DartsNet", "DartsS2Space", "DartsSpec", "EdgeMask"]

_CHOICE_MASKS = {
    "none": (False, False),
    "skip": (True, False),
    "sep": (False, True),
    "both": (True, True),
}
_LETTERS = {"none": "o", "skip": "s", "sep": "c", "both": "b"}


@dataclass(frozen=True)
class DartsSpec:
    in_channels: int
    num_classes: int
    image_size: int
    channels: int
    layers: int
    steps: int
    multiplier: int
    stem_multiplier: int


class DartsNet(ElasticNet[CellMask]):
    """The DARTS s2 network built for one mask (the supernet: every op on every edge)."""

    stem: nn.Sequential
    cells: nn.ModuleList
    classifier: DynamicLinear

    def __init__(self, spec: DartsSpec, mask: CellMask) -> None:
        super().__init__()
        self.config = mask
        build_into(self, darts_net(spec, mask))

    def forward_config(self, x: Tensor, config: CellMask) -> Tensor:
        s0 = s1 = self.stem(x)
        for cell in cast(list[Cell], self.cells):
            s0, s1 = s1, cell(s0, s1, config.edges(cell.reduction))
        return self.classifier(s1.mean((2, 3)))

    def head_parameter_names(self) -> list[str]:
        return ["classifier.weight", "classifier.bias"]


def darts_net(spec: DartsSpec, mask: CellMask) -> list[Part]:
    """:class:`DartsNet`'s plan for ``mask``: what builds it, shapes it and costs it.

    Reduction cells at ``layers // 3`` and ``2 · layers // 3`` double the channels and
    halve the side.
    """
    c_curr = spec.stem_multiplier * spec.channels
    plan: list[Part] = [
        Container("stem", nn.Sequential),
        Conv("stem.0", spec.in_channels, c_curr, 3),
        BatchNorm("stem.1", c_curr),
        Container("cells", nn.ModuleList),
    ]
    c_prev_prev, c_prev, c_curr = c_curr, c_curr, spec.channels
    sides = (spec.image_size, spec.image_size)
    reduction_prev = False
    for i in range(spec.layers):
        reduction = i in (spec.layers // 3, 2 * spec.layers // 3)
        c_curr = c_curr * 2 if reduction else c_curr
        plan += cell_plan(
            f"cells.{i}",
            mask.edges(reduction),
            steps=spec.steps,
            multiplier=spec.multiplier,
            c_prev_prev=c_prev_prev,
            c_prev=c_prev,
            c=c_curr,
            reduction=reduction,
            reduction_prev=reduction_prev,
            sides=sides,
        )
        reduction_prev = reduction
        c_prev_prev, c_prev = c_prev, spec.multiplier * c_curr
        sides = (sides[1], conv_out(sides[1], 3, 2) if reduction else sides[1])
    return plan + [Linear("classifier", c_prev, spec.num_classes, pooled=True)]


class DartsS2Space(SearchSpace):
    """DARTS cells with {skip_connect, sep_conv_3x3} per edge; see the module docstring."""

    name = "darts_s2"

    def __init__(
        self,
        *,
        channels: int = 8,
        layers: int = 8,
        steps: int = 4,
        multiplier: int = 4,
        stem_multiplier: int = 3,
        allow_empty_edges: bool = False,
    ) -> None:
        self.channels, self.layers, self.steps = channels, layers, steps
        self.multiplier, self.stem_multiplier = multiplier, stem_multiplier
        self.num_edges = sum(2 + i for i in range(steps))
        self._clone_cache: dict[TaskShape, tuple[DartsNet, ClonePlan | None]] = {}
        choices = ("none", "skip", "sep", "both") if allow_empty_edges else ("skip", "sep", "both")
        self.dimensions = tuple(
            Dimension(f"{cell}_e{e}", choices)
            for cell in ("normal", "reduce")
            for e in range(self.num_edges)
        )

    # -- masks ---------------------------------------------------------------
    def mask(self, arch: Arch) -> CellMask:
        """The per-edge operation mask of an architecture."""
        masks = [_CHOICE_MASKS[str(v)] for v in self.values(arch).values()]
        return CellMask(tuple(masks[: self.num_edges]), tuple(masks[self.num_edges :]))

    def arch_from_mask(self, mask: CellMask) -> Arch:
        lookup = {
            m: i for i, m in enumerate(_CHOICE_MASKS[str(c)] for c in self.dimensions[0].choices)
        }
        edges = (*mask.normal, *mask.reduce)
        missing = [e for e in edges if e not in lookup]
        if len(edges) != len(self.dimensions) or missing:
            raise ValueError(
                f"mask not representable in this space (edges {len(edges)}, unsupported {missing})"
            )
        return self.arch_from_indices([lookup[e] for e in edges])

    def encode(self, arch: Arch) -> np.ndarray:
        """The mask bits, flattened: (cell type, edge, op) → 2·14·2 = 56 floats."""
        return self.mask(arch).to_array().astype(np.float64).ravel()

    # -- string form -------------------------------------------------------------
    def format_body(self, indices: tuple[int, ...]) -> str:
        letters = "".join(
            _LETTERS[str(d.choices[i])] for d, i in zip(self.dimensions, indices, strict=True)
        )
        return f"n_{letters[: self.num_edges]}-r_{letters[self.num_edges :]}"

    def parse_body(self, body: str) -> tuple[int, ...]:
        normal, _, reduce = body.partition("-")
        if not (normal.startswith("n_") and reduce.startswith("r_")):
            raise ValueError(f"bad darts_s2 architecture body {body!r}")
        letters = normal[2:] + reduce[2:]
        codes = [_LETTERS[str(c)] for c in self.dimensions[0].choices]
        if len(letters) != len(self.dimensions) or any(ch not in codes for ch in letters):
            raise ValueError(f"bad darts_s2 architecture body {body!r}; letters must be in {codes}")
        return tuple(codes.index(ch) for ch in letters)

    # -- networks --------------------------------------------------------------------
    def net_config(self, arch: Arch, task: TaskShape) -> CellMask:
        return self.mask(arch)

    def _full_mask(self) -> CellMask:
        return CellMask(*(((True, True),) * self.num_edges,) * 2)

    def _derive_template(
        self, config: CellMask, task: TaskShape, training: bool
    ) -> tuple[ElasticNet[CellMask], list[Slot]] | None:
        """The full ``meta`` network, cloned without the dropped operations' modules."""
        if task not in self._clone_cache:
            with torch.device("meta"):
                full = self.build_net(self._full_mask(), task)
            self._clone_cache[task] = (full, ClonePlan.of(full))
        full, plan = self._clone_cache[task]
        if plan is None:
            return None
        keep = (config.normal, config.reduce)
        skip = frozenset(
            f"cells.{i}.edges.{e}.{name}"
            for i, c in enumerate(cast(list[Cell], full.cells))
            for e, edge in enumerate(keep[int(c.reduction)])
            for name, kept in zip(OP_NAMES, edge, strict=True)
            if not kept
        )
        module, slots = plan.clone(skip=skip, training=training)
        net = cast(DartsNet, module)
        net.config = config
        return net, slots

    def spec(self, task: TaskShape) -> DartsSpec:
        return DartsSpec(
            in_channels=task.in_channels,
            num_classes=task.num_classes,
            image_size=task.image_size,
            channels=self.channels,
            layers=self.layers,
            steps=self.steps,
            multiplier=self.multiplier,
            stem_multiplier=self.stem_multiplier,
        )

    def build_net(self, config: CellMask, task: TaskShape) -> DartsNet:
        return DartsNet(self.spec(task), config)

    def net_plan(self, config: CellMask, task: TaskShape) -> list[Part]:
        return darts_net(self.spec(task), config)
