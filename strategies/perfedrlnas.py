"""PerFedRLNAS (Yao & Li, "One-for-All Personalized Federated NAS").

The server holds the supernet and one softmax policy per client (eqs. 5–7,
``pfednas.nas.policy``). Each round it samples N clients, samples an
architecture for each from its policy, and sends **only that subnet's arrays**
with the architecture string. A subnet whose estimated training memory exceeds
the client's budget is not sent at all (eq. 9: φ_i = 1, Acc_i = 0, RT_i = the
round's maximum). Replies carry trained arrays, validation accuracy (the reward
signal — the paper uses local test accuracy; pfednas keeps the test split out
of the search) and training seconds. Rewards follow eq. 8 (``pfednas.nas.reward``);
the subnets are merged by the overlap-aware average (``pfednas.nas.merge``), each
client weighted as ``federation.weighting`` says (``uniform``: the paper's count of the
covering clients): supernet entries nobody covered keep their value — the Plato reference
merges into a freshly initialised proxy instead.

Personalized model of client i: the subnet at argmax α_i with the supernet's
weights, no further training (BatchNorm statistics optionally re-estimated on
the client's train split). With ``finetune_epochs`` = F > 0 (the benchmark
protocol's "+FT", not in the paper) each client also fine-tunes that slice for F
epochs before its test evaluation; rows then carry both accuracies
(``accuracy_no_ft`` is the paper's).

Optional exploitation (``exploit_rounds``, not in the paper; off by default): in the
last rounds each sampled client trains its personalized architecture (the argmax
of its policy within budget, as evaluated) and no policy is updated, so the slice
the client keeps is the one the last rounds trained (search, then retrain, as
HAPFNAS's heteroFedAvg phase and most weight-sharing NAS do).

Clients held out of training ("new clients") get theirs by search-only rounds at
the end: sample, evaluate on their validation split, update their policy; nothing
is trained or uploaded.

Hardware: each client's profile (``self.profiles``, :mod:`pfednas.hardware.profile`) gives
its memory budget (eq. 9) and, in a simulation, the round time RT_i by the cost
model (the subnet's training MACs at the client's speed + its bytes over its link).
In a deployment profiles are what the nodes claim on first contact, and RT_i is the
server's own clock, send → reply (the paper measures it so); ``round_time: measured``
asks for that clock in a simulation too. ``summary.json`` says which
(``round_time_source``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Message, MessageType
from flwr.serverapp import Grid

from pfednas.hardware.profile import exclusions
from pfednas.nas.merge import overlap_merge
from pfednas.nas.policy import (
    PolicyState,
    argmax_indices,
    entropy,
    log_probability,
    probabilities,
    reinforce_update,
)
from pfednas.nas.reward import Outcome, round_rewards, simulated_round_time, training_seconds
from pfednas.options.perfedrlnas import PerFedRLNASOptions  # noqa: F401 (re-exported)
from pfednas.records import RoundRecord, StageResult, arch_details
from pfednas.search import Arch, Cost, Supernet
from pfednas.search.memory_bound import budgeted_cost
from pfednas.seeding import (
    ARCH_FALLBACK,
    ARCH_NEW_CLIENT_RANDOM,
    ARCH_NEW_CLIENT_SEARCH,
    ARCH_SAMPLING,
    ARCH_SEARCH,
    numpy_rng,
)
from pfednas.strategies.base import Budget, PersonalizedStrategy
from pfednas.strategies.budget import Roster
from pfednas.strategies.outgoing import Letter, Outgoing
from pfednas.wire.messages import TEST_SPLIT, VAL_SPLIT, Sgd, SubnetEvaluation, SubnetTrain
from pfednas.wire.roles import state_roles

FALLBACK_SAMPLES = 64
COST_MODEL, SERVER_CLOCK = "cost_model", "server_clock"  # sources of the round time RT_i


@dataclass
class TrainPlan:
    """What a training round sent: each client's subnet and its bytes, and the clients whose
    sampled subnet is over their budget (sent nothing, penalised by eq. 9)."""

    subnets: dict[int, tuple[Arch, int]] = field(default_factory=dict)
    over_budget: dict[int, Arch] = field(default_factory=dict)


class PerFedRLNASStrategy(PersonalizedStrategy):
    TRAIN_REQUIRES = ("val_accuracy", "accuracy", "train_seconds")

    def __init__(self, *, budget: Budget, sgd: Sgd, supernet: Supernet,
                 options: PerFedRLNASOptions,
                 roster: Roster | None = None) -> None:
        """``profiles``: a simulation's (:func:`pfednas.methods.client_profiles`; a
        deployment's nodes claim theirs on first contact)."""
        super().__init__(budget=budget, sgd=sgd, roster=roster)
        if options.new_clients >= budget.num_clients:
            raise ValueError("new_clients must leave at least one training client")
        if options.exploit_rounds > budget.num_rounds:
            raise ValueError(f"exploit_rounds ({options.exploit_rounds}) exceeds num_rounds "
                             f"({budget.num_rounds})")
        self.supernet, self.space, self.options = supernet, supernet.space, options
        self.finetune_epochs = options.finetune_epochs
        self.roles = state_roles(supernet.net)  # of each supernet tensor
        self.sizes = [len(d.choices) for d in self.space.dimensions]
        self.trainable = budget.num_clients - options.new_clients
        self.policies = [PolicyState.uniform(self.sizes) for _ in range(budget.num_clients)]
        self.history: dict[int, float] = {}
        self._memory: dict[Arch, int] = {}
        missing = set(range(budget.num_clients)) - set(self.profiles)
        if missing and not budget.deployment:
            raise ValueError(f"PerFedRLNAS: no hardware profile for client(s) "
                             f"{sorted(missing)[:10]} (a simulation's strategy takes the run's "
                             "client profiles)")
        self.new_client_report: dict[str, Any] = {}

    # -- helpers -------------------------------------------------------------------------------
    def cost(self, arch: Arch) -> Cost:
        """``arch``'s cost as a budget sees it (real bytes in a deployment: the calibrated
        upper bound; :func:`pfednas.search.memory_bound.budgeted_cost`)."""
        cost = self.supernet.cost(arch, batch_size=self.sgd.batch_size)
        return budgeted_cost(cost, self.space.name, real_bytes=self.budget.deployment)

    def memory(self, arch: Arch) -> int:
        if arch not in self._memory:
            self._memory[arch] = self.cost(arch).memory_bytes
        return self._memory[arch]

    def fits(self, client_id: int, arch: Arch) -> bool:
        """Whether ``arch``'s training fits the client's memory budget (eq. 9)."""
        return self.profiles[client_id].fits(self.memory(arch))

    def sample_arch(self, client_id: int, server_round: int, phase: int = ARCH_SEARCH
                    ) -> Arch:
        if phase == ARCH_SEARCH and self.exploiting(server_round):
            return self.personalized_arch(client_id)
        rng = numpy_rng(self.budget.seed, ARCH_SAMPLING, phase, server_round, client_id)
        return self.space.sample(rng, probabilities(self.policies[client_id].logits, self.sizes))

    def exploiting(self, server_round: int) -> bool:
        return server_round > self.budget.num_rounds - self.options.exploit_rounds

    def searching(self, server_round: int) -> bool:
        """Whether this training round updates the policies (not in exploitation)."""
        return not self.exploiting(server_round)

    def profiles_bound(self) -> None:
        """A deployment: exclude the clients whose claimed budget no subnet fits."""
        self.excluded = exclusions(self.profiles, self.memory(self.space.min_arch()),
                                   lambda p: p.memory_bytes)

    def personalized_arch(self, client_id: int) -> Arch:
        """argmax α_i; if that exceeds the client's memory budget, its most probable
        architecture within budget among ``FALLBACK_SAMPLES`` policy samples, else the
        smallest architecture."""
        best = self.space.arch_from_indices(
            argmax_indices(self.policies[client_id].logits, self.sizes))
        if self.fits(client_id, best):
            return best
        logits = self.policies[client_id].logits
        rng = numpy_rng(self.budget.seed, ARCH_SAMPLING, ARCH_FALLBACK, client_id)
        probs = probabilities(logits, self.sizes)
        fitting = {a for a in (self.space.sample(rng, probs) for _ in range(FALLBACK_SAMPLES))
                   if self.fits(client_id, a)}
        if not fitting:
            return self.space.min_arch()
        return max(sorted(fitting, key=lambda a: a.indices),
                   key=lambda a: log_probability(logits, self.sizes, a.indices))

    def update_policies(self, outcomes: dict[int, Outcome], archs: Mapping[int, Arch],
                        lambda_time: float) -> dict[int, float]:
        rewards, self.history = round_rewards(outcomes, self.history, lambda_time,
                                              robust=self.budget.deployment)
        for cid, reward in rewards.items():
            self.policies[cid] = reinforce_update(self.policies[cid], self.sizes,
                                                  archs[cid].indices, reward,
                                                  self.options.policy)
        return rewards

    # -- training --------------------------------------------------------------------------------
    def configure_train(self, server_round: int) -> Outgoing[TrainPlan]:
        """Each sampled client's subnet from its policy; one over its budget is sent
        nothing (eq. 9), the plan says which."""
        plan, messages = TrainPlan(), []
        for cid in self.train_clients(server_round):
            arch = self.sample_arch(cid, server_round)
            if not self.fits(cid, arch):
                plan.over_budget[cid] = arch
                continue
            subnet = self.supernet.slice(arch)
            plan.subnets[cid] = (arch, sum(a.nbytes for a in subnet))
            cfg = self.round_config(server_round, **SubnetTrain(arch.to_str()).to_config())
            roles = [self.roles[i] for i, _ in self.supernet.regions(arch)]
            messages.append(self.message(cid, MessageType.TRAIN, cfg, subnet, roles))
        return Outgoing(messages, plan)

    def train_clients(self, server_round: int) -> list[int]:
        """N of the clients that train (new clients only search, at the end)."""
        return self.sample_clients(server_round, population=self.trainable)

    @property
    def round_time_source(self) -> str:
        """server_clock in a deployment or with ``round_time: measured``, else cost_model."""
        measured = self.options.round_time == "measured" or self.budget.deployment
        return SERVER_CLOCK if measured else COST_MODEL

    def round_time(self, cid: int, metrics: dict[str, Any], sent: tuple[Arch, int],
                   bytes_up: int) -> float:
        """RT_i: the server's clock, send → reply, or the server's cost model on the
        client's profile: the subnet's training MACs at the client's speed + its bytes over
        its link; the client's own ``train_seconds`` never enter it."""
        if self.round_time_source == SERVER_CLOCK:
            return self.reply_seconds.get(self.node_of[cid], float(self.budget.round_timeout))
        profile, (arch, bytes_down) = self.profiles[cid], sent
        compute = training_seconds(
            forward_macs_per_sample=self.supernet.cost(arch).flops,
            samples=int(metrics["num_examples"]), epochs=self.budget.local_epochs,
            macs_per_second=profile.macs_per_second)
        return simulated_round_time(compute_seconds=compute, speed_factor=profile.speed_factor,
                                    bytes_moved=bytes_down + bytes_up,
                                    bandwidth_bps=profile.bandwidth_bps)

    def aggregate_train(self, server_round: int, replies: Iterable[Message],
                        sent: Outgoing[Any] | None = None) -> StageResult:
        """Rewards, policy steps and the merge. Over-budget clients (eq. 9) are penalised
        every round, also when too few valid replies came to change anything else."""
        plan = sent.plan if sent is not None and isinstance(sent.plan, TrainPlan) else None
        if plan is None:
            raise ValueError("PerFedRLNAS aggregates what configure_train sent: pass its plan")
        outcomes: dict[int, Outcome] = {}
        archs: dict[int, Arch] = dict(plan.over_budget)
        contributions, contributors = [], []
        rows: dict[int, dict[str, Any]] = {}
        for metrics, arrays in self.train_replies(replies):
            cid = int(metrics["client_id"])
            if cid not in plan.subnets:
                continue
            arch = plan.subnets[cid][0]
            contributions.append((self.supernet.regions(arch), arrays, self.weight(metrics)))
            contributors.append(cid)
            rt = self.round_time(cid, metrics, plan.subnets[cid], sum(a.nbytes for a in arrays))
            outcomes[cid], archs[cid] = Outcome(float(metrics["val_accuracy"]), rt), arch
            rows[cid] = {**self.train_row(metrics), "arch": arch.to_str(), "round_time": rt,
                         "val_accuracy": float(metrics["val_accuracy"]),
                         "accuracy": float(metrics["accuracy"])}
        replied = set(outcomes)
        if plan.subnets and not self.enough(len(contributions)):
            outcomes, contributions, rows = {}, [], {}
        for cid, arch in plan.over_budget.items():
            outcomes[cid] = Outcome(0.0, 0.0, over_budget=True)
            rows[cid] = {"client_id": cid, "arch": arch.to_str(), "over_budget": 1}
        rewards = (self.update_policies(outcomes, archs, self.options.lambda_time)
                   if self.searching(server_round) else {})
        rewards.update(self.penalise_failures(
            {cid: plan.subnets[cid][0] for cid in set(plan.subnets) - replied}, rows))
        for cid, row in rows.items():
            row["reward"] = rewards.get(cid, 0.0)
            row["policy_entropy"] = entropy(self.policies[cid].logits, self.sizes)
        if contributions:
            merged = overlap_merge(self.supernet.state_arrays(), contributions,
                                   self.budget.aggregation)
            self.supernet.load_state_arrays(merged.arrays)
            self.screened([rows[cid] for cid in contributors], merged.kept)
        return StageResult(train=[rows[c] for c in sorted(rows)])

    def penalise_failures(self, failed: Mapping[int, Arch], rows: dict[int, dict[str, Any]]
                          ) -> dict[int, float]:
        """Clients that sent nothing valid (each with the subnet it was sent): no policy
        update, or ``failure_reward`` if set."""
        rewards: dict[int, float] = {}
        for cid in sorted(failed):
            rows[cid] = {"client_id": cid, "arch": failed[cid].to_str(), "failed": 1}
            if self.options.failure_reward is not None:
                rewards[cid] = self.options.failure_reward
                self.policies[cid] = reinforce_update(self.policies[cid], self.sizes,
                                                      failed[cid].indices,
                                                      self.options.failure_reward,
                                                      self.options.policy)
        return rewards

    # -- personalized evaluation -------------------------------------------------------------------
    def eval_message(self, cid: int, arch: Arch, server_round: int, split: str) -> Letter:
        tune = (self.finetune_config(server_round, self.options.finetune_scope)
                if split == TEST_SPLIT else {})
        cfg = self.round_config(server_round, **SubnetEvaluation(arch.to_str(), split).to_config(),
                               **tune)
        return self.message(cid, MessageType.EVALUATE, cfg, self.supernet.slice(arch))

    def configure_evaluate(self, server_round: int) -> Outgoing[Any]:
        if not self.is_eval_round(server_round):
            return Outgoing()
        return Outgoing([self.eval_message(cid, self.personalized_arch(cid), server_round,
                                           TEST_SPLIT)
                         for cid in range(self.trainable) if cid not in self.excluded])

    def evaluation_details(self, client_id: int) -> dict[str, Any]:
        arch = self.personalized_arch(client_id)
        return arch_details(arch, self.cost(arch), metric="memory",
                            budget=self.profiles[client_id].memory_bytes)

    # -- new clients: search-only rounds after training ----------------------------------------
    def finish_round(self, grid: Grid, server_round: int) -> None:
        if server_round != self.budget.num_rounds or self.options.new_clients == 0:
            return
        new = [c for c in range(self.trainable, self.budget.num_clients)
               if c not in self.excluded]
        for search_round in range(1, self.options.new_client_rounds + 1):
            archs = {cid: self.sample_arch(cid, search_round, ARCH_NEW_CLIENT_SEARCH)
                     for cid in new}
            outcomes = {cid: Outcome(0.0, 0.0, over_budget=True) for cid, a in archs.items()
                        if not self.fits(cid, a)}
            letters = [self.eval_message(cid, a, server_round, VAL_SPLIT)
                       for cid, a in archs.items() if cid not in outcomes]
            for metrics, _ in self.ok_replies(self.send(grid, Outgoing(letters))):
                if int(metrics["client_id"]) in archs:
                    outcomes[int(metrics["client_id"])] = Outcome(float(metrics["accuracy"]),
                                                                  0.0)
            self.update_policies(outcomes, archs, lambda_time=0.0)
        self.new_client_report = self.evaluate_new_clients(grid, new, server_round)

    def evaluate_new_clients(self, grid: Grid, new: list[int], server_round: int
                             ) -> dict[str, Any]:
        candidates = {
            "searched": {cid: self.personalized_arch(cid) for cid in new},
            "random": {cid: self.space.sample(numpy_rng(self.budget.seed, ARCH_SAMPLING,
                                                        ARCH_NEW_CLIENT_RANDOM, cid))
                       for cid in new},
            "largest": {cid: self.space.max_arch() for cid in new},
        }
        report: dict[str, Any] = {"clients": new, "search_rounds": self.options.new_client_rounds}
        for name, archs in candidates.items():
            letters = [self.eval_message(cid, a, server_round, TEST_SPLIT)
                       for cid, a in archs.items()]
            accs = [float(m["accuracy"])
                    for m, _ in self.ok_replies(self.send(grid, Outgoing(letters)))]
            report[f"{name}_acc_mean"] = float(np.mean(accs)) if accs else float("nan")
        return report

    def summary_extra(self, records: list[RoundRecord]) -> dict[str, Any]:
        """The base's entries, the source of RT_i and, where new clients searched at the
        end, their report (``new_clients``)."""
        new = {"new_clients": self.new_client_report} if self.new_client_report else {}
        return {**super().summary_extra(records), "round_time_source": self.round_time_source,
                **new}

    # -- checkpoints -----------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        out = {f"supernet_{i}": a for i, a in enumerate(self.supernet.state_arrays())}
        out["policy_logits"] = np.stack([p.logits for p in self.policies])
        out["policy_m"] = np.stack([p.m for p in self.policies])
        out["policy_v"] = np.stack([p.v for p in self.policies])
        out["policy_steps"] = np.array([p.steps for p in self.policies])
        hist = np.full(self.budget.num_clients, np.nan)
        for cid, acc in self.history.items():
            hist[cid] = acc
        out["acc_history"] = hist
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        n = len(self.supernet.state_keys())
        self.supernet.load_state_arrays([state[f"supernet_{i}"] for i in range(n)])
        if state["policy_logits"].shape != (self.budget.num_clients, sum(self.sizes)):
            raise ValueError("checkpoint policies do not match the search space or K")
        self.policies = [PolicyState(lg, m, v, int(t)) for lg, m, v, t in zip(
            state["policy_logits"], state["policy_m"], state["policy_v"],
            state["policy_steps"], strict=True)]
        self.history = {i: float(a) for i, a in enumerate(state["acc_history"])
                        if not np.isnan(a)}
