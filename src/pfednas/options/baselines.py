"""Options of the fixed-architecture baselines: FedAvg + fine-tuning, FedProx, Local, FedRep,
FedBABU,
and the global federated NAS reference FedNAS. Each dataclass is its method's one source of
defaults (each is its method's config; see :mod:`pfednas.options`)."""

from __future__ import annotations

from dataclasses import dataclass

from pfednas.options.common import (
    FINETUNE_SCOPES,
    FITS_ALL,
    check_fixed_arch,
    check_int,
    check_scope,
)
from pfednas.wire.messages import RoundEntries

FINETUNE_EPOCHS = 10  # F: the papers' local fine-tuning before a personalized evaluation


@dataclass(frozen=True)
class LocalOptions:
    """Local training only: each client trains its own model, nothing is averaged."""

    # the fixed model of the search space: fits_all (the largest architecture every client's
    # memory budget admits: the benchmark's choice in every preset) | max (the papers'
    # "MobileNetV3-Large" role) | min | an arch string
    arch: str = FITS_ALL

    def __post_init__(self) -> None:
        check_fixed_arch(self.arch)


def fixed_arch_option(options: object) -> str | None:
    """``method.arch`` of a method with one fixed model (:class:`LocalOptions` and the
    classes built on it): fits_all, min, max or an architecture string; None for a method
    without one."""
    return options.arch if isinstance(options, LocalOptions) else None


def finetune_epochs_option(options: object) -> int:
    """``method.finetune_epochs`` (F) of a method that fine-tunes; 0 for one that does not."""
    value = getattr(options, "finetune_epochs", 0)
    return value if isinstance(value, int) else 0


@dataclass(frozen=True)
class LocalRound(RoundEntries):
    """Local's own entry in its evaluation messages: the epochs each client trains first
    (those since the previous evaluation)."""

    train_epochs: int


@dataclass(frozen=True)
class FedAvgOptions(LocalOptions):
    """FedAvg (McMahan et al., 2017) + local fine-tuning before the personalized evaluation."""

    finetune_epochs: int = FINETUNE_EPOCHS  # per client, on its own train split (0: as published)
    # head (classifier only: bench=digits' choice) | full (the whole model, the papers')
    finetune_scope: str = "head"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("finetune_epochs", self.finetune_epochs, 0)
        check_scope("finetune_scope", self.finetune_scope, FINETUNE_SCOPES)


@dataclass(frozen=True)
class FedProxOptions(FedAvgOptions):
    """FedProx (Li et al., MLSys'20) + local fine-tuning: FedAvg whose clients add the
    proximal term (μ/2) ‖w − w_t‖² to their loss, w_t the round's global model."""

    mu: float = 0.01  # μ of the proximal term (0: FedAvg's updates exactly)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.mu, bool) or not isinstance(self.mu, int | float) \
                or not 0 <= self.mu < float("inf"):
            raise ValueError(f"mu must be a finite number >= 0, got {self.mu!r}")


@dataclass(frozen=True)
class FedBNOptions(FedAvgOptions):
    """FedBN (Li et al., ICLR'21) + local fine-tuning: FedAvg on everything but the BatchNorm
    layers, whose weights and statistics each client keeps as its own."""


@dataclass(frozen=True)
class FedRepOptions(LocalOptions):
    """FedRep (Collins et al., ICML'21): shared body, personal head kept on the client."""

    head_epochs: int = 1               # local head epochs per round (body frozen)
    body_epochs: int | None = None     # local body epochs per round; null: federation.local_epochs
    # head-only epochs on the current body before each evaluation (0 = none): clients never
    # sampled would otherwise keep their initial head
    finetune_epochs: int = FINETUNE_EPOCHS

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("head_epochs", self.head_epochs, 0)
        check_int("finetune_epochs", self.finetune_epochs, 0)
        if self.body_epochs is not None:
            check_int("body_epochs", self.body_epochs, 1)

    def round_entries(self, local_epochs: int) -> FedRepRound:
        return FedRepRound(head_epochs=self.head_epochs,
                           body_epochs=self.body_epochs or local_epochs)


@dataclass(frozen=True)
class FedRepRound(RoundEntries):
    """FedRep's own entries in every train message: its two phases' epochs."""

    head_epochs: int
    body_epochs: int


@dataclass(frozen=True)
class FedBABUOptions(LocalOptions):
    """FedBABU (Oh et al., ICLR'22): head fixed at its random init while the body is averaged."""

    finetune_scope: str = "head"       # head (the paper's: body frozen) | full
    finetune_epochs: int = FINETUNE_EPOCHS  # F: per client, on its own train split

    def __post_init__(self) -> None:
        super().__post_init__()
        check_scope("finetune_scope", self.finetune_scope, FINETUNE_SCOPES)
        check_int("finetune_epochs", self.finetune_epochs, 0)


@dataclass(frozen=True)
class FedNASOptions:
    """FedNAS (He et al., 2020): one mixed-op darts_s2 supernet, weights and α by FedAvg."""

    arch_lr: float = 3e-3              # Adam lr of α (DARTS: arch_learning_rate)
    arch_weight_decay: float = 1e-3    # DARTS: arch_weight_decay
    finetune_epochs: int = FINETUNE_EPOCHS  # F: the derived network's, per client
    finetune_scope: str = "full"       # full (all weights of the derived network) | head
    # re-estimate the derived network's BatchNorm statistics on each client's train split
    # before (and after) fine-tuning: the supernet's are the mixed edges' (+0.033 on the
    # Fashion-MNIST tuning seed, 0.142 -> 0.777 on the digits main job)
    bn_recalibrate: bool = True

    def __post_init__(self) -> None:
        if not self.arch_lr > 0 or self.arch_weight_decay < 0:
            raise ValueError("arch_lr must be > 0 and arch_weight_decay >= 0")
        check_int("finetune_epochs", self.finetune_epochs, 0)
        check_scope("finetune_scope", self.finetune_scope, FINETUNE_SCOPES)
        if not isinstance(self.bn_recalibrate, bool):
            raise ValueError(f"bn_recalibrate must be true or false, got {self.bn_recalibrate!r}")

    def round_entries(self) -> FedNASRound:
        return FedNASRound(arch_lr=self.arch_lr, arch_weight_decay=self.arch_weight_decay)


@dataclass(frozen=True)
class FedNASRound(RoundEntries):
    """FedNAS's own entries in every train message: its clients' α optimiser."""

    arch_lr: float
    arch_weight_decay: float
