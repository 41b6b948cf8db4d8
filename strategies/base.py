"""What every pfednas strategy shares: client ids, sampling, the round loop, records.

Flower addresses SuperNodes by node id; pfednas addresses *clients* (data
partitions, policies, budgets) by client id. :meth:`PersonalizedStrategy.connect`
asks every node for its client id once and binds it for the run
(:mod:`pfednas.strategies.identity`). Each round the loop calls the four
Strategy hooks and hands a :class:`RoundRecord` to a callback of the app layer,
which writes it: no file is written from here.

Every reply passes the reply gate (:class:`pfednas.strategies.gate.ReplyGate`),
which judges it against the request the server sent that client.

Every client has a hardware profile (:mod:`pfednas.nas.profile`), ``self.profiles``:
a simulation's strategy draws them from the seeded spread; in a deployment each node
claims its own in its answer to the client-id query, bounded by the operator
(``self.profile_bounds``), and a refused claim leaves the node without its client id.
Clients in ``self.excluded`` (a budget no architecture fits, or below the fits_all
floor) are neither sampled nor evaluated; the results say why.
"""

from __future__ import annotations

import math
import time
from abc import abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from pfednas.nas.profile import ClientProfile, ProfileBounds, profile_problem
from pfednas.nas.validation import ArraySpec, array_specs
from pfednas.search import Arch, Cost
from pfednas.seeding import CLIENT_SAMPLING, numpy_rng
from pfednas.strategies.gate import Reply, ReplyGate, Request
from pfednas.strategies.identity import claim_problem

__all__ = ["Budget", "PersonalizedStrategy", "Reply", "Request", "RoundRecord", "arch_details",
           "norm_bound_for"]


@dataclass
class RoundRecord:
    """What happened in one round (one line of ``metrics.jsonl``)."""

    round: int
    sampled: list[int] = field(default_factory=list)
    train: list[dict[str, float]] = field(default_factory=list)
    evaluation: list[dict[str, float]] = field(default_factory=list)
    failures: int = 0
    rejected: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    wall_seconds: float = 0.0
    server_seconds: float = 0.0
    server: dict[str, Any] = field(default_factory=dict)  # server-side measurements, if any
    # evaluation rounds: "quick" (fine-tuning skipped), "full", or "final" (the last round)
    eval_kind: str = ""
    eval_seconds: float = 0.0  # wall time of the round's evaluation stage
    clients_missing: list[int] = field(default_factory=list)  # sent an evaluation, no valid row

    def to_json(self) -> dict[str, Any]:
        accs = [e["accuracy"] for e in self.evaluation]
        out: dict[str, Any] = {
            "round": self.round, "sampled_clients": self.sampled, "train": self.train,
            "evaluation": self.evaluation, "failures": self.failures,
            "rejected": self.rejected,
            "bytes_up": self.bytes_up, "bytes_down": self.bytes_down,
            "wall_seconds": round(self.wall_seconds, 4),
            "server_seconds": round(self.server_seconds, 4),
        }
        if accs:
            out["personalized_acc_mean"] = float(np.mean(accs))
            out["personalized_acc_std"] = float(np.std(accs))
        if self.eval_kind:
            out["eval_kind"] = self.eval_kind
            out["eval_seconds"] = round(self.eval_seconds, 4)
            out["clients_missing"] = self.clients_missing
        if self.server:
            out["server"] = self.server
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RoundRecord:
        return cls(round=int(data["round"]), sampled=list(data["sampled_clients"]),
                   train=list(data["train"]), evaluation=list(data["evaluation"]),
                   failures=int(data["failures"]), rejected=int(data.get("rejected", 0)),
                   bytes_up=int(data["bytes_up"]),
                   bytes_down=int(data["bytes_down"]), wall_seconds=float(data["wall_seconds"]),
                   server_seconds=float(data.get("server_seconds", 0.0)),
                   server=dict(data.get("server", {})),
                   eval_kind=str(data.get("eval_kind", "")),
                   eval_seconds=float(data.get("eval_seconds", 0.0)),
                   clients_missing=[int(c) for c in data.get("clients_missing", [])])


def arch_details(arch: Arch, cost: Cost, *, metric: str | None = None,
                 budget: float | None = None) -> dict[str, Any]:
    """A NAS method's evaluation-row fields: the architecture, its parameters, FLOPs and
    training memory, and where the client has a (finite) budget in ``metric``
    (params | flops | memory) the cost in that metric, the budget and whether it fits."""
    out: dict[str, Any] = {"arch": arch.to_str(), "params": int(cost.params),
                           "flops": int(cost.flops), "memory_bytes": int(cost.memory_bytes)}
    if metric is not None and budget is not None and math.isfinite(budget):
        value = float({"params": cost.params, "flops": cost.flops,
                       "memory": cost.memory_bytes}[metric])
        out.update(budget_metric=metric, cost=value, budget=float(budget),
                   within_budget=value <= budget)
    return out


@dataclass(frozen=True)
class Budget:
    """Federation budgets every strategy takes (keyword-only, validated by the config)."""

    num_clients: int
    clients_per_round: int
    num_rounds: int
    local_epochs: int
    eval_every: int
    round_timeout: float
    seed: int
    min_replies: int = 1
    weighting: str = "samples"        # samples | uniform: what weights averages and merges
    examples_tolerance: float = 0.5   # deployment: allowed rise over the first num_examples
    eval_timeout: float | None = None  # seconds to wait for evaluation replies; None: no limit
    eval_finetune: str = "final"  # final: fine-tune only at the last round's evaluation | all
    # a deployment: num_examples weighs only where the operator bounds it (partition_sizes)
    deployment: bool = False
    # each training update's RMS at most this × the round's lower median (None: unbounded)
    update_norm_bound: float | None = None

    def __post_init__(self) -> None:
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be {'|'.join(WEIGHTINGS)}, got {self.weighting!r}")
        if not self.examples_tolerance >= 0:  # NaN too
            raise ValueError(f"examples_tolerance must be >= 0, got {self.examples_tolerance}")
        if self.eval_finetune not in ("final", "all"):
            raise ValueError(f"eval_finetune must be final|all, got {self.eval_finetune!r}")
        bound = self.update_norm_bound
        if bound is not None and not 0 < bound < math.inf:
            raise ValueError(f"update_norm_bound must be null or a finite number > 0, got {bound}")


WEIGHTINGS = ("samples", "uniform")
DEPLOYMENT_NORM_BOUND = 10.0  # update_norm_bound of a deployment that sets none


def norm_bound_for(configured: float | None, *, deployment: bool) -> float | None:
    """``federation.update_norm_bound`` as the Budget takes it: null → off in a simulation
    (published results unchanged), :data:`DEPLOYMENT_NORM_BOUND` in a deployment; 0 → off."""
    if configured is None:
        return DEPLOYMENT_NORM_BOUND if deployment else None
    return None if configured == 0 else float(configured)


class PersonalizedStrategy(ReplyGate, Strategy):
    """Base class: client discovery, seeded sampling, the round loop and its records;
    every reply through the gate (:class:`ReplyGate`)."""

    def __init__(self, *, budget: Budget, train_config: dict[str, Any]) -> None:
        self.budget = budget
        self.train_config = dict(train_config)
        self.node_of: dict[int, int] = {}
        self.pins: dict[int, bytes] | None = None  # client id -> the node's public key (PEM)
        self.record = RoundRecord(round=0)
        self.reply_seconds: dict[int, float] = {}
        self.requests: dict[int, Request] = {}
        self.answered: set[int] = set()
        # num_examples bounds: each client's partition size where the server knows it
        # (simulation; in a deployment the operator's federation.client_examples), else
        # the first count it reported per message type
        self.partition_sizes: list[int] | None = None
        self.first_examples: dict[tuple[int, str], int] = {}
        self.eval_sent: set[int] = set()  # clients sent a personalized evaluation this round
        # Id of this run and its resumptions, sent in every round config: clients
        # restore their saved state only from files of the same lineage.
        self.lineage = ""
        # client id -> hardware profile: drawn by a simulation's strategy, claimed by each
        # node in a deployment (bounded by the operator's profile_bounds: None = not read)
        self.profiles: dict[int, ClientProfile] = {}
        self.profile_bounds: ProfileBounds | None = ProfileBounds() if budget.deployment else None
        self.excluded: dict[int, str] = {}  # client id -> why it takes no part
        # a deployment's baselines with method.arch=fits_all: the architecture chosen from
        # the claimed profiles (sent in every round config) and what chooses it
        self.fixed_arch: str | None = None
        self.choose_fixed_arch: Callable[[PersonalizedStrategy], None] | None = None

    # -- clients ---------------------------------------------------------------------------
    def connect(self, grid: Grid, *, poll_seconds: float = 1.0) -> None:
        """Wait for the K clients and learn which node holds which client id.

        Every node that connects is asked once; a claim binds the id to the node for
        the run, a second claim of a bound id (or of a pinned id by another node,
        ``self.pins``) is refused with both nodes named. Once K nodes have answered,
        nodes still arriving are asked for up to ``round_timeout`` seconds, so one
        node too many cannot leave a rightful one without its id.
        """
        want, asked = self.budget.num_clients, set[int]()
        deadline = math.inf
        while missing := sorted(set(range(want)) - set(self.node_of)):
            new = [n for n in grid.get_node_ids() if n not in asked]
            if len(asked) + len(new) < want:
                log(INFO, "Waiting for clients: %d of %d connected", len(asked) + len(new), want)
            elif new:
                self.bind_claims(grid, new)
                asked.update(new)
                deadline = min(deadline, time.perf_counter() + self.budget.round_timeout)
                continue
            elif time.perf_counter() > deadline:
                raise RuntimeError(f"no node answered for client ids {missing[:10]}"
                                   f"{' ...' if len(missing) > 10 else ''}")
            time.sleep(poll_seconds)
        if self.profile_bounds is not None:
            self.profiles_bound()
            for cid, reason in sorted(self.excluded.items()):
                log(WARNING, "Client %d (node %s) is excluded from the run: %s", cid,
                    self.node_of.get(cid), reason)

    def profiles_bound(self) -> None:
        """Hook once every client's claimed profile is known (a deployment): e.g. find the
        clients whose budget no architecture fits (``self.excluded``)."""
        if self.choose_fixed_arch is not None:
            self.choose_fixed_arch(self)

    def bind_claims(self, grid: Grid, nodes: list[int]) -> None:
        """Ask ``nodes`` for their client ids and bind the claims :func:`claim_problem` admits."""
        keys = ({info.node_id: bytes(info.public_key) for info in grid.get_nodes()}
                if self.pins is not None else {})
        queries = [Message(RecordDict({"config": ConfigRecord({})}), dst_node_id=node,
                           message_type=MessageType.QUERY) for node in nodes]
        for reply in self.send_and_collect(grid, queries):
            node = reply.metadata.src_node_id
            if reply.has_error():
                log(WARNING, "Node %s did not say its client id: %s", node, reply.error.reason)
                continue
            record = reply.content.get("metrics")
            cid = dict(record).get("client_id") if isinstance(record, MetricRecord) else None
            problem = claim_problem(node, cid, num_clients=self.budget.num_clients,
                                    node_of=self.node_of, node_key=keys.get(node),
                                    pins=self.pins)
            if problem is not None:
                log(WARNING, "Client ids: %s", problem)
                continue
            assert isinstance(cid, int)
            if self.profile_bounds is not None:
                claim = reply.content.get("profile")
                profile = profile_problem(node, cid, dict(claim) if isinstance(
                    claim, ConfigRecord) else None, self.profile_bounds, self.profiles.get(cid))
                if isinstance(profile, str):
                    log(WARNING, "Client ids: %s", profile)
                    continue
                self.profiles[cid] = profile
            self.node_of[cid] = node

    def sample_clients(self, server_round: int, population: int | None = None) -> list[int]:
        """N of the first ``population`` (default: all K) client ids, seeded by the round."""
        pool = self.budget.num_clients if population is None else population
        rng = numpy_rng(self.budget.seed, CLIENT_SAMPLING, server_round)
        eligible = [c for c in range(pool) if c not in self.excluded]
        if len(eligible) < pool:  # excluded clients (a deployment) are never sampled
            if not eligible:
                return []
            chosen = rng.choice(eligible, min(self.budget.clients_per_round, len(eligible)),
                                replace=False)
        else:
            chosen = rng.choice(pool, min(self.budget.clients_per_round, pool), replace=False)
        return sorted(int(c) for c in chosen)

    def is_eval_round(self, server_round: int) -> bool:
        return (server_round % self.budget.eval_every == 0
                or server_round == self.budget.num_rounds)

    def eval_finetune_epochs(self, server_round: int, epochs: int) -> int:
        """Fine-tuning epochs to put in this round's evaluation config.

        ``epochs`` at the final round (or at every evaluation with ``eval_finetune: all``);
        0 at intermediate evaluations, which then evaluate the un-fine-tuned personalized
        model of every client and are recorded as ``eval_kind: quick``.
        """
        if epochs > 0 and self.budget.eval_finetune == "final" \
                and server_round != self.budget.num_rounds:
            self.record.eval_kind = "quick"
            return 0
        return epochs

    def message(self, client_id: int, message_type: str, config: dict[str, Any],
                arrays: list[np.ndarray] | None = None, roles: list[str] | None = None
                ) -> Message:
        """A message to a client; ``roles``: what each array is (default: parameters)."""
        if message_type == MessageType.EVALUATE:
            self.eval_sent.add(client_id)
        content = RecordDict({"config": ConfigRecord(config)})
        if arrays is not None:
            record = ArrayRecord(numpy_ndarrays=arrays)
            content["arrays"] = record
            self.record.bytes_down += sum(a.nbytes for a in arrays)
        sent = arrays or []
        # what was sent is kept for training (the reference of its update) only
        self.requests[client_id] = Request(message_type, self.expected_reply_arrays(
            client_id, message_type, sent, roles),
            sent if message_type == MessageType.TRAIN else [])
        self.answered.discard(client_id)
        return Message(content, dst_node_id=self.node_of[client_id], message_type=message_type)

    def expected_reply_arrays(self, client_id: int, message_type: str, sent: list[np.ndarray],
                              roles: list[str] | None = None) -> list[ArraySpec]:
        """What a valid reply carries: a train reply the sent arrays (shapes, dtypes and
        roles), others none."""
        return array_specs(sent, roles) if message_type == MessageType.TRAIN else []

    def round_config(self, server_round: int, **extra: Any) -> dict[str, Any]:
        lineage = {"lineage": self.lineage} if self.lineage else {}
        fixed = {"fixed_arch": self.fixed_arch} if self.fixed_arch else {}
        return {**self.train_config, "server_round": server_round,
                "local_epochs": self.budget.local_epochs, **lineage, **fixed, **extra}

    def enough(self, valid: int) -> bool:
        """Whether a training round with ``valid`` accepted replies may change server state."""
        if valid < self.budget.min_replies:
            log(WARNING, "Round %d: %d valid replies < min_replies=%d; state unchanged",
                self.record.round, valid, self.budget.min_replies)
            return False
        return True

    # -- evaluation results ------------------------------------------------------------------
    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        rows = []
        for metrics, _ in self.ok_replies(replies):
            cid = int(metrics["client_id"])
            rows.append({"client_id": cid,
                         "accuracy": float(metrics["accuracy"]),
                         "loss": float(metrics["loss"]),
                         "num_params": int(metrics.get("num_params", 0)),
                         "num_examples": int(metrics["num_examples"]),
                         "sample_passes": int(metrics.get("sample_passes", 0)),
                         **({"accuracy_no_ft": float(metrics["accuracy_no_ft"])}
                            if "accuracy_no_ft" in metrics else {}),
                         **({"finetune_seconds": float(metrics["train_seconds"])}
                            if "train_seconds" in metrics else {}),
                         **self.evaluation_details(cid)})
        self.record.evaluation = sorted(rows, key=lambda r: r["client_id"])
        self.note_missing(server_round, {r["client_id"] for r in rows})
        if not rows:
            return None
        return MetricRecord({"personalized_acc_mean":
                             float(np.mean([r["accuracy"] for r in rows]))})

    def note_missing(self, server_round: int, evaluated: set[int]) -> None:
        """Record the evaluation's kind and the clients it was sent to that gave no valid row."""
        if not self.record.eval_kind:
            self.record.eval_kind = "final" if server_round == self.budget.num_rounds else "full"
        self.record.clients_missing = sorted(self.eval_sent - evaluated)
        if self.record.clients_missing:
            log(WARNING, "Round %d: %d of %d client(s) missing from the evaluation: %s",
                server_round, len(self.record.clients_missing), len(self.eval_sent),
                self.record.clients_missing[:20])

    def evaluation_details(self, client_id: int) -> dict[str, Any]:
        """Extra per-client fields of an evaluation row (e.g. the architecture)."""
        return {}

    @staticmethod
    def train_row(metrics: dict[str, Any]) -> dict[str, float]:
        keys = ("client_id", "train_loss", "train_seconds", "num_examples", "peak_memory_mb",
                "sample_passes", "update_scale")
        return {k: metrics[k] for k in keys if k in metrics}

    # -- the loop ----------------------------------------------------------------------------
    @abstractmethod
    def current_arrays(self) -> ArrayRecord:
        """The server state sent out this round (empty for methods that send none)."""

    def send_and_collect(self, grid: Grid, messages: list[Message], *,
                         evaluation: bool = False) -> list[Message]:
        """Push messages, pull replies until all arrived or the timeout passed.

        The timeout is ``round_timeout``, or for an evaluation ``eval_timeout`` (None: wait
        for every reply). Records, per replying node, the seconds from send to reply in
        ``self.reply_seconds`` (the measured round time RT_i).
        """
        self.reply_seconds = {}
        sent_at = time.perf_counter()
        pending = set(grid.push_messages(messages))
        replies: list[Message] = []
        timeout = self.budget.eval_timeout if evaluation else self.budget.round_timeout
        deadline = float("inf") if timeout is None else sent_at + timeout
        while pending and time.perf_counter() < deadline:
            for reply in grid.pull_messages(list(pending)):
                pending.discard(reply.metadata.reply_to_message_id)
                self.reply_seconds[reply.metadata.src_node_id] = time.perf_counter() - sent_at
                replies.append(reply)
            if pending:
                time.sleep(0.02)
        if pending:
            self.record.failures += len(pending)
            log(WARNING, "%d client(s) did not reply within %.0fs", len(pending), timeout)
        return replies

    def run(self, grid: Grid, on_round: Callable[[RoundRecord], None],
            start_round: int = 1) -> list[RoundRecord]:
        """Run rounds ``start_round..R``; ``on_round`` receives each finished round's record."""
        records = []
        for server_round in range(start_round, self.budget.num_rounds + 1):
            start = time.perf_counter()
            self.record = RoundRecord(round=server_round)
            self.eval_sent = set()
            for configure, aggregate, evaluation in (
                    (self.configure_train, self.aggregate_train, False),
                    (self.configure_evaluate, self.aggregate_evaluate, True)):
                stage = tic = time.perf_counter()
                messages = self.without_excluded(list(configure(
                    server_round, self.current_arrays(), ConfigRecord(), grid)))
                self.record.server_seconds += time.perf_counter() - tic
                if messages:
                    replies = self.send_and_collect(grid, messages, evaluation=evaluation)
                    tic = time.perf_counter()
                    aggregate(server_round, replies)  # type: ignore[operator]
                    self.record.server_seconds += time.perf_counter() - tic
                if evaluation:
                    self.record.eval_seconds = time.perf_counter() - stage
            self.finish_round(grid, server_round)
            self.record.wall_seconds = time.perf_counter() - start
            records.append(self.record)
            on_round(self.record)
        return records

    def finish_round(self, grid: Grid, server_round: int) -> None:
        """Hook after a round's evaluation (e.g. PerFedRLNAS's new-client search)."""

    def without_excluded(self, messages: list[Message]) -> list[Message]:
        """``messages`` less those to excluded clients (then neither sent nor missed)."""
        if not self.excluded:
            return messages
        nodes = {self.node_of[c]: c for c in self.excluded if c in self.node_of}
        for node in {m.metadata.dst_node_id for m in messages} & set(nodes):
            self.eval_sent.discard(nodes[node])
            self.requests.pop(nodes[node], None)
        return [m for m in messages if m.metadata.dst_node_id not in nodes]

    def profile_summary(self) -> dict[str, Any]:
        """``summary.json``'s ``profiles`` (each client's, with its source),
        ``excluded_clients`` (who took no part, and why), where there are any, and
        ``fixed_arch``, the one architecture a deployment's ``fits_all`` chose from them."""
        out: dict[str, Any] = {"fixed_arch": self.fixed_arch} if self.fixed_arch else {}
        if self.profiles:
            out["profiles"] = [{"client_id": cid, **p.to_json()}
                               for cid, p in sorted(self.profiles.items())]
        if self.excluded:
            out["excluded_clients"] = [{"client_id": cid, "reason": reason}
                                       for cid, reason in sorted(self.excluded.items())]
        return out

    # -- checkpoints ---------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        """The server state to checkpoint, as named arrays (empty: nothing to resume)."""
        return {}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} keeps no server state to resume")

    def summary_extra(self, records: list[RoundRecord]) -> dict[str, Any]:
        """Method-specific entries for ``summary.json`` (the app layer writes them); here
        the clients' profiles and exclusions (:meth:`profile_summary`)."""
        return self.profile_summary()

    def summary(self) -> None:
        log(INFO, "%s: %s", type(self).__name__, self.budget)
