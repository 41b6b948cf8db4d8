"""Body / head split of a network, and training one part with the other frozen.

FedRep (Collins et al., ICML'21) and FedBABU (Oh et al., ICLR'22) share a
representation (the *body*) and treat the classifier (the *head*) differently.
Which parameters form the head is the network's own answer
(:meth:`~pfednas.search.ElasticNet.split_body_head`), never a layer count here.

State entries are split in ``state_dict`` order: the head is the head's
parameters, the body is everything else — BatchNorm statistics included, so
they travel and are averaged with the body. A frozen part is frozen entirely:
its parameters get no gradient (SGD skips them: no momentum, no weight decay)
and its modules run in eval mode (BatchNorm statistics do not move), so the
frozen part is bit-identical after training the other.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pfednas.data import ArrayDataset
from pfednas.options.common import FINETUNE_SCOPES, check_scope  # noqa: F401 (re-exported)
from pfednas.search import ElasticNet
from pfednas.train import Hyper, TrainStats, get_arrays, set_arrays, train_epochs


@dataclass(frozen=True)
class StateSplit:
    """Positions (in ``state_dict`` order) and keys of the body and head entries."""

    keys: tuple[str, ...]
    body: tuple[int, ...]
    head: tuple[int, ...]

    @classmethod
    def of(cls, net: ElasticNet[object]) -> StateSplit:
        head_names = set(net.split_body_head()[1])
        if not head_names:
            raise ValueError(f"{type(net).__name__} declares no head parameters")
        keys = tuple(net.state_dict().keys())
        return cls(keys=keys, body=tuple(i for i, k in enumerate(keys) if k not in head_names),
                   head=tuple(i for i, k in enumerate(keys) if k in head_names))

    def body_keys(self) -> list[str]:
        return [self.keys[i] for i in self.body]

    def head_keys(self) -> list[str]:
        return [self.keys[i] for i in self.head]


def batchnorm_positions(net: nn.Module) -> tuple[int, ...]:
    """Positions (in ``state_dict`` order) of every BatchNorm entry of ``net``: weights,
    biases and statistics (what FedBN keeps on the client)."""
    names = {f"{name}.{key}" if name else key
             for name, module in net.named_modules()
             if isinstance(module, nn.modules.batchnorm._BatchNorm)
             for key in module.state_dict()}
    return tuple(i for i, key in enumerate(net.state_dict()) if key in names)


def complement(positions: Collection[int], size: int) -> tuple[int, ...]:
    """The positions below ``size`` not in ``positions``."""
    return tuple(i for i in range(size) if i not in set(positions))


def take(arrays: Sequence[np.ndarray], positions: Sequence[int]) -> list[np.ndarray]:
    return [arrays[i] for i in positions]


def put(arrays: Sequence[np.ndarray], positions: Sequence[int],
        values: Sequence[np.ndarray]) -> list[np.ndarray]:
    """A copy of the list ``arrays`` with ``values`` at ``positions``."""
    if len(positions) != len(values):
        raise ValueError(f"expected {len(positions)} arrays, got {len(values)}")
    out = list(arrays)
    for i, value in zip(positions, values, strict=True):
        if np.shape(value) != np.shape(out[i]):
            raise ValueError(f"array {i}: shape {np.shape(value)} != {np.shape(out[i])}")
        out[i] = value
    return out


def load_parts(net: nn.Module, split: StateSplit, *, body: Sequence[np.ndarray] | None = None,
               head: Sequence[np.ndarray] | None = None) -> None:
    """Overwrite the body and/or the head of ``net``; the other part keeps its values."""
    arrays = get_arrays(net)
    if body is not None:
        arrays = put(arrays, split.body, body)
    if head is not None:
        arrays = put(arrays, split.head, head)
    set_arrays(net, arrays)


class _PartlyFrozen(nn.Module):
    """``net`` whose modules holding only frozen state stay in eval mode when trained."""

    def __init__(self, net: nn.Module, frozen_modules: list[nn.Module]) -> None:
        super().__init__()
        self.net = net
        self.frozen_modules = tuple(frozen_modules)  # a tuple: not registered as children

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]

    def train(self, mode: bool = True) -> _PartlyFrozen:
        super().train(mode)
        for module in self.frozen_modules:
            module.eval()
        return self


def _frozen_modules(net: nn.Module, trainable: set[str]) -> list[nn.Module]:
    """Modules that own state and none of it trainable (their whole subtree is frozen)."""
    keys = list(net.state_dict().keys())
    out = []
    for name, module in net.named_modules():
        prefix = f"{name}." if name else ""
        owned = [k for k in keys if k.startswith(prefix)]
        if owned and not trainable.intersection(owned):
            out.append(module)
    return out


def train_part(net: nn.Module, trainable_keys: Collection[str], data: ArrayDataset, *,
               epochs: int, hyper: Hyper, generator: torch.Generator,
               device: torch.device) -> TrainStats:
    """Train only the state entries ``trainable_keys`` of ``net``; the rest stays bit-identical.

    ``requires_grad`` of every parameter is restored afterwards.
    """
    trainable = set(trainable_keys)
    params = dict(net.named_parameters())
    unknown = trainable - set(net.state_dict().keys())
    if unknown:
        raise ValueError(f"unknown state keys: {sorted(unknown)[:5]}")
    before = {name: p.requires_grad for name, p in params.items()}
    try:
        for name, p in params.items():
            p.requires_grad_(before[name] and name in trainable)
            p.grad = None
        wrapper = _PartlyFrozen(net, _frozen_modules(net, trainable))
        return train_epochs(wrapper, data, epochs=epochs, hyper=hyper, generator=generator,
                            device=device)
    finally:
        for name, p in params.items():
            p.requires_grad_(before[name])
            p.grad = None


def train_scope(net: ElasticNet[object], scope: str, data: ArrayDataset, *, epochs: int,
                hyper: Hyper, generator: torch.Generator, device: torch.device) -> TrainStats:
    """What +FT trains (``FINETUNE_SCOPES``): ``full``, every entry of ``net``; ``head``,
    the classifier head only, the body bit-identical (:func:`train_part`)."""
    check_scope("finetune_scope", scope, FINETUNE_SCOPES)
    if scope == "full":
        return train_epochs(net, data, epochs=epochs, hyper=hyper, generator=generator,
                            device=device)
    return train_part(net, StateSplit.of(net).head_keys(), data, epochs=epochs, hyper=hyper,
                      generator=generator, device=device)
