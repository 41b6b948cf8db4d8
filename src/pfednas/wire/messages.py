"""What a round message's config says, typed on both sides: the one place that names each
shared key and its default.

The server builds the config of every training and evaluation message from an :class:`Sgd`
and a :class:`RoundConfig` (and, for an evaluation that fine-tunes, a :class:`Finetune`); a
client reads the same records back with their ``read``, so a key is spelt once and a
default is stated once. A method's own keys travel beside these, each declared once as a
:class:`RoundEntries`: here where several methods share them (a subnet's architecture and
split), else beside the method's options (FedRep's phases, HAPFNAS's phase). No torch, no
Flower here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Self, get_type_hints

FINETUNE_SCOPES = ("full", "head")  # what +FT trains: the whole model, or its classifier head


def check_scope(name: str, scope: str, allowed: Sequence[str]) -> None:
    if scope not in allowed:
        raise ValueError(f"{name} must be {'|'.join(allowed)}, got {scope!r}")


# the keys, each named once
SERVER_ROUND, LOCAL_EPOCHS = "server_round", "local_epochs"
LR, MOMENTUM, WEIGHT_DECAY, BATCH_SIZE = "lr", "momentum", "weight_decay", "batch_size"
LINEAGE, FIXED_ARCH = "lineage", "fixed_arch"
FINETUNE_EPOCHS, FINETUNE_SCOPE = "finetune_epochs", "finetune_scope"
FINETUNE_BOTH = "finetune_both"
WIDTH_RATE = "width_rate"  # HeteroFL / FedRolex: the width rate of the slice a message carries
SPLIT = "split"  # an evaluation's split: test (fine-tune, test; the last one kept) | val
TEST_SPLIT, VAL_SPLIT = "test", "val"


@dataclass(frozen=True)
class Sgd:
    """The clients' SGD, from the federation (``federation.lr``...), in every message."""

    lr: float
    momentum: float
    weight_decay: float
    batch_size: int

    def to_config(self) -> dict[str, Any]:
        return {LR: self.lr, MOMENTUM: self.momentum, WEIGHT_DECAY: self.weight_decay,
                BATCH_SIZE: self.batch_size}

    @staticmethod
    def read(config: Mapping[str, Any]) -> Sgd:
        return Sgd(lr=float(config[LR]), momentum=float(config[MOMENTUM]),
                   weight_decay=float(config[WEIGHT_DECAY]), batch_size=int(config[BATCH_SIZE]))


class RoundEntries:
    """Entries a method adds to its messages, declared once: a frozen dataclass whose field
    names are the config keys and whose field types read them back (``int``, ``float``,
    ``str``)."""

    def to_config(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload, no-any-return]

    @classmethod
    def read(cls, config: Mapping[str, Any]) -> Self:
        """The entries of a received config (``KeyError`` names a missing one)."""
        types = get_type_hints(cls)
        return cls(**{f.name: types[f.name](config[f.name])
                      for f in fields(cls)})  # type: ignore[arg-type]


@dataclass(frozen=True)
class SubnetTrain(RoundEntries):
    """A train message that carries one subnet (PerFedRLNAS, HAPFNAS, the controls): its
    architecture."""

    arch: str


@dataclass(frozen=True)
class SubnetEvaluation(RoundEntries):
    """An evaluation message that carries one subnet: its architecture, and the split it is
    evaluated on (``test``: fine-tuned and tested, the last round's kept; ``val``: a
    search's measurement, nothing kept)."""

    arch: str
    split: str


@dataclass(frozen=True)
class RoundConfig:
    """Every message's round entries: which round, its local epochs and the run's identity."""

    server_round: int
    local_epochs: int
    # this run and its resumptions: clients restore saved state only of the same lineage
    lineage: str = ""
    # a deployment's fits_all architecture, chosen from the claimed profiles ("": none)
    fixed_arch: str = ""

    def to_config(self) -> dict[str, Any]:
        """The config entries (``lineage`` and ``fixed_arch`` only where set)."""
        out: dict[str, Any] = {SERVER_ROUND: self.server_round, LOCAL_EPOCHS: self.local_epochs}
        if self.lineage:
            out[LINEAGE] = self.lineage
        if self.fixed_arch:
            out[FIXED_ARCH] = self.fixed_arch
        return out

    @staticmethod
    def read(config: Mapping[str, Any]) -> RoundConfig:
        """The round entries of a received config (``KeyError`` names a missing one)."""
        return RoundConfig(server_round=int(config[SERVER_ROUND]),
                           local_epochs=int(config[LOCAL_EPOCHS]),
                           lineage=str(config.get(LINEAGE, "")),
                           fixed_arch=str(config.get(FIXED_ARCH, "")))


@dataclass(frozen=True)
class Finetune:
    """An evaluation's fine-tuning before its test (the protocol's F; 0 epochs: none)."""

    epochs: int = 0
    scope: str = "full"   # full (the whole model) | head (the classifier only)
    both: bool = False    # also fine-tune a copy at the other scope and report both (tuning)

    def __post_init__(self) -> None:
        check_scope(FINETUNE_SCOPE, self.scope, FINETUNE_SCOPES)

    def to_config(self) -> dict[str, Any]:
        """The config entries (``finetune_both`` only where set)."""
        out: dict[str, Any] = {FINETUNE_EPOCHS: self.epochs, FINETUNE_SCOPE: self.scope}
        if self.both:
            out[FINETUNE_BOTH] = True
        return out

    @staticmethod
    def read(config: Mapping[str, Any], default_scope: str = "full") -> Finetune:
        """The fine-tuning a received config asks for (none where it names none)."""
        return Finetune(epochs=int(config.get(FINETUNE_EPOCHS, 0)),
                        scope=str(config.get(FINETUNE_SCOPE, default_scope)),
                        both=bool(config.get(FINETUNE_BOTH, False)))
