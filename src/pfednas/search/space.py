"""The one supernet interface shared by every search space.

Once-for-All's verbs (Cai et al., ICLR'20), typed and without hidden state:

* a :class:`SearchSpace` knows its dimensions, samples / parses / encodes
  :class:`~pfednas.search.arch.Arch` values and builds networks;
* an :class:`ElasticNet` is a network built for one *configuration*; its
  ``forward`` may run any nested, smaller configuration on its own weights.
  The supernet is the network built for the largest architecture, an extracted
  subnet is the same class built for the subnet's configuration;
* the :class:`Supernet` wraps the largest network and offers ``forward(x, arch)``,
  ``regions`` / ``slice`` / ``scatter`` / ``extract`` / ``cost``.  All of them
  rely on :func:`~pfednas.search.ops.nested_slices`: a subnet tensor of shape
  ``s`` sits at ``nested_slices(S, s)`` of the supernet tensor of shape ``S``.

:class:`ElasticNet` and :class:`Supernet` are in :mod:`pfednas.search.supernet` (which also
states the canonical order of subnet arrays); caches: :mod:`pfednas.search.clone`; cost model:
:mod:`pfednas.search.cost_model`; :class:`TaskShape` and :data:`Region` (plain values of
:mod:`~pfednas.search.arch`) re-exported with them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from pfednas.search.arch import Arch, Dimension, Region, TaskShape
from pfednas.search.cost_model import traced_cost_terms
from pfednas.search.supernet import ElasticNet, Supernet

__all__ = ["ElasticNet", "Region", "SearchSpace", "Supernet", "TaskShape"]

_ISCLOSE = 1e-8 + 1e-5  # np.isclose(x, 1.0) is abs(x - 1.0) <= atol + rtol * 1.0


class SearchSpace(ABC):
    """Dimensions and choices of a space; samples, parses and encodes architectures."""

    name: ClassVar[str]
    dimensions: tuple[Dimension, ...]

    # -- architectures -------------------------------------------------------
    def arch_from_indices(self, indices: Sequence[int]) -> Arch:
        idx = tuple(int(i) for i in indices)
        if len(idx) != len(self.dimensions):
            raise ValueError(
                f"{self.name}: expected {len(self.dimensions)} indices, got {len(idx)}"
            )
        for i, dim in zip(idx, self.dimensions, strict=True):
            if not 0 <= i < len(dim.choices):
                raise ValueError(
                    f"{self.name}: index {i} out of range for {dim.name} {dim.choices}"
                )
        return Arch(self.name, idx, self.format_body(idx))

    def arch_from_str(self, text: str) -> Arch:
        """Parse ``"<space>:<body>"`` (the grammar is in the space's class docstring)."""
        name, _, body = text.partition(":")
        if name != self.name:
            raise ValueError(f"architecture string {text!r} is not of space {self.name!r}")
        return self.arch_from_indices(self.parse_body(body))

    def max_arch(self) -> Arch:
        return self.arch_from_indices([len(d.choices) - 1 for d in self.dimensions])

    def min_arch(self) -> Arch:
        return self.arch_from_indices([0] * len(self.dimensions))

    def sample(self, rng: np.random.Generator, probs: Sequence[np.ndarray] | None = None) -> Arch:
        """Sample an architecture: uniformly, or one categorical per dimension (``probs[d]``).

        With ``probs``, dimension ``d`` takes ``rng.choice(len(choices), p=probs[d])``;
        the draws are made exactly as ``Generator.choice`` makes them (one
        ``rng.random()`` per dimension, inverse CDF), but in one call, so a
        seed gives the same architectures as per-dimension ``choice`` calls.
        """
        if probs is None:
            return self.arch_from_indices(
                [int(rng.integers(len(d.choices))) for d in self.dimensions]
            )
        if len(probs) != len(self.dimensions):
            raise ValueError(
                f"{self.name}: expected {len(self.dimensions)} distributions, got {len(probs)}"
            )
        cdfs = []
        for p, dim in zip(probs, self.dimensions, strict=True):
            p = np.asarray(p, dtype=np.float64)
            total = float(p.sum())
            # ``abs(total - 1) <= 1e-8 + 1e-5`` is ``np.isclose(total, 1.0)`` (NaN fails it)
            if p.shape != (len(dim.choices),) or (p < 0).any() or not abs(total - 1.0) <= _ISCLOSE:
                raise ValueError(f"{self.name}: bad distribution for {dim.name}: {p}")
            cdf = (p / total).cumsum()  # Generator.choice(n, p=p / p.sum()), step by step
            cdf /= cdf[-1]
            cdfs.append(cdf)
        uniforms = rng.random(len(cdfs))  # the same stream as one rng.random() per dimension
        return self.arch_from_indices(
            [int(cdf.searchsorted(u, side="right")) for cdf, u in zip(cdfs, uniforms, strict=True)]
        )

    def values(self, arch: Arch) -> dict[str, Any]:
        """Chosen value of every dimension, by dimension name."""
        self.check(arch)
        return {d.name: d.choices[i] for d, i in zip(self.dimensions, arch.indices, strict=True)}

    def check(self, arch: Arch) -> None:
        if arch.space != self.name or len(arch.indices) != len(self.dimensions):
            raise ValueError(f"{arch!r} is not an architecture of space {self.name!r}")

    def encode(self, arch: Arch) -> np.ndarray:
        """Fixed-length float encoding (numeric choices as values, others one-hot)."""
        self.check(arch)
        parts: list[float] = []
        for d, i in zip(self.dimensions, arch.indices, strict=True):
            if all(isinstance(c, int | float) for c in d.choices):
                parts.append(float(d.choices[i]))  # type: ignore[arg-type]
            else:
                parts.extend(float(j == i) for j in range(len(d.choices)))
        return np.asarray(parts, dtype=np.float64)

    @abstractmethod
    def format_body(self, indices: tuple[int, ...]) -> str:
        """The string body (after ``"<space>:"``) of an architecture."""

    @abstractmethod
    def parse_body(self, body: str) -> tuple[int, ...]:
        """Inverse of :meth:`format_body`."""

    # -- networks ------------------------------------------------------------
    @abstractmethod
    def net_config(self, arch: Arch, task: TaskShape) -> Any:
        """The concrete network configuration of an architecture."""

    @abstractmethod
    def build_net(self, config: Any, task: TaskShape) -> ElasticNet[Any]:
        """A network built for ``config`` (the supernet when ``config`` is the largest)."""

    def state_shapes(self, config: Any, task: TaskShape) -> list[tuple[str, tuple[int, ...]]]:
        """(key, shape) of ``build_net(config, task).state_dict()``, in order.

        This default builds the network on the ``meta`` device (exact, but a
        few milliseconds per call); spaces override it with a closed form,
        which the test suite checks against this default for random archs.
        """
        with torch.device("meta"):
            net = self.build_net(config, task)
        return [(k, tuple(v.shape)) for k, v in net.state_dict().items()]

    @torch.no_grad()
    def forward_cost(self, config: Any, task: TaskShape, batch_size: int = 1) -> tuple[int, int]:
        """(MACs, activation elements) of one forward pass of ``build_net(config, task)``.

        The counting rule is :func:`~pfednas.search.cost_model.module_cost_terms`
        summed over every module call of a forward pass over ``batch_size``
        inputs, in eval mode.  This
        default runs that forward pass on the ``meta`` device with hooks
        (exact, but 0.1–0.5 s per call); spaces override it with a closed form,
        which the test suite checks against this default for random archs and
        several task shapes.  Every term is linear in ``batch_size``.
        """
        with torch.device("meta"):
            net = self.build_net(config, task)
        terms = traced_cost_terms(net, task, batch_size)
        return sum(t[1] for t in terms), sum(t[2] for t in terms)

    def _derive_template(self, config: Any, task: TaskShape, training: bool) -> Any:
        """Optional shortcut for :meth:`Supernet.extract`: a fresh ``meta`` network of ``config``.

        Returns :meth:`ClonePlan.clone`'s (network, slots), in mode
        ``training``, for a space whose subnets are its full network minus
        whole modules (``darts_s2``): much faster than :meth:`build_net`.
        ``None`` (this default) means no shortcut (``extract`` then clones a
        memoised ``build_net`` template of the configuration).
        """
        return None

    def build_supernet(self, *, num_classes: int, in_channels: int, image_size: int) -> Supernet:
        return Supernet(self, TaskShape(num_classes, in_channels, image_size))
