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

Canonical order of subnet arrays: the extracted network's ``state_dict()``
order (parameters and buffers, BatchNorm statistics included), so a client
can ``load_state_dict(dict(zip(keys, arrays)))``.
"""

from __future__ import annotations

import contextlib
import math
import operator
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar, cast

import numpy as np
import torch
from torch import Tensor, nn

from pfednas.search.arch import Arch, Cost, Dimension
from pfednas.search.ops import nested_slices

Region = tuple[int, tuple[slice, ...]]
"""(index of a supernet state tensor, where the subnet's tensor sits in it)."""

ConfigT = TypeVar("ConfigT")
K = TypeVar("K")
V = TypeVar("V")

_ISCLOSE = 1e-8 + 1e-5  # np.isclose(x, 1.0) is abs(x - 1.0) <= atol + rtol * 1.0


@dataclass(frozen=True)
class TaskShape:
    """What a network is built for: classes, input channels, input side in pixels."""

    num_classes: int
    in_channels: int
    image_size: int


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

        The counting rule is :func:`module_cost_terms` summed over every module
        call of a forward pass over ``batch_size`` inputs, in eval mode.  This
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


Slot = tuple[dict[str, Any], str, bool | None]
"""Where one state tensor lives: (its module's ``_parameters`` or ``_buffers`` dict, its
name, ``requires_grad`` for a parameter or None for a buffer)."""

StateSlot = tuple[dict[str, Any], str]
"""Where one of the supernet's state tensors lives: (its module's ``_parameters`` or
``_buffers`` dict, its name)."""

_CONTAINERS = (dict, OrderedDict, set, list)


class ClonePlan:
    """A recipe to copy one module tree quickly, without running any constructor.

    ``ClonePlan.of(template)`` records, per module, its class, its attribute
    dict and which attributes are containers; :meth:`clone` then makes new
    module objects with fresh copies of those containers (parameters,
    buffers, children, hooks) and the template's immutable attributes.  The
    parameter and buffer *tensors* stay the template's, to be replaced by the
    caller through the returned slots (in ``state_dict`` order).  About 10×
    faster than building the tree (``nn.Module.__init__`` / ``__setattr__``
    dominate construction) and than ``copy.deepcopy``.
    """

    __slots__ = ("buffers", "children", "cls", "containers", "params", "state")

    def __init__(self, module: nn.Module) -> None:
        self.cls, self.state = type(module), module.__dict__
        self.containers = tuple(
            k for k, v in self.state.items() if type(v) in _CONTAINERS and k != "_modules"
        )
        self.params = tuple(
            (n, p.requires_grad) for n, p in module._parameters.items() if p is not None
        )
        self.buffers = tuple(n for n, b in module._buffers.items() if b is not None)
        self.children = tuple(
            (n, None if c is None else ClonePlan(c)) for n, c in module._modules.items()
        )

    @classmethod
    def of(cls, template: nn.Module) -> ClonePlan | None:
        """The plan of ``template``, or None when a copy could differ from a new build.

        Refused: non-persistent buffers (not in ``state_dict``, so never
        replaced), tensors held as plain attributes, and modules overriding
        ``train`` (the copy sets ``training`` directly).
        """
        for m in template.modules():
            if (
                m._non_persistent_buffers_set
                or type(m).train is not nn.Module.train
                or any(isinstance(v, Tensor) for v in vars(m).values())
            ):
                return None
        return cls(template)

    def keys(self, prefix: str = "") -> list[str]:
        """State keys in slot order (that is, ``state_dict`` order)."""
        out = [prefix + n for n, _ in self.params] + [prefix + n for n in self.buffers]
        for name, child in self.children:
            if child is not None:
                out += child.keys(f"{prefix}{name}.")
        return out

    def clone(
        self, *, skip: frozenset[str] = frozenset(), training: bool = True
    ) -> tuple[nn.Module, list[Slot]]:
        """A new module tree (``training`` mode set), without the submodules at paths ``skip``."""
        slots: list[Slot] = []
        return self._clone(skip, "", slots, training), slots

    def _clone(
        self, skip: frozenset[str], path: str, slots: list[Slot], training: bool
    ) -> nn.Module:
        new = self.cls.__new__(self.cls)
        state = self.state.copy()
        for k in self.containers:
            state[k] = state[k].copy()
        state["training"] = training
        params, buffers = state["_parameters"], state["_buffers"]
        slots.extend((params, n, grad) for n, grad in self.params)
        slots.extend((buffers, n, None) for n in self.buffers)
        children: dict[str, nn.Module | None] = {}
        for name, child in self.children:
            child_path = f"{path}.{name}" if path else name
            if skip and child_path in skip:
                continue
            children[name] = (
                None if child is None else child._clone(skip, child_path, slots, training)
            )
        state["_modules"] = children
        object.__setattr__(new, "__dict__", state)
        return new


class _LRU(Generic[K, V]):
    """A small least-recently-used memo (for pure functions of an arch or a config)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self.data.get(key)
        if value is not None:
            with contextlib.suppress(KeyError):  # evicted meanwhile by another thread
                self.data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> V:
        self.data[key] = value
        self.data.move_to_end(key)
        while len(self.data) > self.maxsize:
            self.data.popitem(last=False)
        return value


class _SupernetCache:
    """Memos of a :class:`Supernet`; all are pure functions of their keys except the mirror.

    The mirror holds ``numpy`` views of the supernet's state tensors; it is
    revalidated on every use (same tensor objects, same data pointers), so
    reassigned parameters, ``load_state_dict(assign=True)`` or ``.to(...)``
    rebuild it, and non-CPU tensors disable it.
    """

    def __init__(self) -> None:
        self.regions: _LRU[Arch, tuple[Region, ...]] = _LRU(256)
        self.region_of: dict[tuple[int, tuple[int, ...]], Region] = {}
        self.costs: _LRU[Arch, tuple[int, int, int, int]] = _LRU(65536)
        self.templates: _LRU[Any, tuple[ClonePlan | None]] = _LRU(32)
        # (tensors, their data pointers, numpy views or None), replaced as one value
        self.mirror: tuple[list[Tensor], list[int], list[np.ndarray] | None] | None = None


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
        self._cache = _SupernetCache()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_cache"] = _SupernetCache()  # memos and numpy views are not part of the value
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
        tensors, mirror = [d[a] for d, a in self._slots], self._cache.mirror
        if (
            mirror is not None
            and all(map(operator.is_, tensors, mirror[0]))
            and list(map(Tensor.data_ptr, tensors)) == mirror[1]
        ):
            return mirror[2]
        pointers = [t.data_ptr() for t in tensors]
        try:
            arrays: list[np.ndarray] | None = [t.detach().numpy() for t in tensors]
        except (RuntimeError, TypeError):  # not on the CPU, or a dtype numpy lacks
            arrays = None
        self._cache.mirror = (tensors, pointers, arrays)
        return arrays

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
        memo, out = self._cache.region_of, []
        for key, shape in shapes:
            i = self._key_index[key]
            region = memo.get((i, tuple(shape)))
            if region is None:
                region = memo[(i, tuple(shape))] = (i, nested_slices(self._shapes[i], shape))
            out.append(region)
        return out

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

        The module tree is a :func:`clone_modules` copy of a memoised ``meta``
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
        for (d, name, grad), (i, s) in zip(slots, regions, strict=True):
            value = torch.from_numpy(arrays[i][s].copy() if s else arrays[i].copy())
            d[name] = value if grad is None else nn.Parameter(value, grad)
        return cast(ElasticNet[Any], sub)

    def _fresh_template(self, config: Any) -> tuple[nn.Module, list[Slot]] | None:
        """A new ``meta`` module tree of ``config`` in this supernet's mode, and its slots.

        None when there is no fast path (``extract`` then builds and loads).
        """
        derived = self.space._derive_template(config, self.task, self.training)
        if derived is not None:
            return cast(tuple[nn.Module, list[Slot]], derived)
        try:
            entry = self._cache.templates.get(config)
        except TypeError:  # an unhashable configuration: no memo
            return None
        if entry is None:
            with torch.device("meta"):
                plan = ClonePlan.of(self.space.build_net(config, self.task))
            shapes = self.space.state_shapes(config, self.task)
            if plan is not None and plan.keys() != [k for k, _ in shapes]:
                plan = None
            entry = self._cache.templates.put(config, (plan,))
        plan = entry[0]
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

        Closed form (``state_shapes`` and the space's ``forward_cost``),
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
        activation_bytes = 4 * act * batch_size
        return Cost(
            params=params,
            flops=macs * batch_size,
            activation_bytes=activation_bytes,
            memory_bytes=4 * params * (2 + optimizer_states) + activation_bytes,
            payload_bytes=payload,
        )

    @torch.no_grad()
    def _reference_cost(
        self, arch: Arch, *, batch_size: int = 1, optimizer_states: int = 1
    ) -> Cost:
        """:meth:`cost` by definition: a hooked forward pass of the subnet on ``meta`` (slow)."""
        sub = self.template(arch).eval()
        totals = [0, 0]

        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            macs, act = _cost_terms(module, inputs, output)
            totals[0] += macs
            totals[1] += act

        handles = [m.register_forward_hook(hook) for m in sub.modules()]
        t = self.task
        sub(torch.empty(batch_size, t.in_channels, t.image_size, t.image_size, device="meta"))
        for h in handles:
            h.remove()
        params = sum(p.numel() for p in sub.parameters())
        payload = sum(v.numel() * v.element_size() for v in sub.state_dict().values())
        activation_bytes = 4 * totals[1]
        return Cost(
            params=params,
            flops=totals[0],
            activation_bytes=activation_bytes,
            memory_bytes=4 * params * (2 + optimizer_states) + activation_bytes,
            payload_bytes=payload,
        )


@torch.no_grad()
def traced_cost_terms(
    net: nn.Module, task: TaskShape, batch_size: int = 1
) -> list[tuple[str, int, int]]:
    """(module name, MACs, activation elements) of every module call of a ``meta`` forward pass.

    ``net`` (built on ``meta``) is put in eval mode; the counting rule per
    module is the one of :meth:`Supernet.cost`.
    """
    terms: list[tuple[str, int, int]] = []

    def hook_for(name: str) -> Any:
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            terms.append((name, *_cost_terms(module, inputs, output)))

        return hook

    net.eval()
    handles = [m.register_forward_hook(hook_for(n)) for n, m in net.named_modules()]
    try:
        net(
            torch.empty(
                batch_size, task.in_channels, task.image_size, task.image_size, device="meta"
            )
        )
    finally:
        for h in handles:
            h.remove()
    return terms


def _cost_terms(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> tuple[int, int]:
    """(MACs, activation elements) one module adds; leaf outputs count as activations."""
    terms = getattr(module, "cost_terms", None)
    if terms is not None:
        return terms(inputs, output)  # type: ignore[no-any-return]
    if not isinstance(output, Tensor) or any(True for _ in module.children()):
        return 0, 0
    if isinstance(module, nn.Conv2d):
        return output.numel() * module.weight[0].numel(), output.numel()
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features, output.numel()
    return 0, output.numel()
