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

A space builds its supernet and the supernet asks its space for configurations, networks
and shapes, so the two classes share this module.  Canonical order of subnet arrays: the
extracted network's ``state_dict()`` order (parameters and buffers, BatchNorm statistics
included), so a client can ``load_state_dict(dict(zip(keys, arrays)))``.  Caches:
:mod:`pfednas.search.clone`; cost model: :mod:`pfednas.search.cost_model`;
:class:`TaskShape` and :data:`Region` (plain values of :mod:`~pfednas.search.arch`)
re-exported with them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, ClassVar, Generic, TypeVar, cast

import numpy as np
import torch
from torch import Tensor, nn

from pfednas.search.arch import Arch, Cost, Dimension, Region, TaskShape
from pfednas.search.clone import Slot, StateSlot, SupernetCache, fill_slots
from pfednas.search.cost_model import reference_cost, traced_cost_terms, training_cost
from pfednas.search.layers import Plan, plan_cost, plan_shapes

__all__ = ["ElasticNet", "Region", "SearchSpace", "Supernet", "TaskShape"]

ConfigT = TypeVar("ConfigT")


class ElasticNet(nn.Module, ABC, Generic[ConfigT]):
    """A network built for one configuration that can also run nested smaller ones.

    ``forward(x)`` runs the configuration it was built for; ``forward(x, config)``
    runs a nested one (for the DARTS space: a sub-mask, as SPIDER's
    perturbation search needs).
    """

    config: ConfigT

    def forward(self, x: Tensor, config: ConfigT | None = None) -> Tensor:
        return self.forward_config(x, self.config if config is None else config)

    @abstractmethod
    def forward_config(self, x: Tensor, config: ConfigT) -> Tensor:
        """Forward pass of configuration ``config``."""

    @abstractmethod
    def head_parameter_names(self) -> list[str]:
        """Names (as in ``named_parameters``) of the classifier head, for FedRep / FedBABU."""

    def split_body_head(self) -> tuple[list[str], list[str]]:
        """Parameter names of the body and of the head."""
        head = set(self.head_parameter_names())
        names = [n for n, _ in self.named_parameters()]
        return [n for n in names if n not in head], [n for n in names if n in head]


_ISCLOSE = 1e-8 + 1e-5  # np.isclose(x, 1.0) is abs(x - 1.0) <= atol + rtol * 1.0


class SearchSpace(ABC):
    """Dimensions and choices of a space; samples, parses and encodes architectures."""

    name: ClassVar[str]
    # whether an architecture whose every index is <= another's is a subnet nested in it,
    # runnable on the other's network (``ElasticNet.forward(x, config)``): what in-place
    # distillation trains (:mod:`pfednas.nas.sandwich`)
    nests_by_index: ClassVar[bool] = False
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

    def net_plan(self, config: Any, task: TaskShape) -> Plan | None:
        """The network's plan (:mod:`pfednas.search.layers`), the one description that builds
        it and gives its shapes and costs; None (this default): the space has none, and
        both are derived from a ``meta`` build."""
        return None

    def input_side(self, config: Any, task: TaskShape) -> int:
        """The side of the input the network's first layer sees (a space that resizes its
        input, like ``mobilenetv3``'s elastic resolution, says so)."""
        return task.image_size

    def state_shapes(self, config: Any, task: TaskShape) -> list[tuple[str, tuple[int, ...]]]:
        """(key, shape) of ``build_net(config, task).state_dict()``, in order.

        From the network's plan where the space has one (microseconds); else built on the
        ``meta`` device (exact, but a few milliseconds per call). The test suite checks the
        plan against the ``meta`` build for random archs.
        """
        plan = self.net_plan(config, task)
        if plan is not None:
            return plan_shapes(plan)
        with torch.device("meta"):
            net = self.build_net(config, task)
        return [(k, tuple(v.shape)) for k, v in net.state_dict().items()]

    @torch.no_grad()
    def forward_cost(self, config: Any, task: TaskShape, batch_size: int = 1) -> tuple[int, int]:
        """(MACs, activation elements) of one forward pass of ``build_net(config, task)``.

        The counting rule is :func:`~pfednas.search.cost_model.module_cost_terms`
        summed over every module call of a forward pass over ``batch_size``
        inputs, in eval mode. From the network's plan where the space has one; else that
        forward pass runs on the ``meta`` device with hooks (exact, but 0.1–0.5 s per
        call). The test suite checks the plan against the traced pass for random archs
        and several task shapes. Every term is linear in ``batch_size``.
        """
        plan = self.net_plan(config, task)
        if plan is not None:
            macs, act = plan_cost(plan, self.input_side(config, task))
            return macs * batch_size, act * batch_size
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


class Supernet(nn.Module):
    """The largest network of a space, and the verbs that move subnets in and out of it.

    ``regions``, ``cost`` and the structure of ``extract`` are memoised per
    architecture / configuration (bounded LRU); ``slice`` and ``extract`` read
    the weights through cached ``numpy`` views of the state tensors (CPU only;
    other devices take the plain ``torch`` path).
    """

    def __init__(self, space: SearchSpace, task: TaskShape) -> None:
        super().__init__()
        self.space, self.task = space, task
        self.net = space.build_net(space.net_config(space.max_arch(), task), task)
        state = self.net.state_dict(keep_vars=True)
        self._keys = list(state.keys())
        self._key_index = {k: i for i, k in enumerate(self._keys)}
        self._shapes = [tuple(t.shape) for t in state.values()]
        self._owners = [self.net.get_submodule(k.rpartition(".")[0]) for k in self._keys]
        self._attrs = [k.rpartition(".")[2] for k in self._keys]
        self._slots: list[StateSlot] = [
            (m._parameters if a in m._parameters else m._buffers, a)
            for m, a in zip(self._owners, self._attrs, strict=True)
        ]
        params = {name for name, _ in self.net.named_parameters()}
        self._is_param = [k in params for k in self._keys]
        self._itemsize = [t.element_size() for t in state.values()]
        self._cache = SupernetCache()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_cache"] = SupernetCache()  # memos and numpy views are not part of the value
        return state

    def forward(self, x: Tensor, arch: Arch) -> Tensor:  # type: ignore[override]
        return self.net(x, self.config(arch))

    def config(self, arch: Arch) -> Any:
        self.space.check(arch)
        return self.space.net_config(arch, self.task)

    # -- full state ------------------------------------------------------------
    def state_keys(self) -> list[str]:
        return list(self._keys)

    def _state(self) -> list[Tensor]:
        """The supernet's state tensors in ``state_dict`` order (fast: no module traversal)."""
        return [d[a].detach() for d, a in self._slots]

    def _arrays(self) -> list[np.ndarray] | None:
        """``numpy`` views of the state tensors (shared memory), or None off the CPU."""
        return self._cache.arrays([d[a] for d, a in self._slots])

    def state_arrays(self) -> list[np.ndarray]:
        arrays = self._arrays()
        if arrays is None:
            return [t.cpu().numpy().copy() for t in self._state()]
        return [a.copy() for a in arrays]

    @torch.no_grad()
    def load_state_arrays(self, arrays: Sequence[np.ndarray]) -> None:
        state = self._state()
        if len(arrays) != len(state):
            raise ValueError(f"expected {len(state)} arrays, got {len(arrays)}")
        for key, t, a in zip(self._keys, state, arrays, strict=True):
            if tuple(a.shape) != tuple(t.shape):
                raise ValueError(f"{key}: shape {a.shape} != {tuple(t.shape)}")
            t.copy_(torch.as_tensor(a, dtype=t.dtype))

    # -- subnets -------------------------------------------------------------
    def template(self, arch: Arch) -> ElasticNet[Any]:
        """The subnet's network on the ``meta`` device: structure and shapes, no memory."""
        with torch.device("meta"):
            return self.space.build_net(self.config(arch), self.task)

    def regions(self, arch: Arch) -> list[Region]:
        """For each subnet state tensor, in canonical order: (supernet index, slices)."""
        return list(self._region_table(arch))

    def _region_table(self, arch: Arch) -> tuple[Region, ...]:
        table = self._cache.regions.get(arch)
        if table is None:
            shapes = self.space.state_shapes(self.config(arch), self.task)
            table = self._cache.regions.put(arch, tuple(self._regions(shapes)))
        return table

    def _regions(self, shapes: Sequence[tuple[str, Sequence[int]]]) -> list[Region]:
        index = [self._key_index[key] for key, _ in shapes]
        return [self._cache.region(i, self._shapes[i], tuple(shape))
                for i, (_, shape) in zip(index, shapes, strict=True)]

    def slice(self, arch: Arch) -> list[np.ndarray]:
        """The subnet's arrays (parameters and buffers) in canonical order, as copies."""
        regions, arrays = self._region_table(arch), self._arrays()
        if arrays is None:
            state = self._state()
            return [state[i][s].cpu().numpy().copy() for i, s in regions]
        # ``a[()]`` of a 0-d array is a numpy scalar, hence ``a.copy()`` for 0-d tensors
        return [arrays[i][s].copy() if s else arrays[i].copy() for i, s in regions]

    @torch.no_grad()
    def scatter(self, arch: Arch, arrays: Sequence[np.ndarray]) -> None:
        """Write subnet arrays back to their supernet positions (the inverse of ``slice``)."""
        regions = self._region_table(arch)
        if len(arrays) != len(regions):
            raise ValueError(f"expected {len(regions)} arrays, got {len(arrays)}")
        for (i, s), a in zip(regions, arrays, strict=True):
            d, name = self._slots[i]
            target = d[name].detach()[s]
            if tuple(a.shape) != tuple(target.shape):
                raise ValueError(f"{self._keys[i]}: shape {a.shape} != {tuple(target.shape)}")
            target.copy_(torch.as_tensor(a, dtype=target.dtype))

    def extract(self, arch: Arch) -> ElasticNet[Any]:
        """A standalone network of ``arch`` holding copies of the supernet's weights.

        The module tree is a :class:`~pfednas.search.clone.ClonePlan` copy of a memoised ``meta``
        template of the configuration (or the space's ``_derive_template``);
        the weights are copied in directly, as ``load_state_dict(assign=True)``
        would, without its traversal.
        """
        config = self.config(arch)
        regions, arrays = self._region_table(arch), self._arrays()
        fresh = None if arrays is None else self._fresh_template(config)
        if fresh is None or arrays is None or len(fresh[1]) != len(regions):
            return self._extract_by_loading(arch)
        sub, slots = fresh
        fill_slots(slots, regions, arrays)
        return cast(ElasticNet[Any], sub)

    def _fresh_template(self, config: Any) -> tuple[nn.Module, list[Slot]] | None:
        """A new ``meta`` module tree of ``config`` in this supernet's mode, and its slots.

        None when there is no fast path (``extract`` then builds and loads).
        """
        derived = self.space._derive_template(config, self.task, self.training)
        if derived is not None:
            return cast(tuple[nn.Module, list[Slot]], derived)

        def build() -> tuple[nn.Module, list[str]]:
            with torch.device("meta"):
                template = self.space.build_net(config, self.task)
            return template, [k for k, _ in self.space.state_shapes(config, self.task)]

        plan = self._cache.template_plan(config, build)
        return None if plan is None else plan.clone(training=self.training)

    def _extract_by_loading(self, arch: Arch) -> ElasticNet[Any]:
        """``extract`` the plain way (any device): build on ``meta``, ``load_state_dict``."""
        sub = self.template(arch)
        state = self._state()
        shapes = [(k, tuple(v.shape)) for k, v in sub.state_dict().items()]
        tensors = [state[i][s].clone() for i, s in self._regions(shapes)]
        sub.load_state_dict(
            OrderedDict(zip((k for k, _ in shapes), tensors, strict=True)), assign=True
        )
        return sub.train(self.training)

    def cost(self, arch: Arch, *, batch_size: int = 1, optimizer_states: int = 1) -> Cost:
        """Parameters, MACs, activation and training memory of ``arch``.

        From the space's ``state_shapes`` and ``forward_cost`` (its network's plan),
        memoised per architecture: microseconds instead of a ``meta`` forward
        pass.  :meth:`_reference_cost` is the forward-pass definition it equals
        (checked by the tests).
        """
        if batch_size < 0:
            raise ValueError(f"batch_size must be >= 0, got {batch_size}")
        terms = self._cache.costs.get(arch)
        if terms is None:
            config = self.config(arch)
            params = payload = 0
            for key, shape in self.space.state_shapes(config, self.task):
                i, n = self._key_index[key], math.prod(shape)
                params += n if self._is_param[i] else 0
                payload += n * self._itemsize[i]
            macs, act = self.space.forward_cost(config, self.task)
            terms = self._cache.costs.put(arch, (params, payload, macs, act))
        params, payload, macs, act = terms
        return training_cost(
            params=params,
            payload_bytes=payload,
            macs=macs * batch_size,
            activations=act * batch_size,
            optimizer_states=optimizer_states,
        )

    def _reference_cost(
        self, arch: Arch, *, batch_size: int = 1, optimizer_states: int = 1
    ) -> Cost:
        """:meth:`cost` by definition: a hooked forward pass of the subnet on ``meta`` (slow)."""
        return reference_cost(
            self.template(arch), self.task, batch_size=batch_size,
            optimizer_states=optimizer_states,
        )
