"""Width-scaled sub-models of one global model: HeteroFL's and FedRolex's slices.

HeteroFL (Diao et al., ICLR'21) gives a client of capacity level ``r`` the global model with
every hidden width scaled to ``ceil(r · C)`` (input channels and classes unchanged), so a
width-scaled layer keeps about ``r²`` of its weights. The global model here is the search
space's largest network (:meth:`SearchSpace.max_arch`); a space that can scale it says so
with ``width_scaled(rate)`` (``mobilenetv3``: the stem, each stage and the head are scaled;
the inner widths, expanded and squeeze-and-excitation, follow from the scaled input width by
the space's own rule, rounded to one channel instead of the divisor).

Where a slice sits in the global model's arrays (:class:`WidthSlicer`):

* ``leading`` (HeteroFL): the first ``ceil(r · C)`` channels of every scaled axis, fixed;
* ``rolling`` (FedRolex, Alam et al., NeurIPS'22): a window of ``ceil(r · C)`` consecutive
  channels (cyclic) that starts at channel ``round mod C``, so every channel of the global
  model is trained as the rounds go by.

Axes a slice keeps whole (kernels, input channels, classes) are taken whole, unpermuted. The
regions are :func:`pfednas.nas.merge.overlap_average`'s, so the aggregation averages each
global entry over the clients that hold it (both papers' rule).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from pfednas.search.arch import Cost, Region, TaskShape
from pfednas.search.ops import nested_slices
from pfednas.search.space import ElasticNet, SearchSpace, Supernet

LEADING, ROLLING = "leading", "rolling"
EXTRACTIONS = (LEADING, ROLLING)
WIDTH_SPACES = ("mobilenetv3",)
"""The search spaces whose largest network can be width-scaled (``width_scaled``)."""


def scaled_width(rate: float, channels: int) -> int:
    """HeteroFL's rule: ``ceil(rate · channels)``, at least one channel."""
    return max(1, math.ceil(rate * channels - 1e-9))


def check_rate(rate: float, key: str = "rate") -> None:
    if not (isinstance(rate, int | float) and not isinstance(rate, bool)
            and 0 < rate <= 1):
        raise ValueError(f"{key} must be a number in (0, 1], got {rate!r}")


def rate_label(rate: float) -> str:
    """``1``, ``1/2``, ``1/16``; else the rate as it is."""
    frac = Fraction(rate).limit_denominator(1024)
    if abs(float(frac) - rate) < 1e-9:
        return (str(frac.numerator) if frac.denominator == 1
                else f"{frac.numerator}/{frac.denominator}")
    return f"{rate:g}"


def supports_width(space: SearchSpace) -> bool:
    return callable(getattr(space, "width_scaled", None))


@dataclass
class WidthSlicer:
    """The global model (``space``'s largest network for ``task``) and its width-``r``
    slices: their spaces, shapes, costs, networks and regions. Memoised per rate."""

    space: SearchSpace
    task: TaskShape
    _spaces: dict[float, SearchSpace] = field(default_factory=dict, repr=False)
    _costs: dict[tuple[float, int], Cost] = field(default_factory=dict, repr=False)
    _shapes: dict[float, list[tuple[str, tuple[int, ...]]]] = field(default_factory=dict,
                                                                     repr=False)

    def __post_init__(self) -> None:
        if not supports_width(self.space):
            raise ValueError(f"search_space={self.space.name} has no width scaling; width "
                             f"slices need search_space={'|'.join(WIDTH_SPACES)}")
        self.full = self.shapes(1.0)

    def scaled_space(self, rate: float) -> SearchSpace:
        check_rate(rate)
        if rate not in self._spaces:
            self._spaces[rate] = self.space.width_scaled(rate)  # type: ignore[attr-defined]
        return self._spaces[rate]

    def space_config(self, rate: float, run_space: dict[str, Any]) -> dict[str, Any]:
        """The ``search_space`` config of the width-``rate`` network (``run_space``, the
        run's, at rate 1): what a kept slice's spec names, so that it rebuilds."""
        check_rate(rate)
        if rate == 1:
            return dict(run_space)
        return dict(self.space.width_scaled_config(rate))  # type: ignore[attr-defined]

    def config(self, rate: float) -> Any:
        space = self.scaled_space(rate)
        return space.net_config(space.max_arch(), self.task)

    def shapes(self, rate: float) -> list[tuple[str, tuple[int, ...]]]:
        """(state key, shape) of the width-``rate`` network, in ``state_dict`` order."""
        if rate not in self._shapes:
            space = self.scaled_space(rate)
            shapes = space.state_shapes(self.config(rate), self.task)
            if rate != 1.0:
                full = dict(self.full)
                if [k for k, _ in shapes] != [k for k, _ in self.full]:
                    raise ValueError(f"the width-{rate:g} network's state keys differ from "
                                     "the global model's")
                for key, shape in shapes:  # nested in the global model, axis by axis
                    nested_slices(full[key], shape)
            self._shapes[rate] = shapes
        return self._shapes[rate]

    def build(self, rate: float) -> ElasticNet[Any]:
        """A fresh width-``rate`` network (weights to be set from a slice)."""
        space = self.scaled_space(rate)
        return space.build_net(self.config(rate), self.task)

    def cost(self, rate: float, batch_size: int) -> Cost:
        """The width-``rate`` network's cost (training memory at ``batch_size``), as
        :meth:`Supernet.cost` counts any subnet's."""
        key = (rate, batch_size)
        if key not in self._costs:
            space = self.scaled_space(rate)
            with torch.device("meta"):
                net = Supernet(space, self.task)
            self._costs[key] = net.cost(space.max_arch(), batch_size=batch_size)
        return self._costs[key]

    def regions(self, rate: float, extraction: str = LEADING, server_round: int = 0
                ) -> list[Region]:
        """Where each array of the width-``rate`` slice sits in the global model's arrays
        (index in ``state_dict`` order, and the index tuple)."""
        if extraction not in EXTRACTIONS:
            raise ValueError(f"extraction must be {'|'.join(EXTRACTIONS)}, got {extraction!r}")
        out: list[Region] = []
        for i, ((_, full), (_, sub)) in enumerate(zip(self.full, self.shapes(rate),
                                                      strict=True)):
            if extraction == LEADING or tuple(full) == tuple(sub):
                out.append((i, nested_slices(full, sub)))
            else:
                out.append((i, rolling_index(full, sub, server_round)))
        return out

    def slice(self, arrays: Sequence[np.ndarray], rate: float, extraction: str = LEADING,
              server_round: int = 0) -> list[np.ndarray]:
        """The width-``rate`` slice of the global ``arrays`` (copies)."""
        return [np.array(arrays[i][where], copy=True)
                for i, where in self.regions(rate, extraction, server_round)]

    def slice_shapes(self, rate: float) -> list[tuple[int, ...]]:
        return [shape for _, shape in self.shapes(rate)]


def rolling_index(full: Sequence[int], sub: Sequence[int], server_round: int
                  ) -> tuple[Any, ...]:
    """FedRolex's window: on every axis the slice narrows, ``sub`` consecutive indices
    (cyclic) from ``server_round mod full``; other axes whole. An ``np.ix_`` index."""
    axes = []
    for f, s in zip(full, sub, strict=True):
        if not 0 < s <= f:
            raise ValueError(f"slice shape {tuple(sub)} does not fit in {tuple(full)}")
        start = server_round % f if s < f else 0
        axes.append((start + np.arange(s)) % f)
    return np.ix_(*axes)


def parameter_fraction(slicer: WidthSlicer, rate: float) -> dict[str, float]:
    """Each array's share of its global array's entries at ``rate`` (a check of the rule)."""
    return {key: math.prod(sub) / math.prod(full)
            for (key, full), (_, sub) in zip(slicer.full, slicer.shapes(rate), strict=True)
            if math.prod(full) > 0}
