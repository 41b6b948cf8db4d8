"""HAPFNAS's options (Yang & Liu, Entropy 2025): the one source of their defaults.

``conf/method/hapfnas.yaml`` only overrides them (:mod:`pfednas.options`); the nested groups
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
from typing import TYPE_CHECKING, Any, ClassVar

from pfednas.nas.phases import PhasePlan
from pfednas.options.baselines import FINETUNE_EPOCHS
from pfednas.options.common import FINETUNE_SCOPES, check_int, check_scope
from pfednas.records import BUDGET_METRICS

if TYPE_CHECKING:
    from pfednas.data import DataSpec

TRANSFER_SOURCES = ("holdout", "synthetic", "auto")
MEASURE_SPLITS = ("val", "train_val")


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
class DistillOptions:
    """Phase 1's sandwich distillation of the knowledge models' ensemble into the supernet."""

    temperature: float = 3.0       # softmax temperature of the ensemble's soft labels (KL)
    steps: int = 100            # sandwich steps per round (largest + smallest + random ones)
    batch_size: int = 64           # transfer inputs per distillation step
    lr: float = 0.05               # the server's SGD on the supernet while distilling
    momentum: float = 0.9          # (that SGD's momentum)
    weight_decay: float = 0.0      # (that SGD's weight decay)
    random_subnets: int = 2     # besides the largest and the smallest
    threads: int = 1            # server torch threads while distilling (it shares the CPUs)

    def __post_init__(self) -> None:
        if self.temperature <= 0 or self.lr <= 0:
            raise ValueError("distill.temperature and distill.lr must be > 0")
        if self.steps < 0 or self.batch_size < 2 or self.random_subnets < 0:
            raise ValueError("distill: need steps >= 0, batch_size >= 2, random_subnets >= 0")
        if self.threads < 1:
            raise ValueError("distill.threads must be >= 1")
        if self.momentum < 0 or self.weight_decay < 0:
            raise ValueError("distill.momentum and distill.weight_decay must be >= 0")


@dataclass(frozen=True)
class PredictorOptions:
    """Phase 2's per-client random-forest predictors (fitted on the server)."""

    archs_per_client: int = 40   # M: subnets each client measures
    trees: int = 100               # the random forest's trees
    folds: int = 5               # cross-validation of the reported Spearman / MAE
    min_pairs: int = 6           # fewer valid pairs: the client uses the pooled pairs of all
    # the client's split the subnets are measured on: val | train_val (the distilled supernet
    # never saw client data, so its train split is as unseen as val, and 4x the samples cut
    # the noise)
    measure_on: str = "train_val"

    def __post_init__(self) -> None:
        check_scope("predictor.measure_on", self.measure_on, MEASURE_SPLITS)
        if self.archs_per_client < 2 or self.trees < 1 or self.folds < 2:
            raise ValueError("predictor: need archs_per_client >= 2, trees >= 1, folds >= 2")
        if self.min_pairs < 2:
            raise ValueError("predictor.min_pairs must be >= 2")


@dataclass(frozen=True)
class EvolutionOptions:
    """Phase 2's predictor-guided evolutionary search within each client's budget."""

    population: int = 40           # genomes (architectures) per generation
    generations: int = 20          # rounds of selection, crossover and mutation
    parents: int = 10          # kept each generation (elitism)
    mutation_prob: float = 0.15  # per gene
    crossover_prob: float = 0.5    # per child: uniform crossover of two parents, else a copy
    max_tries: int = 100       # draws per wanted genome before giving up on filling a slot

    def __post_init__(self) -> None:
        if self.population < 2 or not 1 <= self.parents < self.population:
            raise ValueError("evolution: need population >= 2 and 1 <= parents < population")
        if self.generations < 0 or self.max_tries < 1:
            raise ValueError("evolution: need generations >= 0 and max_tries >= 1")
        if not (0 <= self.mutation_prob <= 1 and 0 <= self.crossover_prob <= 1):
            raise ValueError("evolution: mutation_prob and crossover_prob must be in [0, 1]")


@dataclass(frozen=True)
class HAPFNASOptions:
    # the paper's merge: each entry averaged over the clients that covered it, each counting
    # 1 (federation.weighting=null); samples weighs them by num_examples instead
    WEIGHTING: ClassVar[str] = "uniform"
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
