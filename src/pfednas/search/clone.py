"""The caches behind :class:`~pfednas.search.space.Supernet`: fast module-tree copies and memos.

* :class:`ClonePlan` copies a ``meta`` template of a subnet without running any
  constructor, so that ``Supernet.extract`` only has to put the weights in;
* :class:`LRU` bounds the memos of pure functions of an architecture or a configuration;
* :class:`SupernetCache` holds one supernet's memos and its ``numpy`` mirror of
  the state tensors (revalidated on every use).
"""

from __future__ import annotations

import contextlib
import operator
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from pfednas.search.arch import Arch, Region
from pfednas.search.ops import nested_slices

K = TypeVar("K")
V = TypeVar("V")

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

    @classmethod
    def matching(cls, template: nn.Module, keys: Sequence[str]) -> ClonePlan | None:
        """:meth:`of` ``template``, or None unless its slots come in the order ``keys``."""
        plan = cls.of(template)
        return plan if plan is not None and plan.keys() == list(keys) else None

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


def fill_slots(
    slots: Sequence[Slot], regions: Sequence[Region], arrays: Sequence[np.ndarray]
) -> None:
    """Put a copy of each region of ``arrays`` into its slot, as ``load_state_dict(assign=True)``
    would without its traversal (a parameter's slot gets an ``nn.Parameter``)."""
    for (d, name, grad), (i, s) in zip(slots, regions, strict=True):
        value = torch.from_numpy(arrays[i][s].copy() if s else arrays[i].copy())
        d[name] = value if grad is None else nn.Parameter(value, grad)


class LRU(Generic[K, V]):
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


class SupernetCache:
    """Memos of a :class:`~pfednas.search.space.Supernet`; all are pure functions of their
    keys except the mirror.

    The mirror holds ``numpy`` views of the supernet's state tensors; it is
    revalidated on every use (same tensor objects, same data pointers), so
    reassigned parameters, ``load_state_dict(assign=True)`` or ``.to(...)``
    rebuild it, and non-CPU tensors disable it.
    """

    def __init__(self) -> None:
        self.regions: LRU[Arch, tuple[Region, ...]] = LRU(256)
        self.region_of: dict[tuple[int, tuple[int, ...]], Region] = {}
        self.costs: LRU[Arch, tuple[int, int, int, int]] = LRU(65536)
        self.templates: LRU[Any, tuple[ClonePlan | None]] = LRU(32)
        # (tensors, their data pointers, numpy views or None), replaced as one value
        self.mirror: tuple[list[Tensor], list[int], list[np.ndarray] | None] | None = None

    def region(self, index: int, full: tuple[int, ...], shape: tuple[int, ...]) -> Region:
        """Where a tensor of ``shape`` sits in supernet tensor ``index`` (of shape ``full``)."""
        region = self.region_of.get((index, shape))
        if region is None:
            region = self.region_of[(index, shape)] = (index, nested_slices(full, shape))
        return region

    def template_plan(
        self, config: Any, build: Callable[[], tuple[nn.Module, list[str]]]
    ) -> ClonePlan | None:
        """The memoised plan of ``config``'s template; ``build()`` gives the template and its
        state keys.  None for an unhashable configuration or a refused template."""
        try:
            entry = self.templates.get(config)
        except TypeError:  # an unhashable configuration: no memo
            return None
        if entry is None:
            entry = self.templates.put(config, (ClonePlan.matching(*build()),))
        return entry[0]

    def arrays(self, tensors: list[Tensor]) -> list[np.ndarray] | None:
        """``numpy`` views of ``tensors`` (shared memory), or None off the CPU."""
        mirror = self.mirror
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
        self.mirror = (tensors, pointers, arrays)
        return arrays
