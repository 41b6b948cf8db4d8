"""What every pfednas strategy shares: client ids, sampling, the round loop, records.

Flower addresses SuperNodes by node id; pfednas addresses *clients* (data
partitions, policies, budgets) by client id. :meth:`PersonalizedStrategy.connect`
asks every node for its client id once. Each round the loop calls the four
Strategy hooks and hands a :class:`RoundRecord` to a callback of the app layer,
which writes it: no file is written from here.
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

from pfednas.nas.validation import (
    KNOWN_METRICS,
    REQUIRED_METRICS,
    ArrayHeader,
    ArraySpec,
    MetricSpec,
    array_specs,
    check_array_headers,
    check_arrays,
    check_metrics,
    examples_bound_problem,
)
from pfednas.search import Arch, Cost
from pfednas.seeding import CLIENT_SAMPLING, numpy_rng


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

    def __post_init__(self) -> None:
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be {'|'.join(WEIGHTINGS)}, got {self.weighting!r}")
        if self.examples_tolerance < 0:
            raise ValueError(f"examples_tolerance must be >= 0, got {self.examples_tolerance}")
        if self.eval_finetune not in ("final", "all"):
            raise ValueError(f"eval_finetune must be final|all, got {self.eval_finetune!r}")


WEIGHTINGS = ("samples", "uniform")
Reply = tuple[dict[str, Any], list[np.ndarray]]  # an accepted reply: its metrics, decoded arrays


class PersonalizedStrategy(Strategy):
    """Base class: client discovery, seeded sampling, the round loop and its records.

    Subclasses name the extra metrics their replies must carry in
    ``TRAIN_REQUIRES`` / ``EVALUATE_REQUIRES`` (types and ranges:
    :data:`pfednas.nas.validation.KNOWN_METRICS`), or override
    :meth:`required_metrics`; :meth:`ok_replies` rejects a reply without them.
    """

    TRAIN_REQUIRES: tuple[str, ...] = ()
    EVALUATE_REQUIRES: tuple[str, ...] = ()

    def __init__(self, *, budget: Budget, train_config: dict[str, Any]) -> None:
        self.budget = budget
        self.train_config = dict(train_config)
        self.node_of: dict[int, int] = {}
        self.record = RoundRecord(round=0)
        self.reply_seconds: dict[int, float] = {}
        self.expected: dict[tuple[int, str], list[ArraySpec]] = {}
        # num_examples bounds: each client's partition size where the server knows it
        # (simulation), else the first count it reported per message type (deployment)
        self.partition_sizes: list[int] | None = None
        self.first_examples: dict[tuple[int, str], int] = {}
        self.eval_sent: set[int] = set()  # clients sent a personalized evaluation this round
        # Id of this run and its resumptions, sent in every round config: clients
        # restore their saved state only from files of the same lineage.
        self.lineage = ""

    # -- clients ---------------------------------------------------------------------------
    def connect(self, grid: Grid, *, poll_seconds: float = 1.0) -> None:
        """Wait for the K clients and learn which node holds which client id."""
        want = self.budget.num_clients
        while len(nodes := list(grid.get_node_ids())) < want:
            log(INFO, "Waiting for clients: %d of %d connected", len(nodes), want)
            time.sleep(poll_seconds)
        queries = [Message(RecordDict({"config": ConfigRecord({})}), dst_node_id=node,
                           message_type=MessageType.QUERY) for node in nodes]
        for reply in self.send_and_collect(grid, queries):
            node = reply.metadata.src_node_id
            if reply.has_error():
                log(WARNING, "Node %s did not say its client id: %s", node, reply.error.reason)
                continue
            record = reply.content.get("metrics")
            cid = dict(record).get("client_id") if isinstance(record, MetricRecord) else None
            if not isinstance(cid, int) or isinstance(cid, bool) or not 0 <= cid < want \
                    or cid in self.node_of:
                log(WARNING, "Node %s: client id %r is not a free id in [0, %d); ignored",
                    node, cid, want)
                continue
            self.node_of[cid] = node
        missing = sorted(set(range(want)) - set(self.node_of))
        if missing:
            raise RuntimeError(f"no node answered for client ids {missing[:10]}"
                               f"{' ...' if len(missing) > 10 else ''}")

    def sample_clients(self, server_round: int, population: int | None = None) -> list[int]:
        """N of the first ``population`` (default: all K) client ids, seeded by the round."""
        pool = self.budget.num_clients if population is None else population
        rng = numpy_rng(self.budget.seed, CLIENT_SAMPLING, server_round)
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
                arrays: list[np.ndarray] | None = None) -> Message:
        if message_type == MessageType.EVALUATE:
            self.eval_sent.add(client_id)
        content = RecordDict({"config": ConfigRecord(config)})
        if arrays is not None:
            record = ArrayRecord(numpy_ndarrays=arrays)
            content["arrays"] = record
            self.record.bytes_down += sum(a.nbytes for a in arrays)
        self.expected[(client_id, message_type)] = self.expected_reply_arrays(
            client_id, message_type, arrays or [])
        return Message(content, dst_node_id=self.node_of[client_id], message_type=message_type)

    def expected_reply_arrays(self, client_id: int, message_type: str,
                              sent: list[np.ndarray]) -> list[ArraySpec]:
        """What a valid reply carries: a train reply the sent arrays' shapes, others none."""
        return array_specs(sent) if message_type == MessageType.TRAIN else []

    def round_config(self, server_round: int, **extra: Any) -> dict[str, Any]:
        lineage = {"lineage": self.lineage} if self.lineage else {}
        return {**self.train_config, "server_round": server_round,
                "local_epochs": self.budget.local_epochs, **lineage, **extra}

    def ok_replies(self, replies: Iterable[Message]) -> list[Reply]:
        """Valid replies, as (metrics, decoded arrays), sorted by client id.

        Errors are counted as failures; malformed replies (wrong client id for the
        node, a required metric missing or out of its range, arrays of the wrong
        number / shape / dtype / size, NaN or Inf, a sample count beyond what the
        server knows of the client) are rejected with a warning naming the client
        and the reason, and counted; nothing of them is used. Arrays are checked
        from the record's metadata before they are decoded, and decoded once.
        """
        good = []
        for reply in replies:
            if reply.has_error():
                self.record.failures += 1
                log(WARNING, "A client failed: %s", reply.error.reason)
                continue
            record = reply.content.get("metrics")
            metrics = dict(record) if isinstance(record, MetricRecord) else {}
            arrays_record = reply.content.get("arrays")
            values = list(arrays_record.values()) if isinstance(arrays_record, ArrayRecord) \
                else []
            headers = [ArrayHeader(tuple(a.shape), str(a.dtype), str(a.stype), len(a.data))
                       for a in values]
            reason = self.reply_problem(reply, metrics, headers)
            arrays: list[np.ndarray] = []
            if reason is None:
                arrays, reason = self.decoded(reply, metrics, values)
            self.record.bytes_up += (sum(a.nbytes for a in arrays) if arrays
                                     else sum(h.size for h in headers))
            if reason is not None:
                self.record.rejected += 1
                log(WARNING, "Rejected the update of client %s (node %s): %s",
                    metrics.get("client_id"), reply.metadata.src_node_id, reason)
                continue
            cid = int(metrics["client_id"])
            self.first_examples.setdefault((cid, reply.metadata.message_type),
                                           int(metrics["num_examples"]))
            good.append((metrics, arrays))
        # in client order, not arrival order: sums over replies are then reproducible
        return sorted(good, key=lambda r: int(r[0]["client_id"]))

    def decoded(self, reply: Message, metrics: dict[str, Any], values: list[Any]
                ) -> tuple[list[np.ndarray], str | None]:
        """The arrays of a reply whose metadata passed, decoded and checked again."""
        try:
            arrays = [a.numpy() for a in values]
        except (TypeError, ValueError, OSError, EOFError) as err:
            return [], f"arrays cannot be decoded ({err})"
        expected = self.expected[(int(metrics["client_id"]), reply.metadata.message_type)]
        return arrays, check_arrays(arrays, expected)

    def enough(self, valid: int) -> bool:
        """Whether a training round with ``valid`` accepted replies may change server state."""
        if valid < self.budget.min_replies:
            log(WARNING, "Round %d: %d valid replies < min_replies=%d; state unchanged",
                self.record.round, valid, self.budget.min_replies)
            return False
        return True

    def reply_problem(self, reply: Message, metrics: dict[str, Any],
                      headers: list[ArrayHeader]) -> str | None:
        """Why a reply must be rejected, from its metrics and array metadata (None: fine)."""
        cid = metrics.get("client_id")
        if not isinstance(cid, int) or isinstance(cid, bool) \
                or self.node_of.get(cid) != reply.metadata.src_node_id:
            return f"client id {cid!r} is not the one of node {reply.metadata.src_node_id}"
        kind = reply.metadata.message_type
        expected = self.expected.get((cid, kind))
        if expected is None:
            return "no request of this kind was sent to this client"
        return (check_metrics(metrics, self.required_metrics(cid, kind), self.metric_specs())
                or self.examples_problem(cid, kind, int(metrics["num_examples"]))
                or check_array_headers(headers, expected))

    def metric_specs(self) -> dict[str, MetricSpec]:
        """Type and range of every known metric; a client cannot train past the timeout."""
        return {**KNOWN_METRICS, "train_seconds": MetricSpec(
            "train_seconds", float, 0.0, float(self.budget.round_timeout))}

    def required_metrics(self, client_id: int, message_type: str) -> list[MetricSpec]:
        """The metrics a reply of ``client_id`` to a ``message_type`` message must carry."""
        extra = {MessageType.TRAIN: self.TRAIN_REQUIRES,
                 MessageType.EVALUATE: self.EVALUATE_REQUIRES}.get(message_type, ())
        specs = self.metric_specs()
        return [specs[n] for n in (*REQUIRED_METRICS.get(message_type, ()), *extra)]

    def examples_problem(self, client_id: int, message_type: str, n: int) -> str | None:
        limit = None if self.partition_sizes is None else self.partition_sizes[client_id]
        return examples_bound_problem(
            n, limit=limit, reference=self.first_examples.get((client_id, message_type)),
            tolerance=self.budget.examples_tolerance)

    def weight(self, metrics: dict[str, Any]) -> float:
        """A client's weight in averages and merges: its sample count, or 1 (uniform)."""
        return 1.0 if self.budget.weighting == "uniform" else float(metrics["num_examples"])

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
                "sample_passes")
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
                messages = list(configure(server_round, self.current_arrays(), ConfigRecord(),
                                          grid))
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

    # -- checkpoints ---------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        """The server state to checkpoint, as named arrays (empty: nothing to resume)."""
        return {}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} keeps no server state to resume")

    def summary_extra(self, records: list[RoundRecord]) -> dict[str, Any]:
        """Method-specific entries for ``summary.json`` (the app layer writes them)."""
        return {}

    def summary(self) -> None:
        log(INFO, "%s: %s", type(self).__name__, self.budget)
