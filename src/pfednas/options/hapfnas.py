"""HAPFNAS's options (Yang & Liu, Entropy 2025): the one source of their defaults.

the dataclass is the ``method=hapfnas`` config (:mod:`pfednas.options`); the nested groups
are the paper's phases: ``transfer`` and ``distill`` (phase 1), ``predictor`` and
``evolution`` (phase 2); the clients' budgets are ``budget_metric`` on the federation's
hardware (``federation.hardware``). Beside the paper's knobs, ``personal_head`` (as
published 0.818 -> 0.862 on the Fashion-MNIST tuning seed,
docs/notes/2026-11-24-one-knob-diagnostics.md) and ``finetune_scope`` are options of ours.
Options tried and removed: docs/TUNING.md, "Options that left the methods".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pfednas.nas.phases import (  # noqa: F401 (MEASURE_SPLITS re-exported)
    MEASURE_SPLITS,
    DistillOptions,
    EvolutionOptions,
    PhasePlan,
    PredictorOptions,
)
from pfednas.options.baselines import FINETUNE_EPOCHS
from pfednas.options.common import FINETUNE_SCOPES, check_int, check_scope
from pfednas.records import BUDGET_METRICS
from pfednas.wire.messages import RoundEntries

if TYPE_CHECKING:
    from pfednas.data import DataSpec

TRANSFER_SOURCES = ("holdout", "synthetic", "auto")


@dataclass(frozen=True)
class TransferOptions:
    """The server's transfer set. ``source``: holdout (pool samples no client holds, inputs only)
    | synthetic (data-free inputs) | auto (holdout when the pool leaves ``size`` unheld samples,
    else synthetic: on the default digits the clients hold the whole pool)."""

    source: str = "auto"           # holdout | synthetic | auto (see above)
    size: int = 1000               # transfer inputs in all
    heldout_fraction: float = 0.2  # kept out of distillation: KL and subnet-accuracy reports

    def __post_init__(self) -> None:
        check_scope("transfer.source", self.source, TRANSFER_SOURCES)
        if self.size < 4 or not 0 < self.heldout_fraction < 1:
            raise ValueError("transfer: need size >= 4 and 0 < heldout_fraction < 1")

    def resolve(self, spec: DataSpec) -> TransferOptions:
        """``source: auto`` made holdout when the pool keeps ``size`` samples no client
        holds, else synthetic (digits: the clients hold the whole pool)."""
        if self.source != "auto":
            return self
        from pfednas.data.holdout import unheld_indices

        enough = len(unheld_indices(spec)) >= self.size
        return replace(self, source="holdout" if enough else "synthetic")

    def check_data(self, spec: DataSpec) -> None:
        """Holdout needs ``size`` pool samples that no client holds."""
        if self.resolve(spec).source != "holdout":
            return
        from pfednas.data.holdout import unheld_indices

        free = len(unheld_indices(spec))
        if free < self.size:
            raise ValueError(
                f"method.transfer.source=holdout needs method.transfer.size={self.size} pool "
                f"samples that no client holds, but {spec.name} with {spec.num_clients} clients "
                f"leaves {free} unheld (dataset.max_samples_per_client="
                f"{spec.max_samples_per_client}); lower method.transfer.size, cap the clients "
                "with dataset.max_samples_per_client, or use method.transfer.source=synthetic")

    def counts(self) -> tuple[int, int]:
        """(distillation inputs, held-out inputs), both >= 2."""
        held = min(max(2, round(self.size * self.heldout_fraction)), self.size - 2)
        return self.size - held, held


@dataclass(frozen=True)
class HAPFNASOptions:
    """HAPFNAS (Yang & Liu, Entropy 2025): knowledge-model distillation into the supernet,
    per-client random-forest predictors and evolutionary search, heteroFedAvg
    (strategies/hapfnas.py); its phase rounds add up to federation.num_rounds."""

    distill_rounds: int = 5       # phase 1: knowledge models trained, distilled on the server
    search_rounds: int = 1        # phase 2: clients measure their share of the M subnets
    hetero_rounds: int | None = None  # phase 3, heteroFedAvg; null: the rest of num_rounds
    knowledge_width: int = 16     # the clients' knowledge model: a SmallCNN of this width
    knowledge_epochs: int | None = None  # per phase-1 round; null: federation.local_epochs
    bn_recalibrate: bool = True   # re-estimate BatchNorm statistics before evaluating
    # F: fine-tune the searched subnet this many epochs before the test evaluation (the
    # protocol's +FT); the paper's figure is reported beside it (accuracy_no_ft)
    finetune_epochs: int = FINETUNE_EPOCHS
    finetune_scope: str = "full"  # what +FT trains: full (the whole slice) | head
    # phase 3: each client keeps its own classifier head, trained with the body, never sent
    # (FedRep's rule on the subnets; an option, not in the paper)
    personal_head: bool = False
    # phase 3: each batch also trains this many subnets nested in the client's, distilled
    # from its outputs (BigNAS's sandwich rule within the client's subnet; 0: off; an
    # option, not in the paper; nas/sandwich.py)
    sandwich_students: int = 0
    transfer: TransferOptions = field(default_factory=TransferOptions)
    distill: DistillOptions = field(default_factory=DistillOptions)
    predictor: PredictorOptions = field(default_factory=PredictorOptions)
    evolution: EvolutionOptions = field(default_factory=EvolutionOptions)
    # the metric of the clients' budgets: params | flops | memory (training memory at the
    # federation batch size); a simulation draws them from federation.hardware's memory
    # spread, U(memory_low, memory_high) x the largest subnet's cost in this metric, and a
    # deployment's is the memory its node claims
    budget_metric: str = "memory"

    def __post_init__(self) -> None:
        check_scope("finetune_scope", self.finetune_scope, FINETUNE_SCOPES)
        check_scope("budget_metric", self.budget_metric, BUDGET_METRICS)
        check_int("knowledge_width", self.knowledge_width, 1)
        if self.knowledge_epochs is not None:
            check_int("knowledge_epochs", self.knowledge_epochs, 1)
        check_int("finetune_epochs", self.finetune_epochs, 0)
        check_int("sandwich_students", self.sandwich_students, 0)
        if self.predictor.archs_per_client < self.search_rounds:
            raise ValueError("predictor.archs_per_client must be >= search_rounds")

    def plan(self, num_rounds: int) -> PhasePlan:
        hetero = (num_rounds - self.distill_rounds - self.search_rounds
                  if self.hetero_rounds is None else self.hetero_rounds)
        if self.distill_rounds < 0 or self.search_rounds < 1 or hetero < 1:
            fewest = max(self.distill_rounds, 0) + max(self.search_rounds, 1) + 1
            raise ValueError(
                f"method.distill_rounds ({self.distill_rounds}) must be >= 0, "
                f"method.search_rounds ({self.search_rounds}) >= 1 and the heteroFedAvg "
                f"rounds ({hetero}: method.hetero_rounds, else federation.num_rounds "
                f"{num_rounds} less the others) >= 1; with these, federation.num_rounds >= "
                f"{fewest}")
        plan = PhasePlan(self.distill_rounds, self.search_rounds, hetero)
        if plan.total != num_rounds:
            raise ValueError(f"distill_rounds + search_rounds + hetero_rounds = {plan.total} "
                             f"must equal federation.num_rounds = {num_rounds}")
        return plan

    def check_federation(self, federation: Any) -> None:
        self.plan(federation.num_rounds)

    def check_data(self, spec: DataSpec) -> None:
        if spec.val_fraction <= 0:
            raise ValueError("method=hapfnas measures subnets on the clients' validation "
                             "splits: dataset.val_fraction must be > 0")
        self.transfer.check_data(spec)

    @staticmethod
    def from_config(options: Mapping[str, Any]) -> HAPFNASOptions:
        opts = {k: v for k, v in options.items() if k != "name"}
        nested = {"transfer": TransferOptions, "distill": DistillOptions,
                  "predictor": PredictorOptions, "evolution": EvolutionOptions}
        parts = {key: cls(**(opts.pop(key, None) or {})) for key, cls in nested.items()}
        return HAPFNASOptions(**opts, **parts)


@dataclass(frozen=True)
class HAPFNASPhase(RoundEntries):
    """HAPFNAS's own entry in every message: the phase of its round
    (:class:`pfednas.nas.phases.Phase`), which tells the client what the message asks."""

    phase: int


@dataclass(frozen=True)
class HAPFNASMeasure(RoundEntries):
    """A phase-2 measurement request: the subnets to measure (their strings joined by
    ``ARCH_SEPARATOR``), the subnet covering them (what the message carries), and the data
    they are measured on (``predictor.measure_on``)."""

    archs: str
    cover: str
    measure_on: str
