"""Options of the methods for unequal devices without search: HeteroFL and FedRolex (width
slices of one global model), and the two controls that isolate search on PerFedRLNAS's
supernet (the largest subnet each client's budget admits, a random one within it). Each
dataclass is its method's one source of defaults (its config; see :mod:`pfednas.options`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pfednas.options.baselines import FINETUNE_EPOCHS
from pfednas.options.common import FINETUNE_SCOPES, check_int, check_scope
from pfednas.options.perfedrlnas import PerFedRLNASOptions

HETEROFL_RATES = (1.0, 0.5, 0.25, 0.125, 0.0625)  # the paper's levels a..e


@dataclass(frozen=True)
class HeteroFLOptions:
    """HeteroFL (Diao et al., ICLR'21): each client trains the leading-channel width slice of
    one global model its memory budget admits; static BatchNorm, scaler, masked loss."""

    EXTRACTION: ClassVar[str] = "leading"
    # the width rates a client can get: the largest whose slice fits its memory budget (a
    # client on a device level of federation.hardware gets its level's rate)
    rates: Any = field(default_factory=lambda: list(HETEROFL_RATES))
    # the paper's scaler: each convolution's output divided by the rate while training
    scaler: bool = True
    # the paper's static BatchNorm: batch statistics while training, none tracked; a
    # client's statistics are estimated on its own train split before it is tested
    static_bn: bool = True
    # the paper's masked loss: classes absent from a client's train split get logit 0 while
    # it trains (its label split)
    label_mask: bool = True
    # F: fine-tune the client's slice this many epochs before the test evaluation (the
    # benchmark protocol's +FT); the slice as it is (the paper's) is reported beside it
    finetune_epochs: int = FINETUNE_EPOCHS
    # what +FT trains: head (the classifier, as FedAvg+FT's default) | full (the whole slice)
    finetune_scope: str = "head"

    def __post_init__(self) -> None:
        rates = self.rates
        if (not isinstance(rates, list | tuple) or not rates or not all(
                isinstance(r, int | float) and not isinstance(r, bool) and math.isfinite(r)
                and 0 < r <= 1 for r in rates)):
            raise ValueError(f"rates must be a non-empty list of numbers in (0, 1], got "
                             f"{rates!r}")
        if len(set(rates)) != len(rates):
            raise ValueError(f"rates must differ, got {list(rates)}")
        object.__setattr__(self, "rates", tuple(sorted((float(r) for r in rates),
                                                       reverse=True)))
        for name in ("scaler", "static_bn", "label_mask"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        check_int("finetune_epochs", self.finetune_epochs, 0)
        check_scope("finetune_scope", self.finetune_scope, FINETUNE_SCOPES)


@dataclass(frozen=True)
class FedRolexOptions(HeteroFLOptions):
    """FedRolex (Alam et al., NeurIPS'22): HeteroFL's width slices, extracted by a window that
    rolls one channel a round, so every part of the global model is trained."""

    EXTRACTION: ClassVar[str] = "rolling"


@dataclass(frozen=True)
class LargestInBudgetOptions(PerFedRLNASOptions):
    """Control of search: PerFedRLNAS's supernet and merge, each client training the subnet of
    largest training memory its own budget admits (ties by parameters); no policy."""

    CHOICE: ClassVar[str] = "largest"


@dataclass(frozen=True)
class RandomInBudgetOptions(PerFedRLNASOptions):
    """Control of search: PerFedRLNAS's supernet and merge, each client training a random
    subnet within its own budget, drawn once per client from the run's seed; no policy."""

    CHOICE: ClassVar[str] = "random"
