"""HAPFNAS (Yang & Liu, "Heterogeneity-Aware Personalized Federated NAS", Entropy 2025).

Three phases over the federation's rounds (``pfednas.nas.phases.PhasePlan``):

1. **Distillation.** N sampled clients train their lightweight knowledge model
   (``clients/hapfnas.py``) and upload it — never the supernet. The server keeps
   each client's latest knowledge model and distils their ensemble into the
   supernet on its transfer set with the sandwich rule
   (:mod:`pfednas.strategies.hapfnas_distill`, :mod:`pfednas.nas.distill`).
   The round's ``server`` record holds the KL of the largest / smallest subnet to
   the ensemble on held-out transfer inputs and their labelled accuracy.
2. **Predictors and search.** Every client evaluates M sampled subnets of the
   distilled supernet (within its budget) on its validation split (with
   ``predictor.measure_on=train_val`` also on the train split, which the distilled
   supernet never saw either); only the subnet that covers its sampled ones travels
   (:func:`pfednas.nas.covering.covering_arch`), never the whole supernet unless a sample
   needs it. After the last search round the server fits one random forest per client and
   runs a predictor-guided evolutionary search under the client's budget
   (:mod:`pfednas.strategies.hapfnas_search`, which also keeps this phase's state).
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
the server knows a bound for it (else equal). A robust ``federation.aggregation`` takes
each sample's teacher probabilities by that rule over the knowledge models
(:func:`pfednas.nas.distill.ensemble_probs`), and each merge's entries over their subnets.

Budgets: in a simulation the run's client profiles (``federation.hardware``, the same
devices for every method: :func:`pfednas.methods.client_profiles`), in
``budget_metric``: ``U(memory_low, memory_high) ×`` the largest subnet's cost in it
(params / FLOPs / training memory from ``Supernet.cost``), the same seeded draw as the
memory budgets. In a deployment each client's budget is the memory budget its node
claims (``budget_metric`` must be memory there); a client that no
subnet fits is excluded with the reason in ``summary.json``. Every state a later
phase needs is in the checkpoint; the phase itself is a function of the round number.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from flwr.app import Message, MessageType
from torch import nn

from pfednas.hardware.profile import exclusions, fits
from pfednas.nas.covering import covering_arch
from pfednas.nas.distill import TransferSet
from pfednas.nas.merge import overlap_merge
from pfednas.nas.phases import Phase
from pfednas.options.hapfnas import (  # noqa: F401 (re-exported)
    HAPFNASMeasure,
    HAPFNASOptions,
    HAPFNASPhase,
    TransferOptions,
)
from pfednas.records import RoundRecord, StageResult, arch_details, cost_in
from pfednas.search import Arch, Cost, Supernet
from pfednas.search.memory_bound import budgeted_cost
from pfednas.seeding import HAPFNAS_SEARCH_ARCHS, numpy_rng
from pfednas.strategies.base import Budget, PersonalizedStrategy
from pfednas.strategies.budget import Roster
from pfednas.strategies.hapfnas_distill import distill_round
from pfednas.strategies.hapfnas_search import SearchState, search_all
from pfednas.strategies.outgoing import Outgoing
from pfednas.wire.messages import SPLIT, TEST_SPLIT, VAL_SPLIT, Sgd, SubnetEvaluation, SubnetTrain
from pfednas.wire.roles import state_roles
from pfednas.wire.validation import MetricSpec

ARCH_SEPARATOR = ";"


class HAPFNASStrategy(PersonalizedStrategy):
    TRAIN_REQUIRES = ("val_accuracy",)

    def __init__(self, *, budget: Budget, sgd: Sgd, supernet: Supernet,
                 options: HAPFNASOptions, transfer: TransferSet,
                 knowledge_fn: Callable[[], nn.Module],
                 roster: Roster | None = None,
                 client_budgets: Mapping[int, float] | None = None) -> None:
        """``profiles``: a simulation's (:func:`pfednas.methods.client_profiles`; a
        deployment's come from its nodes); ``client_budgets``: each client's budget in
        ``options.budget_metric`` where that is not memory (memory: the profiles')."""
        super().__init__(budget=budget, sgd=sgd, roster=roster)
        self.supernet, self.space, self.options = supernet, supernet.space, options
        self.finetune_epochs = options.finetune_epochs
        self.plan = options.plan(budget.num_rounds)
        self.transfer, self.knowledge_fn = transfer, knowledge_fn
        knowledge = knowledge_fn()
        self.knowledge_init = [t.detach().numpy().copy() for t in knowledge.state_dict().values()]
        self.knowledge_roles = state_roles(knowledge)
        self.roles = state_roles(supernet.net)  # of each supernet tensor
        self.sizes = [len(d.choices) for d in self.space.dimensions]
        metric = options.budget_metric
        if budget.deployment and metric != "memory":
            raise ValueError("in a deployment a client's budget is the memory budget its "
                             f"node claims: method.budget_metric must be memory, got {metric!r}")
        # client id -> its budget in budget_metric
        self.client_budgets: dict[int, float] = (
            dict(client_budgets) if client_budgets is not None
            else {cid: p.memory_bytes for cid, p in self.profiles.items()})
        if not budget.deployment:
            self.check_budgets()
        self.knowledge: dict[int, tuple[list[np.ndarray], float]] = {}
        self.search = SearchState()  # phase 2: the measured pairs, the searched archs

    def check_budgets(self) -> None:
        """A simulation: every client has a budget, and the smallest subnet fits them all."""
        missing = sorted(set(range(self.budget.num_clients)) - set(self.client_budgets))
        if missing:
            raise ValueError(f"HAPFNAS: no budget for client(s) {missing[:10]} (a simulation's "
                             "strategy takes the run's client profiles)")
        smallest, lowest = self.cost_of(self.space.min_arch()), min(self.client_budgets.values())
        if not fits(lowest, smallest):
            raise ValueError(f"the smallest subnet's {self.options.budget_metric} "
                             f"({smallest:.0f}) exceeds the lowest client budget ({lowest:.0f}); "
                             "raise federation.hardware.memory_low")

    def profiles_bound(self) -> None:
        """A deployment: each client's budget is its claimed memory budget; a client that
        no subnet fits is excluded."""
        self.client_budgets = {cid: p.memory_bytes for cid, p in self.profiles.items()}
        self.excluded = exclusions(self.profiles, self.cost_of(self.space.min_arch()),
                                   lambda p: p.memory_bytes)

    # -- helpers -------------------------------------------------------------------------------
    def cost(self, arch: Arch) -> Cost:
        """``arch``'s cost as a budget sees it (real bytes in a deployment: the calibrated
        upper bound; :func:`pfednas.search.memory_bound.budgeted_cost`)."""
        batch = self.sgd.batch_size
        return budgeted_cost(self.supernet.cost(arch, batch_size=batch), self.space.name,
                             real_bytes=self.budget.deployment)

    def cost_of(self, arch: Arch) -> float:
        return cost_in(self.cost(arch), self.options.budget_metric)

    def fits(self, client_id: int, arch: Arch) -> bool:
        return fits(self.client_budgets[client_id], self.cost_of(arch))

    def phase_config(self, server_round: int, **extra: Any) -> dict[str, Any]:
        phase = HAPFNASPhase(int(self.plan.phase_of(server_round)))
        return self.round_config(server_round, **phase.to_config(), **extra)

    # -- training: knowledge models (phase 1) and personalized subnets (phase 3) ---------------
    def configure_train(self, server_round: int) -> Outgoing[dict[int, Arch]]:
        """Phase 1: each sampled client's knowledge model; phase 3: its subnet (the plan:
        each client's architecture); phase 2 trains nothing."""
        phase = self.plan.phase_of(server_round)
        if phase == Phase.SEARCH:
            return Outgoing()
        sampled = self.train_clients(server_round)
        if phase == Phase.DISTILL:
            cfg = self.phase_config(server_round, local_epochs=self.options.knowledge_epochs
                                    or self.budget.local_epochs)
            return Outgoing([self.message(
                cid, MessageType.TRAIN, cfg,
                self.knowledge.get(cid, (self.knowledge_init, 0.0))[0], self.knowledge_roles)
                for cid in sampled])
        messages, archs = [], {}
        for cid in sampled:
            archs[cid] = arch = self.search.personal[cid]
            cfg = self.phase_config(server_round, **SubnetTrain(arch.to_str()).to_config())
            roles = [self.roles[i] for i, _ in self.supernet.regions(arch)]
            messages.append(self.message(cid, MessageType.TRAIN, cfg, self.supernet.slice(arch),
                                         roles))
        return Outgoing(messages, archs)

    def train_clients(self, server_round: int) -> list[int]:
        """N sampled clients, but none in phase 2 (its rounds only evaluate)."""
        if self.plan.phase_of(server_round) == Phase.SEARCH:
            return []
        return self.sample_clients(server_round)

    def aggregate_train(self, server_round: int, replies: Iterable[Message],
                        sent: Outgoing[Any] | None = None) -> StageResult:
        archs: dict[int, Arch] = {} if sent is None else sent.plan_or({})
        updates, rows = [], []
        for metrics, arrays in self.train_replies(replies):
            cid = int(metrics["client_id"])
            updates.append((cid, arrays, self.weight(metrics)))
            rows.append({**self.train_row(metrics), "phase": int(self.plan.phase_of(server_round)),
                         "val_accuracy": float(metrics["val_accuracy"]),
                         **({"arch": archs[cid].to_str()} if cid in archs else {})})
        if not self.enough(len(updates)):
            return StageResult(train=rows)
        if self.plan.phase_of(server_round) == Phase.DISTILL:
            self.knowledge.update({cid: (arrays, n) for cid, arrays, n in updates})
            return StageResult(train=rows, server=self.distill(server_round))
        kept = self.merge_subnets([(archs[cid], arrays, n) for cid, arrays, n in updates])
        self.screened(rows, kept)
        return StageResult(train=rows)

    def merge_subnets(self, updates: list[tuple[Arch, list[np.ndarray], float]]) -> list[bool]:
        """heteroFedAvg: each supernet entry averaged over the subnets containing it (or by a
        robust rule); which updates the rule's screen kept."""
        contributions = [(self.supernet.regions(a), arrays, n) for a, arrays, n in updates]
        merged = overlap_merge(self.supernet.state_arrays(), contributions,
                               self.budget.aggregation)
        self.supernet.load_state_arrays(merged.arrays)
        return merged.kept

    def distill(self, server_round: int) -> dict[str, Any]:
        """Distil the knowledge ensemble into the supernet; the round's server report."""
        return distill_round(self.supernet, self.transfer, self.knowledge, self.knowledge_fn,
                             self.options.distill, seed=self.budget.seed,
                             server_round=server_round, rule=self.budget.aggregation)

    # -- evaluation: subnet measurements (phase 2), personalized evaluation (phase 3) ----------
    def search_archs(self, client_id: int, server_round: int) -> list[Arch]:
        """This round's share of the client's M subnets: distinct, within its budget."""
        step = self.plan.index_in_phase(server_round)
        total, rounds = self.options.predictor.archs_per_client, self.plan.search
        count = total // rounds + int(step < total % rounds)
        seen = {a for a, _ in self.search.pairs.get(client_id, [])}
        rng = numpy_rng(self.budget.seed, HAPFNAS_SEARCH_ARCHS, client_id, step)
        archs: list[Arch] = []
        for _ in range(100 * count):
            if len(archs) == count:
                break
            arch = self.space.sample(rng)
            if arch not in seen and arch not in archs and self.fits(client_id, arch):
                archs.append(arch)
        return archs or [self.space.min_arch()]

    def configure_evaluate(self, server_round: int) -> Outgoing[dict[int, list[Arch]]]:
        """Phase 2: each client's share of subnets to measure (the plan); phase 3: its
        personalized subnet's evaluation."""
        phase = self.plan.phase_of(server_round)
        if phase == Phase.SEARCH:
            messages, pending = [], {}
            for cid in range(self.budget.num_clients):
                if cid in self.excluded:
                    continue
                pending[cid] = archs = self.search_archs(cid, server_round)
                cover = covering_arch(self.supernet, archs)
                text = ARCH_SEPARATOR.join(a.to_str() for a in archs)
                measure = HAPFNASMeasure(archs=text, cover=cover.to_str(),
                                         measure_on=self.options.predictor.measure_on)
                cfg = self.phase_config(server_round, **measure.to_config(),
                                        **{SPLIT: VAL_SPLIT})
                messages.append(self.message(cid, MessageType.EVALUATE, cfg,
                                             self.supernet.slice(cover),
                                             requires=self.measured_metrics(len(archs))))
            return Outgoing(messages, pending)
        if phase == Phase.DISTILL or not self.is_eval_round(server_round):
            return Outgoing()
        return Outgoing([self.message(cid, MessageType.EVALUATE,
                             self.phase_config(server_round,
                                               **SubnetEvaluation(arch.to_str(),
                                                                  TEST_SPLIT).to_config(),
                                               **self.finetune_config(
                                                   server_round, self.options.finetune_scope)),
                             self.supernet.slice(arch))
                for cid, arch in sorted(self.search.personal.items())])

    def measured_metrics(self, count: int) -> list[MetricSpec]:
        """A phase-2 reply's metrics: one validation accuracy per subnet sent, no test one."""
        specs = self.metric_specs()
        return [specs["client_id"], specs["num_examples"], specs["loss"],
                *(MetricSpec(f"acc_{i}", float, 0.0, 1.0) for i in range(count))]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message],
                           sent: Outgoing[Any] | None = None) -> StageResult:
        """Phase 2: each client's measured subnets (as ``train`` rows), and after the last
        search round every client's searched architecture; else the base's evaluation."""
        if self.plan.phase_of(server_round) != Phase.SEARCH:
            return super().aggregate_evaluate(server_round, replies, sent)
        pending: dict[int, list[Arch]] = {} if sent is None else sent.plan_or({})
        rows = []
        for metrics, _ in self.ok_replies(replies):
            cid = int(metrics["client_id"])
            accs = [float(metrics[f"acc_{i}"]) for i in range(len(pending[cid]))]
            self.search.pairs.setdefault(cid, []).extend(zip(pending[cid], accs, strict=True))
            rows.append({"client_id": cid, "phase": int(Phase.SEARCH), "measured": len(accs),
                         "val_acc_mean": float(np.mean(accs)),
                         "val_acc_max": float(np.max(accs)),
                         "forward_macs": float(metrics.get("forward_macs", 0.0))})
        if self.plan.is_last_of_phase(server_round):
            forward = {r["client_id"]: r["forward_macs"] for r in rows}
            searched = [{**row, "forward_macs": forward.get(row["client_id"], 0.0)}
                        for row in self.search_all()]
            return StageResult(train=searched, server=self.search_report())
        return StageResult(train=rows)

    # -- phase 2 end: predictors and evolutionary search -----------------------------------------
    def search_all(self) -> list[dict[str, Any]]:
        """Every client's architecture (:mod:`pfednas.strategies.hapfnas_search`); its rows."""
        clients = [c for c in range(self.budget.num_clients) if c not in self.excluded]
        results = search_all(self.supernet, self.search.pairs, clients, cost_of=self.cost_of,
                             budgets=self.client_budgets, options=self.options,
                             seed=self.budget.seed)
        self.search.adopt(results)
        return [r.row for r in results]

    def search_report(self) -> dict[str, Any]:
        return self.search.report(self.budget_violations())

    def personalized_arch(self, client_id: int) -> Arch:
        """Client ``client_id``'s searched architecture (``pfednas export``)."""
        if client_id not in self.search.personal:
            raise ValueError(f"client {client_id} has no personalized architecture yet: the "
                             "search (end of phase 2) has not run in this checkpoint")
        return self.search.personal[client_id]

    def budget_violations(self) -> int:
        return sum(not self.fits(cid, a) for cid, a in self.search.personal.items())

    def evaluation_details(self, client_id: int) -> dict[str, Any]:
        arch = self.search.personal[client_id]
        row = arch_details(arch, self.cost(arch), metric=self.options.budget_metric,
                           budget=self.client_budgets[client_id])
        return {**row, "over_budget": int(not row["within_budget"])}

    def summary_extra(self, records: list[RoundRecord]) -> dict[str, Any]:
        seconds = {p.name.lower(): 0.0 for p in Phase}
        for r in records:
            seconds[self.plan.phase_of(r.round).name.lower()] += r.wall_seconds
        return {**super().summary_extra(records), "hapfnas": {
            **self.search_report(),
            "phase_rounds": {p.name.lower(): self.plan.rounds(p) for p in Phase},
            "phase_seconds": seconds, "budget_metric": self.options.budget_metric,
            "transfer_source": self.options.transfer.source}}

    # -- checkpoints -----------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        out = {f"supernet_{i}": a for i, a in enumerate(self.supernet.state_arrays())}
        out["phase_rounds"] = np.array([self.plan.distill, self.plan.search, self.plan.hetero])
        out["knowledge_weight"] = np.zeros(self.budget.num_clients)
        for cid, (arrays, weight) in sorted(self.knowledge.items()):
            out["knowledge_weight"][cid] = weight
            out.update({f"knowledge_{cid}_{i}": a for i, a in enumerate(arrays)})
        return {**out, **self.search.to_arrays(self.budget.num_clients, len(self.sizes))}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        plan = tuple(int(v) for v in state["phase_rounds"])
        if plan != (self.plan.distill, self.plan.search, self.plan.hetero):
            raise ValueError(f"checkpoint phase rounds {plan} differ from this run's {self.plan}")
        n = len(self.supernet.state_keys())
        self.supernet.load_state_arrays([state[f"supernet_{i}"] for i in range(n)])
        self.knowledge = {cid: ([state[f"knowledge_{cid}_{i}"]
                                 for i in range(len(self.knowledge_init))], float(w))
                          for cid, w in enumerate(state["knowledge_weight"]) if w > 0}
        self.search = SearchState.from_arrays(state, self.space)
