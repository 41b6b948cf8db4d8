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

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from pfednas.search.arch import Arch, Cost, Dimension
from pfednas.search.ops import nested_slices

Region = tuple[int, tuple[slice, ...]]
"""(index of a supernet state tensor, where the subnet's tensor sits in it)."""

ConfigT = TypeVar("ConfigT")


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
        """Sample an architecture: uniformly, or one categorical per dimension (``probs[d]``)."""
        if probs is None:
            return self.arch_from_indices(
                [int(rng.integers(len(d.choices))) for d in self.dimensions]
            )
        if len(probs) != len(self.dimensions):
            raise ValueError(
                f"{self.name}: expected {len(self.dimensions)} distributions, got {len(probs)}"
            )
        indices = []
        for p, dim in zip(probs, self.dimensions, strict=True):
            p = np.asarray(p, dtype=np.float64)
            if p.shape != (len(dim.choices),) or np.any(p < 0) or not np.isclose(p.sum(), 1.0):
                raise ValueError(f"{self.name}: bad distribution for {dim.name}: {p}")
            indices.append(int(rng.choice(len(dim.choices), p=p / p.sum())))
        return self.arch_from_indices(indices)

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

    def build_supernet(self, *, num_classes: int, in_channels: int, image_size: int) -> Supernet:
        return Supernet(self, TaskShape(num_classes, in_channels, image_size))


class Supernet(nn.Module):
    """The largest network of a space, and the verbs that move subnets in and out of it."""

    def __init__(self, space: SearchSpace, task: TaskShape) -> None:
        super().__init__()
        self.space, self.task = space, task
        self.net = space.build_net(space.net_config(space.max_arch(), task), task)
        self._keys = list(self.net.state_dict().keys())
        self._key_index = {k: i for i, k in enumerate(self._keys)}
        self._shapes = [tuple(t.shape) for t in self.net.state_dict().values()]
        self._owners = [self.net.get_submodule(k.rpartition(".")[0]) for k in self._keys]
        self._attrs = [k.rpartition(".")[2] for k in self._keys]

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
        return [getattr(m, a).detach() for m, a in zip(self._owners, self._attrs, strict=True)]

    def state_arrays(self) -> list[np.ndarray]:
        return [t.cpu().numpy().copy() for t in self._state()]

    @torch.no_grad()
    def load_state_arrays(self, arrays: Sequence[np.ndarray]) -> None:
        state = self.net.state_dict()
        if len(arrays) != len(state):
            raise ValueError(f"expected {len(state)} arrays, got {len(arrays)}")
        for (key, t), a in zip(state.items(), arrays, strict=True):
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
        return self._regions(self.space.state_shapes(self.config(arch), self.task))

    def _regions(self, shapes: Sequence[tuple[str, Sequence[int]]]) -> list[Region]:
        out: list[Region] = []
        for key, shape in shapes:
            i = self._key_index[key]
            out.append((i, nested_slices(self._shapes[i], shape)))
        return out

    def slice(self, arch: Arch) -> list[np.ndarray]:
        """The subnet's arrays (parameters and buffers) in canonical order, as copies."""
        state = self._state()
        return [state[i][s].cpu().numpy().copy() for i, s in self.regions(arch)]

    @torch.no_grad()
    def scatter(self, arch: Arch, arrays: Sequence[np.ndarray]) -> None:
        """Write subnet arrays back to their supernet positions (the inverse of ``slice``)."""
        state = self._state()
        regions = self.regions(arch)
        if len(arrays) != len(regions):
            raise ValueError(f"expected {len(regions)} arrays, got {len(arrays)}")
        for (i, s), a in zip(regions, arrays, strict=True):
            target = state[i][s]
            if tuple(a.shape) != tuple(target.shape):
                raise ValueError(f"{self._keys[i]}: shape {a.shape} != {tuple(target.shape)}")
            target.copy_(torch.as_tensor(a, dtype=target.dtype))

    def extract(self, arch: Arch) -> ElasticNet[Any]:
        """A standalone network of ``arch`` holding copies of the supernet's weights."""
        sub = self.template(arch)
        state = self._state()
        shapes = [(k, tuple(v.shape)) for k, v in sub.state_dict().items()]
        tensors = [state[i][s].clone() for i, s in self._regions(shapes)]
        sub.load_state_dict(
            OrderedDict(zip((k for k, _ in shapes), tensors, strict=True)), assign=True
        )
        return sub.train(self.training)

    @torch.no_grad()
    def cost(self, arch: Arch, *, batch_size: int = 1, optimizer_states: int = 1) -> Cost:
        """Parameters, MACs, activation and training memory of ``arch`` (on ``meta``)."""
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
