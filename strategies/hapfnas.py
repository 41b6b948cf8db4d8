"""HAPFNAS (Yang & Liu, "Heterogeneity-Aware Personalized Federated NAS", Entropy 2025).

Three phases over the federation's rounds (``pfednas.nas.phases.PhasePlan``):

1. **Distillation.** N sampled clients train their lightweight knowledge model
   (``clients/hapfnas.py``) and upload it — never the supernet. The server keeps
   each client's latest knowledge model and distils their ensemble into the
   supernet on its transfer set with the sandwich rule (``pfednas.nas.distill``).
   The round's ``server`` record holds the KL of the largest / smallest subnet to
   the ensemble on held-out transfer inputs and their labelled accuracy.
2. **Predictors and search.** Every client evaluates M sampled subnets of the
   distilled supernet (within its budget) on its validation split (with
   ``predictor.measure_on=train_val`` also on the train split, which the distilled
   supernet never saw either); only the subnet that covers its sampled ones travels
   (``covering_arch``), never the whole supernet unless a sample needs it. After the
   last search round the server fits one random forest per client and runs a predictor-guided
   evolutionary search under the client's budget (``pfednas.nas.predictor``,
   ``pfednas.nas.evolution``; the module docstrings say why on the server).
3. **heteroFedAvg.** N sampled clients train their own personalized subnet;
   the server merges them with the overlap-aware average
   (``pfednas.nas.merge.overlap_average``). Personalized evaluation: every
   client's subnet, cut from the supernet, on its own test split.

Replies: a knowledge model passes the reply gate like any model (its BatchNorm
statistics checked as statistics, not only for finiteness: one model with a
negative variance would turn the distilled supernet NaN). With
``federation.update_norm_bound`` (on in deployments) each returned knowledge model
is bounded like any training update: its change from the model the client was
sent (its previous one, or the seeded initial one) at most the bound × the
round's median change; its weight in the ensemble is its sample count only where
the server knows a bound for it (else equal).

Budgets: in a simulation ``U(low, high) ×`` the largest subnet's cost in
``budget.metric`` (params / FLOPs / training memory from ``Supernet.cost``), drawn
from the same seeded hardware stream as PerFedRLNAS's memory budgets, so that for
the same seed both methods see the same clients (``self.profiles``,
:mod:`pfednas.nas.profile`). In a deployment each client's budget is the memory
budget its node claims (``budget.metric`` must be memory there); a client that no
subnet fits is excluded with the reason in ``summary.json``. Every state a later
phase needs is in the checkpoint; the phase itself is a function of the round number.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from logging import WARNING
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from torch import nn

from pfednas.body_head import FINETUNE_SCOPES, TRAIN_SCOPES, check_scope
from pfednas.nas.distill import (
    DistillOptions,
    TransferSet,
    accuracy,
    calibrated_subnet,
    distill_supernet,
    ensemble_probs,
    mean_kl,
    torch_threads,
)
from pfednas.nas.evolution import EvolutionOptions, Genome, evolve
from pfednas.nas.heterogeneity import HardwareSpread
from pfednas.nas.merge import overlap_average
from pfednas.nas.phases import Phase, PhasePlan
from pfednas.nas.predictor import (
    PredictorOptions,
    PredictorReport,
    arch_features,
    cross_validated_report,
    fit_forest,
)
from pfednas.nas.profile import exclusions, simulated_budgets, simulated_profiles
from pfednas.nas.roles import state_roles
from pfednas.nas.validation import MetricSpec
from pfednas.search import Arch, Cost, Supernet
from pfednas.search.memory_bound import budgeted_cost
from pfednas.seeding import int_seed, numpy_rng, torch_generator
from pfednas.strategies.base import (
    Budget,
    PersonalizedStrategy,
    RoundRecord,
    arch_details,
)

# seeding purpose tags of this method (pfednas.seeding uses 1-5, node_data 101)
DISTILL_STREAM, SEARCH_ARCHS, PREDICTOR, EVOLUTION = 601, 602, 603, 604
ARCH_SEPARATOR = ";"
REPORT_FIELDS = ("spearman_rf", "spearman_mean", "mae_rf", "mae_mean")
METRICS = ("params", "flops", "memory")


@dataclass(frozen=True)
class BudgetSpread:
    metric: str = "memory"
    low: float = 0.25
    high: float = 1.0

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"budget.metric must be one of {'|'.join(METRICS)}, "
                             f"got {self.metric!r}")
        if not 0 < self.low <= self.high:
            raise ValueError(f"budget: need 0 < low <= high, got {self.low}, {self.high}")

    def value(self, cost: Cost) -> float:
        return float({"params": cost.params, "flops": cost.flops,
                      "memory": cost.memory_bytes}[self.metric])


@dataclass(frozen=True)
class TransferOptions:
    source: str = "holdout"        # holdout | synthetic | auto (resolved before the strategy)
    size: int = 1000
    heldout_fraction: float = 0.2

    def __post_init__(self) -> None:
        if self.source not in ("holdout", "synthetic", "auto"):
            raise ValueError("transfer.source must be holdout|synthetic|auto, "
                             f"got {self.source!r}")
        if self.size < 4 or not 0 < self.heldout_fraction < 1:
            raise ValueError("transfer: need size >= 4 and 0 < heldout_fraction < 1")

    def counts(self) -> tuple[int, int]:
        """(distillation inputs, held-out inputs), both >= 2."""
        held = min(max(2, round(self.size * self.heldout_fraction)), self.size - 2)
        return self.size - held, held


SEARCH_OBJECTIVES = ("predictor", "params")


@dataclass(frozen=True)
class HAPFNASOptions:
    distill_rounds: int = 5
    search_rounds: int = 1
    hetero_rounds: int | None = None   # None: the rest of federation.num_rounds
    knowledge_width: int = 16
    knowledge_epochs: int | None = None  # None: federation.local_epochs (the same E as others)
    bn_recalibrate: bool = True
    finetune_epochs: int = 0            # F: protocol fine-tuning at evaluation (0 = as published)
    transfer: TransferOptions = field(default_factory=TransferOptions)
    distill: DistillOptions = field(default_factory=DistillOptions)
    predictor: PredictorOptions = field(default_factory=PredictorOptions)
    evolution: EvolutionOptions = field(default_factory=EvolutionOptions)
    budget: BudgetSpread = field(default_factory=BudgetSpread)
    # predictor: evolve on the client's forest (the paper) | params: the control that ignores
    # the forest, each client's largest subnet (by parameters) within its own budget
    search_objective: str = "predictor"
    finetune_scope: str = "full"  # what +FT trains: full (the slice, as FedAvg+FT) | head
    # phase 3: each client keeps its own classifier head (FedRep's rule on the subnets; an
    # option, not in the paper): it trains with the body, replaces the received head, never travels
    personal_head: bool = False
    # phase 3: what a client trains of its subnet: full (the paper) | body, the head frozen as
    # the distillation left it, everywhere (FedBABU's rule on the subnets; an option)
    train_scope: str = "full"

    def __post_init__(self) -> None:
        check_scope("finetune_scope", self.finetune_scope, FINETUNE_SCOPES)
        check_scope("train_scope", self.train_scope, TRAIN_SCOPES)
        if self.personal_head and self.train_scope != "full":
            raise ValueError("personal_head trains each client's head with its body: it needs "
                             f"train_scope=full, got {self.train_scope!r}")
        if self.search_objective not in SEARCH_OBJECTIVES:
            raise ValueError(f"search_objective must be {'|'.join(SEARCH_OBJECTIVES)}, got "
                             f"{self.search_objective!r}")
        if self.knowledge_width < 1 or (self.knowledge_epochs is not None
                                        and self.knowledge_epochs < 1):
            raise ValueError("knowledge_width and knowledge_epochs must be >= 1")
        if isinstance(self.finetune_epochs, bool) or not isinstance(self.finetune_epochs, int) \
                or self.finetune_epochs < 0:
            raise ValueError(f"finetune_epochs must be an integer >= 0, got "
                             f"{self.finetune_epochs!r}")
        if self.predictor.archs_per_client < self.search_rounds:
            raise ValueError("predictor.archs_per_client must be >= search_rounds")

    def plan(self, num_rounds: int) -> PhasePlan:
        hetero = (num_rounds - self.distill_rounds - self.search_rounds
                  if self.hetero_rounds is None else self.hetero_rounds)
        plan = PhasePlan(self.distill_rounds, self.search_rounds, hetero)
        if plan.total != num_rounds:
            raise ValueError(f"distill_rounds + search_rounds + hetero_rounds = {plan.total} "
                             f"must equal federation.num_rounds = {num_rounds}")
        return plan

    @staticmethod
    def from_config(options: Mapping[str, Any]) -> HAPFNASOptions:
        opts = dict(options)
        nested = {"transfer": TransferOptions, "distill": DistillOptions,
                  "predictor": PredictorOptions, "evolution": EvolutionOptions,
                  "budget": BudgetSpread}
        parts = {key: cls(**(opts.pop(key, None) or {})) for key, cls in nested.items()}
        return HAPFNASOptions(**opts, **parts)


def covering_arch(supernet: Supernet, archs: list[Arch]) -> Arch:
    """The smallest architecture whose subnet contains every one of ``archs``.

    Subnets are nested (prefix channels, first blocks, centre kernel crops), so with
    choices in increasing order the per-dimension largest choice covers them all;
    checked on the supernet regions, else the largest architecture (the whole supernet).
    """
    space = supernet.space
    cover = space.arch_from_indices(np.max([a.indices for a in archs], axis=0))
    outer = dict(supernet.regions(cover))
    for arch in archs:
        for i, inner in supernet.regions(arch):
            if i not in outer or not all(
                    (o.start or 0) <= (s.start or 0) and (s.stop or 0) <= (o.stop or 0)
                    for s, o in zip(inner, outer[i], strict=True)):
                return space.max_arch()
    return cover


class HAPFNASStrategy(PersonalizedStrategy):
    TRAIN_REQUIRES = ("val_accuracy",)

    def __init__(self, *, budget: Budget, train_config: dict[str, Any], supernet: Supernet,
                 options: HAPFNASOptions, transfer: TransferSet,
                 knowledge_fn: Callable[[], nn.Module]) -> None:
        super().__init__(budget=budget, train_config=train_config)
        self.supernet, self.space, self.options = supernet, supernet.space, options
        self.plan = options.plan(budget.num_rounds)
        self.transfer, self.knowledge_fn = transfer, knowledge_fn
        knowledge = knowledge_fn()
        self.knowledge_init = [t.detach().numpy().copy() for t in knowledge.state_dict().values()]
        self.knowledge_roles = state_roles(knowledge)
        self.roles = state_roles(supernet.net)  # of each supernet tensor
        self.sizes = [len(d.choices) for d in self.space.dimensions]
        self.budgets: dict[int, float] = {}  # client id -> budget in budget.metric
        if budget.deployment:  # the nodes claim their profiles on first contact
            if options.budget.metric != "memory":
                raise ValueError("in a deployment a client's budget is the memory budget its "
                                 f"node claims: method.budget.metric must be memory, got "
                                 f"{options.budget.metric!r}")
        else:
            self.simulate_budgets()
        self.knowledge: dict[int, tuple[list[np.ndarray], float]] = {}
        self.pairs: dict[int, list[tuple[Arch, float]]] = {}
        self.personal: dict[int, Arch] = {}
        self.predicted: dict[int, float] = {}
        self.reports: dict[int, PredictorReport] = {}
        self.pending: dict[int, list[Arch]] = {}
        self.sent: dict[int, Arch] = {}

    def simulate_budgets(self) -> None:
        """The seeded spread's profiles and budgets (a simulation)."""
        low, high, metric = self.options.budget.low, self.options.budget.high, \
            self.options.budget.metric
        batch = int(self.train_config.get("batch_size", 1))
        memory = float(self.supernet.cost(self.space.max_arch(), batch_size=batch).memory_bytes)
        self.profiles = simulated_profiles(
            self.budget.num_clients, HardwareSpread(memory_low=low, memory_high=high), memory,
            self.budget.seed)
        self.budgets = (
            {cid: p.memory_bytes for cid, p in self.profiles.items()} if metric == "memory"
            else dict(enumerate(simulated_budgets(self.budget.num_clients, low, high,
                                                  self.cost_of(self.space.max_arch()),
                                                  self.budget.seed))))
        smallest = self.cost_of(self.space.min_arch())
        if smallest > min(self.budgets.values()):
            raise ValueError(f"the smallest subnet's {metric} ({smallest:.0f}) exceeds the "
                             f"lowest client budget ({min(self.budgets.values()):.0f}); "
                             "raise method.budget.low")

    def profiles_bound(self) -> None:
        """A deployment: each client's budget is its claimed memory budget; a client that
        no subnet fits is excluded."""
        self.budgets = {cid: p.memory_bytes for cid, p in self.profiles.items()}
        self.excluded = exclusions(self.profiles, self.cost_of(self.space.min_arch()),
                                   lambda p: p.memory_bytes)

    # -- helpers -------------------------------------------------------------------------------
    def cost(self, arch: Arch) -> Cost:
        """``arch``'s cost as a budget sees it (real bytes in a deployment: the calibrated
        upper bound; :func:`pfednas.search.memory_bound.budgeted_cost`)."""
        batch = int(self.train_config.get("batch_size", 1))
        return budgeted_cost(self.supernet.cost(arch, batch_size=batch), self.space.name,
                             real_bytes=self.budget.deployment)

    def cost_of(self, arch: Arch) -> float:
        return self.options.budget.value(self.cost(arch))

    def fits(self, client_id: int, arch: Arch) -> bool:
        return self.cost_of(arch) <= self.budgets[client_id]

    def current_arrays(self) -> ArrayRecord:
        return ArrayRecord()

    def phase_config(self, server_round: int, **extra: Any) -> dict[str, Any]:
        return self.round_config(server_round, phase=int(self.plan.phase_of(server_round)),
                                 **extra)

    # -- training: knowledge models (phase 1) and personalized subnets (phase 3) ---------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        phase = self.plan.phase_of(server_round)
        self.pending, self.sent = {}, {}
        if phase == Phase.SEARCH:
            return []
        self.record.sampled = self.sample_clients(server_round)
        if phase == Phase.DISTILL:
            cfg = self.phase_config(server_round, local_epochs=self.options.knowledge_epochs
                                    or self.budget.local_epochs)
            return [self.message(cid, MessageType.TRAIN, cfg,
                                 self.knowledge.get(cid, (self.knowledge_init, 0.0))[0],
                                 self.knowledge_roles)
                    for cid in self.record.sampled]
        messages = []
        for cid in self.record.sampled:
            self.sent[cid] = arch = self.personal[cid]
            cfg = self.phase_config(server_round, arch=arch.to_str(),
                                    train=self.options.train_scope)
            roles = [self.roles[i] for i, _ in self.supernet.regions(arch)]
            messages.append(self.message(cid, MessageType.TRAIN, cfg, self.supernet.slice(arch),
                                         roles))
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        updates, rows = [], []
        for metrics, arrays in self.train_replies(replies):
            cid = int(metrics["client_id"])
            updates.append((cid, arrays, self.weight(metrics)))
            rows.append({**self.train_row(metrics), "phase": int(self.plan.phase_of(server_round)),
                         "val_accuracy": float(metrics["val_accuracy"]),
                         **({"arch": self.sent[cid].to_str()} if cid in self.sent else {})})
        self.record.train = rows
        if not self.enough(len(updates)):
            return None, None
        if self.plan.phase_of(server_round) == Phase.DISTILL:
            self.knowledge.update({cid: (arrays, n) for cid, arrays, n in updates})
            self.record.server = self.distill(server_round)
        else:
            self.merge_subnets([(self.sent[cid], arrays, n) for cid, arrays, n in updates])
        return None, None

    def merge_subnets(self, updates: list[tuple[Arch, list[np.ndarray], float]]) -> None:
        """heteroFedAvg: each supernet entry averaged over the subnets containing it."""
        contributions = [(self.supernet.regions(a), arrays, n) for a, arrays, n in updates]
        self.supernet.load_state_arrays(
            overlap_average(self.supernet.state_arrays(), contributions))

    def teachers(self) -> list[tuple[nn.Module, float]]:
        out = []
        for cid in sorted(self.knowledge):
            arrays, weight = self.knowledge[cid]
            model = self.knowledge_fn()
            model.load_state_dict({k: torch.as_tensor(a) for k, a in
                                   zip(model.state_dict(), arrays, strict=True)})
            out.append((model.eval(), weight))
        return out

    def distill(self, server_round: int) -> dict[str, Any]:
        """Distil the knowledge ensemble into the supernet; the round's server report."""
        with torch_threads(self.options.distill.threads):
            return self._distill(server_round)

    def _distill(self, server_round: int) -> dict[str, Any]:
        tic, opts = time.perf_counter(), self.options.distill
        teachers = self.teachers()
        x, held = torch.as_tensor(self.transfer.distill), torch.as_tensor(self.transfer.heldout)
        probs = ensemble_probs(teachers, x, opts.temperature)
        loss = distill_supernet(self.supernet, x, probs, options=opts,
                                rng=numpy_rng(self.budget.seed, DISTILL_STREAM, server_round),
                                generator=torch_generator(self.budget.seed, DISTILL_STREAM,
                                                          server_round))
        held_probs = ensemble_probs(teachers, held, opts.temperature)
        report: dict[str, Any] = {"phase": int(Phase.DISTILL), "teachers": len(teachers),
                                  "distill_loss": loss}
        labelled = self.transfer.labelled
        for name, arch in (("max", self.space.max_arch()), ("min", self.space.min_arch())):
            net = calibrated_subnet(self.supernet, arch, x)
            report[f"kl_{name}"] = mean_kl(net, held, held_probs, opts.temperature)
            if labelled is not None:
                report[f"acc_{name}"] = accuracy(net, labelled)
        if labelled is not None:
            lab = ensemble_probs(teachers, torch.as_tensor(labelled.x), opts.temperature)
            report["acc_ensemble"] = float((lab.argmax(1).numpy() == labelled.y).mean())
        report["distill_seconds"] = time.perf_counter() - tic
        return report

    # -- evaluation: subnet measurements (phase 2), personalized evaluation (phase 3) ----------
    def search_archs(self, client_id: int, server_round: int) -> list[Arch]:
        """This round's share of the client's M subnets: distinct, within its budget."""
        step = self.plan.index_in_phase(server_round)
        total, rounds = self.options.predictor.archs_per_client, self.plan.search
        count = total // rounds + int(step < total % rounds)
        seen = {a for a, _ in self.pairs.get(client_id, [])}
        rng = numpy_rng(self.budget.seed, SEARCH_ARCHS, client_id, step)
        archs: list[Arch] = []
        for _ in range(100 * count):
            if len(archs) == count:
                break
            arch = self.space.sample(rng)
            if arch not in seen and arch not in archs and self.fits(client_id, arch):
                archs.append(arch)
        return archs or [self.space.min_arch()]

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        phase = self.plan.phase_of(server_round)
        if phase == Phase.SEARCH:
            messages = []
            for cid in range(self.budget.num_clients):
                if cid in self.excluded:
                    continue
                self.pending[cid] = archs = self.search_archs(cid, server_round)
                cover = covering_arch(self.supernet, archs)
                text = ARCH_SEPARATOR.join(a.to_str() for a in archs)
                cfg = self.phase_config(server_round, archs=text, split="val",
                                        cover=cover.to_str(),
                                        measure_on=self.options.predictor.measure_on,
                                        measure=self.options.predictor.measure)
                messages.append(self.message(cid, MessageType.EVALUATE, cfg,
                                             self.supernet.slice(cover)))
            return messages
        if phase == Phase.DISTILL or not self.is_eval_round(server_round):
            return []
        return [self.message(cid, MessageType.EVALUATE,
                             self.phase_config(server_round, arch=arch.to_str(), split="test",
                                               finetune_epochs=self.eval_finetune_epochs(
                                                   server_round, self.options.finetune_epochs),
                                               finetune=self.options.finetune_scope),
                             self.supernet.slice(arch))
                for cid, arch in sorted(self.personal.items())]

    def required_metrics(self, client_id: int, message_type: str) -> list[MetricSpec]:
        """Phase 2 evaluation replies: one validation accuracy per subnet sent, no test one."""
        if message_type == MessageType.EVALUATE and client_id in self.pending:
            specs = self.metric_specs()
            return [specs["client_id"], specs["num_examples"], specs["loss"],
                    *(MetricSpec(f"acc_{i}", float, 0.0, 1.0)
                      for i in range(len(self.pending[client_id])))]
        return super().required_metrics(client_id, message_type)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        if self.plan.phase_of(server_round) != Phase.SEARCH:
            return super().aggregate_evaluate(server_round, replies)
        for metrics, _ in self.ok_replies(replies):
            cid = int(metrics["client_id"])
            accs = [float(metrics[f"acc_{i}"]) for i in range(len(self.pending[cid]))]
            self.pairs.setdefault(cid, []).extend(zip(self.pending[cid], accs, strict=True))
            self.record.train.append({"client_id": cid, "phase": int(Phase.SEARCH),
                                      "measured": len(accs), "val_acc_mean": float(np.mean(accs)),
                                      "val_acc_max": float(np.max(accs))})
        if self.plan.is_last_of_phase(server_round):
            self.record.train = self.search_all()
            self.record.server = self.search_report()
        return None

    # -- phase 2 end: predictors and evolutionary search -----------------------------------------
    def search_all(self) -> list[dict[str, Any]]:
        pooled = [pair for cid in sorted(self.pairs) for pair in self.pairs[cid]]
        rows = []
        for cid in range(self.budget.num_clients):
            if cid in self.excluded:
                continue
            own = self.pairs.get(cid, [])
            rows.append(self.search_client(
                cid, own if len(own) >= self.options.predictor.min_pairs else pooled))
        return rows

    def search_client(self, client_id: int, pairs: list[tuple[Arch, float]]) -> dict[str, Any]:
        opts, seed = self.options.predictor, int_seed(self.budget.seed, PREDICTOR, client_id)
        seed %= 2**32

        def features(archs: list[Arch]) -> np.ndarray:
            return np.stack([arch_features(self.supernet, a) for a in archs])

        row: dict[str, Any] = {"client_id": client_id, "phase": int(Phase.SEARCH),
                               "pairs": len(self.pairs.get(client_id, [])),
                               "pooled": int(pairs is not self.pairs.get(client_id))}
        forest = None
        if len(pairs) >= 2:
            x, y = features([a for a, _ in pairs]), np.array([acc for _, acc in pairs])
            self.reports[client_id] = cross_validated_report(x, y, trees=opts.trees,
                                                             folds=opts.folds, seed=seed)
            row.update({k: getattr(self.reports[client_id], k) for k in REPORT_FIELDS})
            forest = fit_forest(x, y, trees=opts.trees, seed=seed)
        else:  # nobody measured anything: the largest subnet (by parameters) that fits
            log(WARNING, "HAPFNAS: no subnet measurements for client %d; searching by size",
                client_id)

        def predicted(genomes: list[Genome]) -> np.ndarray:
            assert forest is not None
            return np.asarray(forest.predict(features([self.space.arch_from_indices(g)
                                                       for g in genomes])), dtype=np.float64)

        def params(genomes: list[Genome]) -> np.ndarray:
            return np.array([float(self.supernet.cost(self.space.arch_from_indices(g)).params)
                             for g in genomes])

        by_forest = forest is not None and self.options.search_objective == "predictor"
        result = evolve(self.sizes, predicted if by_forest else params,
                        lambda g: self.fits(client_id, self.space.arch_from_indices(g)),
                        options=self.options.evolution,
                        rng=numpy_rng(self.budget.seed, EVOLUTION, client_id),
                        seeds=[a.indices for a, _ in self.pairs.get(client_id, [])])
        arch = self.space.arch_from_indices(result.best)
        if not self.fits(client_id, arch):  # evolve admits feasible genomes only
            raise RuntimeError(f"search returned an over-budget architecture for {client_id}")
        forecast = float(predicted([result.best])[0]) if forest is not None else float("nan")
        self.personal[client_id], self.predicted[client_id] = arch, forecast
        return {**row, "arch": arch.to_str(),
                "predicted_accuracy": forecast if forest is not None else None,
                "search_objective": "predictor" if by_forest else "params",
                "cost": self.cost_of(arch), "budget": self.budgets[client_id],
                "evaluated": result.evaluated}

    def search_report(self) -> dict[str, Any]:
        reports = list(self.reports.values())
        out: dict[str, Any] = {"phase": int(Phase.SEARCH), "clients": len(self.personal)}
        for key in REPORT_FIELDS:
            out[key] = float(np.mean([getattr(r, key) for r in reports])) if reports else None
        out["budget_violations"] = self.budget_violations()
        return out

    def personalized_arch(self, client_id: int) -> Arch:
        """Client ``client_id``'s searched architecture (``pfednas export``)."""
        if client_id not in self.personal:
            raise ValueError(f"client {client_id} has no personalized architecture yet: the "
                             "search (end of phase 2) has not run in this checkpoint")
        return self.personal[client_id]

    def budget_violations(self) -> int:
        return sum(not self.fits(cid, a) for cid, a in self.personal.items())

    def evaluation_details(self, client_id: int) -> dict[str, Any]:
        arch = self.personal[client_id]
        row = arch_details(arch, self.cost(arch), metric=self.options.budget.metric,
                           budget=self.budgets[client_id])
        return {**row, "over_budget": int(not row["within_budget"])}

    def summary_extra(self, records: list[RoundRecord]) -> dict[str, Any]:
        seconds = {p.name.lower(): 0.0 for p in Phase}
        for r in records:
            seconds[self.plan.phase_of(r.round).name.lower()] += r.wall_seconds
        return {**super().summary_extra(records), "hapfnas": {
            **self.search_report(),
            "phase_rounds": {p.name.lower(): self.plan.rounds(p) for p in Phase},
            "phase_seconds": seconds, "budget_metric": self.options.budget.metric,
            "transfer_source": self.options.transfer.source}}

    # -- checkpoints -----------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        k, d = self.budget.num_clients, len(self.sizes)
        out = {f"supernet_{i}": a for i, a in enumerate(self.supernet.state_arrays())}
        out["phase_rounds"] = np.array([self.plan.distill, self.plan.search, self.plan.hetero])
        out["knowledge_weight"] = np.zeros(k)
        for cid, (arrays, weight) in sorted(self.knowledge.items()):
            out["knowledge_weight"][cid] = weight
            out.update({f"knowledge_{cid}_{i}": a for i, a in enumerate(arrays)})
        pairs = [(cid, a, acc) for cid in sorted(self.pairs) for a, acc in self.pairs[cid]]
        out["pair_client"] = np.array([p[0] for p in pairs], dtype=np.int64)
        out["pair_indices"] = np.array([p[1].indices for p in pairs], dtype=np.int64).reshape(-1, d)
        out["pair_accuracy"] = np.array([p[2] for p in pairs], dtype=np.float64)
        out["personal_indices"] = np.full((k, d), -1, dtype=np.int64)
        out["predicted_accuracy"] = np.full(k, np.nan)
        out["predictor_report"] = np.full((k, 1 + len(REPORT_FIELDS)), np.nan)
        for cid, arch in self.personal.items():
            out["personal_indices"][cid] = arch.indices
            out["predicted_accuracy"][cid] = self.predicted[cid]
        for cid, r in self.reports.items():
            out["predictor_report"][cid] = [r.pairs, *(getattr(r, f) for f in REPORT_FIELDS)]
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        plan = tuple(int(v) for v in state["phase_rounds"])
        if plan != (self.plan.distill, self.plan.search, self.plan.hetero):
            raise ValueError(f"checkpoint phase rounds {plan} differ from this run's {self.plan}")
        n = len(self.supernet.state_keys())
        self.supernet.load_state_arrays([state[f"supernet_{i}"] for i in range(n)])
        self.knowledge = {cid: ([state[f"knowledge_{cid}_{i}"]
                                 for i in range(len(self.knowledge_init))], float(w))
                          for cid, w in enumerate(state["knowledge_weight"]) if w > 0}
        self.pairs = {}
        for cid, idx, acc in zip(state["pair_client"], state["pair_indices"],
                                 state["pair_accuracy"], strict=True):
            self.pairs.setdefault(int(cid), []).append(
                (self.space.arch_from_indices(idx), float(acc)))
        self.personal, self.predicted, self.reports = {}, {}, {}
        for cid, idx in enumerate(state["personal_indices"]):
            if idx[0] >= 0:
                self.personal[cid] = self.space.arch_from_indices(idx)
                self.predicted[cid] = float(state["predicted_accuracy"][cid])
        for cid, row in enumerate(state["predictor_report"]):
            if not np.isnan(row[0]):
                self.reports[cid] = PredictorReport(int(row[0]), *(float(v) for v in row[1:]))
