"""What every pfednas strategy shares: client ids, sampling, the round loop.

Flower addresses SuperNodes by node id; pfednas addresses *clients* (data
partitions, policies, budgets) by client id. :meth:`PersonalizedStrategy.connect`
asks every node for its client id once and binds it for the run, with a
deployment's hardware profile claims (:class:`pfednas.strategies.identity.ClientClaims`).

Each round the loop (:meth:`PersonalizedStrategy.run`) calls the four hooks named
as Flower's Strategy names them: ``configure_*`` build and return the letters to send
(:class:`pfednas.strategies.outgoing.Outgoing`), changing nothing, and the loop records
each request as it sends it; ``aggregate_*`` return what their stage produced
(:class:`pfednas.records.StageResult`).
The loop alone writes the round's :class:`pfednas.records.RoundRecord` and hands it
to a callback of the app layer, which writes it: no file is written from here.

Every reply passes the reply gate (:func:`pfednas.strategies.gate.judge`), which
judges it against the request the server sent that client and returns the accepted
replies with what it counted, added to the round's tally.
"""

from __future__ import annotations

import dataclasses
import time
from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.common import log
from flwr.serverapp import Grid

from pfednas.edge.spec import KEEP_KEY, PROFILE_PREFIX
from pfednas.hardware.profile import ClientProfile, ProfileBounds
from pfednas.hardware.simulated_time import (
    round_seconds,
    timed_eval_row,
    timed_train_row,
)
from pfednas.packing import pack
from pfednas.records import RoundRecord, StageResult
from pfednas.seeding import CLIENT_SAMPLING, numpy_rng
from pfednas.strategies.budget import (  # noqa: F401 (re-exported)
    DEPLOYMENT_NORM_BOUND,
    WEIGHTINGS,
    Budget,
    Roster,
    eval_timeout_for,
    norm_bound_for,
)
from pfednas.strategies.gate import (
    GateRules,
    Reply,
    Request,
    RoundState,
    RoundTally,
    bound_replies,
    judge,
)
from pfednas.strategies.identity import ClientClaims
from pfednas.strategies.outgoing import Letter, Outgoing
from pfednas.wire.messages import SPLIT, TEST_SPLIT, Finetune, RoundConfig, RoundEntries, Sgd
from pfednas.wire.validation import (
    KNOWN_METRICS,
    REQUIRED_METRICS,
    ArraySpec,
    MetricSpec,
    array_specs,
)

__all__ = ["Budget", "PersonalizedStrategy", "Reply", "Request", "norm_bound_for"]


# an evaluation row's other accuracies: before fine-tuning (as published), and after each
# fine-tuning scope (``finetune_both``)
ACCURACY_VARIANTS = ("accuracy_no_ft", "accuracy_ft_full", "accuracy_ft_head")
# The server asks for replies again after FIRST_POLL seconds, each empty answer waiting
# POLL_GROWTH times longer, up to LAST_POLL (a reply resets it): a fast reply is seen within
# tens of milliseconds, and a long round costs the SuperLink a few pulls a second, not 50.
# A reply's measured time (RT_i) is late by at most LAST_POLL.
FIRST_POLL, POLL_GROWTH, LAST_POLL = 0.02, 1.5, 0.25


def next_poll(wait: float, got_replies: bool) -> float:
    """The wait before the next pull, after a pull that came ``wait`` seconds after the one
    before it (0: the first pull, right after the push)."""
    if got_replies or wait < FIRST_POLL:
        return FIRST_POLL
    return min(LAST_POLL, wait * POLL_GROWTH)


class PersonalizedStrategy(ClientClaims):
    """Base class: client discovery, seeded sampling, the round loop and its records;
    every reply through the gate (:func:`~pfednas.strategies.gate.judge`).

    Subclasses name the extra metrics their replies must carry in
    ``TRAIN_REQUIRES`` / ``EVALUATE_REQUIRES`` (types and ranges:
    :data:`pfednas.wire.validation.KNOWN_METRICS`), or name a message's own when they send
    it (its :class:`Request`); the gate rejects a reply without them.

    The hooks keep Flower's ``Strategy`` names, but this loop is not Flower's
    ``Strategy.start``: ``configure_*`` take the round alone (each strategy sends its own
    state, so none is serialised to be passed in), and ``aggregate_*`` return a
    :class:`StageResult`.
    """

    def __init__(self, *, budget: Budget, sgd: Sgd, roster: Roster | None = None,
                 own_entries: RoundEntries | None = None) -> None:
        """``sgd``: the clients' SGD; ``own_entries``: the method's own entries in every
        train message (its options' ``round_entries``)."""
        self.budget = budget
        self.sgd, self.own_entries = sgd, own_entries
        roster = Roster() if roster is None else roster
        self.node_of: dict[int, int] = {}
        self.pins: dict[int, bytes] | None = None if roster.pins is None else dict(roster.pins)
        self.current = RoundState(RoundTally(round=0))  # per-round state (the loop's)
        # num_examples bounds: each client's partition size where the server knows it
        # (simulation; in a deployment the operator's federation.client_examples), else
        # the first count it reported per message type
        self.partition_sizes: list[int] | None = (None if roster.partition_sizes is None
                                                  else list(roster.partition_sizes))
        self.first_examples: dict[tuple[int, str], int] = {}
        self.lineage = roster.lineage
        # each client's hardware: a simulation's seeded draw, the same for every method; a
        # deployment's nodes claim theirs on first contact (within profile_bounds)
        self.profiles: dict[int, ClientProfile] = dict(roster.profiles)
        self.profile_bounds: ProfileBounds | None = (
            (roster.profile_bounds or ProfileBounds()) if budget.deployment else None)
        self.excluded: dict[int, str] = {}
        # F: the fine-tuning epochs of a personalized evaluation (0: none)
        self.finetune_epochs = 0

    TRAIN_REQUIRES: tuple[str, ...] = ()
    EVALUATE_REQUIRES: tuple[str, ...] = ()

    # -- this round's state (self.current, started afresh by the loop each round) ---------------
    @property
    def tally(self) -> RoundTally:
        """This round's counts."""
        return self.current.tally

    @property
    def requests(self) -> dict[int, Request]:
        """The last message sent to each client this round."""
        return self.current.requests

    @property
    def answered(self) -> set[int]:
        """The clients whose last request has an accepted reply."""
        return self.current.answered

    @property
    def reply_seconds(self) -> dict[int, float]:
        """Node -> seconds from send to reply of its last exchange (the measured RT_i)."""
        return self.current.reply_seconds

    # -- the reply gate --------------------------------------------------------------------------
    def ok_replies(self, replies: Iterable[Message]) -> list[Reply]:
        """The accepted replies, as (metrics, decoded arrays) sorted by client id
        (:func:`~pfednas.strategies.gate.judge`); what the gate counted goes into this round's
        tally, each client's first sample count into the run's bounds."""
        judged = judge(replies, self.current.requests, self.current.answered, self.gate_rules())
        self.current.count(judged)
        self.first_examples.update(judged.first_examples)
        return judged.accepted

    def gate_rules(self) -> GateRules:
        """What the gate judges a reply by, besides its request: this run's values."""
        return GateRules(self.node_of, self.metric_specs(), self.partition_sizes,
                         self.first_examples, self.budget.examples_tolerance)

    def train_replies(self, replies: Iterable[Message]) -> list[Reply]:
        """Accepted training replies, each update bounded by ``Budget.update_norm_bound``
        (:func:`~pfednas.strategies.gate.bound_replies`)."""
        return bound_replies(self.ok_replies(replies), self.current.requests,
                             self.budget.update_norm_bound, self.current.tally.round)

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

    def weight(self, metrics: dict[str, Any]) -> float:
        """A client's weight in averages and merges: its sample count, or 1 (uniform).

        In a deployment a sample count weighs only where the operator bounds it
        (``partition_sizes`` from ``federation.client_examples``); without that bound
        every client weighs 1: its own first report bounds nothing.
        """
        if self.budget.weighting == "uniform" or (self.budget.deployment
                                                  and self.partition_sizes is None):
            return 1.0
        return float(metrics["num_examples"])

    def profiles_bound(self) -> None:
        """Hook once every client's claimed profile is known (a deployment): e.g. find the
        clients whose budget no architecture fits (``self.excluded``); none here (the
        baselines' fits_all: :class:`pfednas.strategies.fixed_arch.FixedArchStrategy`)."""

    # -- clients ---------------------------------------------------------------------------
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

    def train_clients(self, server_round: int) -> list[int]:
        """The clients sampled to train in ``server_round`` (the record's ``sampled``): a
        function of the round, which ``configure_train`` addresses."""
        return self.sample_clients(server_round)

    def is_eval_round(self, server_round: int) -> bool:
        return (server_round % self.budget.eval_every == 0
                or server_round == self.budget.num_rounds)

    def quick_eval(self, server_round: int) -> bool:
        """Whether this round's evaluation skips fine-tuning: F > 0 and ``eval_finetune:
        final``, at an evaluation before the last round."""
        return (self.finetune_epochs > 0 and self.budget.eval_finetune == "final"
                and server_round != self.budget.num_rounds)

    def eval_finetune_epochs(self, server_round: int) -> int:
        """Fine-tuning epochs to put in this round's evaluation config: F at the final
        round (or at every evaluation with ``eval_finetune: all``); 0 at intermediate
        evaluations, which then evaluate the un-fine-tuned personalized model of every
        client and are recorded as ``eval_kind: quick``."""
        return 0 if self.quick_eval(server_round) else self.finetune_epochs

    def eval_kind(self, server_round: int) -> str:
        """The record's ``eval_kind`` of an evaluation in ``server_round``."""
        if self.quick_eval(server_round):
            return "quick"
        return "final" if server_round == self.budget.num_rounds else "full"

    def message(self, client_id: int, message_type: str, config: dict[str, Any],
                arrays: list[np.ndarray] | None = None, roles: list[str] | None = None,
                requires: list[MetricSpec] | None = None) -> Letter:
        """A message to a client and its request (what a valid reply is), changing nothing:
        the round loop records the request when it sends the message (:meth:`record`).
        ``roles``: what each array is (default: parameters); ``requires``: the metrics a
        valid reply carries (default: those of its type, :meth:`required_metrics`)."""
        if message_type == MessageType.EVALUATE and self.is_final_evaluation(config):
            config = {**config, **self.keep_config(client_id)}
        content = RecordDict({"config": ConfigRecord(config)})
        if arrays is not None:
            content["arrays"] = ArrayRecord(numpy_ndarrays=arrays)
        sent = arrays or []
        # what was sent is kept for training (the reference of its update) only
        request = Request(
            message_type, self.expected_reply_arrays(client_id, message_type, sent, roles),
            sent if message_type == MessageType.TRAIN else [],
            self.required_metrics(client_id, message_type) if requires is None
            else list(requires))
        message = Message(content, dst_node_id=self.node_of[client_id],
                          message_type=message_type)
        return Letter(client_id, message, request, sum(a.nbytes for a in sent))

    def record(self, sent: Outgoing[Any]) -> Outgoing[Any]:
        """Record ``sent``'s letters as sent this round: each client's request (the last sent
        to it is the one its reply is judged against), not yet answered, and the array bytes
        in the round's tally (a training message's also as the client's ``train_down``).
        The round loop calls it as it sends; returns ``sent``."""
        for letter in sent.letters:
            self.requests[letter.client_id] = letter.request
            self.answered.discard(letter.client_id)
            self.tally.bytes_down += letter.nbytes
            if letter.request.kind == MessageType.TRAIN:
                self.tally.train_down[letter.client_id] = letter.nbytes
        return sent

    def is_final_evaluation(self, config: Mapping[str, Any]) -> bool:
        """Whether an evaluation config is the last round's personalized one (not a search's
        measurement on validation data): the one whose models the clients keep."""
        return (config.get("server_round") == self.budget.num_rounds
                and config.get(SPLIT, TEST_SPLIT) == TEST_SPLIT)

    def keep_config(self, client_id: int) -> dict[str, Any]:
        """What a client's final evaluation adds to its config: keep the models it tests
        (:mod:`pfednas.edge.kept`), with the profile and budget the server used for it, for
        the spec beside them (:mod:`pfednas.edge.spec`)."""
        out: dict[str, Any] = {KEEP_KEY: True}
        profile = self.profiles.get(client_id)
        if profile is not None:
            out.update({PROFILE_PREFIX + k: v for k, v in profile.to_json().items()
                        if v is not None})
        details = self.evaluation_details(client_id)
        if "budget" in details:
            out.update(budget=float(details["budget"]),
                       budget_metric=str(details.get("budget_metric", "memory")),
                       budget_cost=float(details.get("cost", 0.0)))
        return out

    def expected_reply_arrays(self, client_id: int, message_type: str, sent: list[np.ndarray],
                              roles: list[str] | None = None) -> list[ArraySpec]:
        """What a valid reply carries: a train reply the sent arrays (shapes, dtypes and
        roles), others none."""
        return array_specs(sent, roles) if message_type == MessageType.TRAIN else []

    def round_config(self, server_round: int, **extra: Any) -> dict[str, Any]:
        """A message's config: the clients' SGD (:class:`pfednas.wire.messages.Sgd`), the
        method's own entries, the round's (:class:`pfednas.wire.messages.RoundConfig`) and
        ``extra``."""
        own = {} if self.own_entries is None else self.own_entries.to_config()
        return {**self.sgd.to_config(), **own, **self.round_entries(server_round).to_config(),
                **extra}

    def round_entries(self, server_round: int) -> RoundConfig:
        """The round's entries of every message's config."""
        return RoundConfig(server_round=server_round, local_epochs=self.budget.local_epochs,
                           lineage=self.lineage)

    def finetune_config(self, server_round: int, scope: str) -> dict[str, Any]:
        """An evaluation's fine-tuning entries (:class:`pfednas.wire.messages.Finetune`): F at
        ``scope`` where this round's evaluation fine-tunes, both scopes with
        ``finetune_both``."""
        return Finetune(epochs=self.eval_finetune_epochs(server_round), scope=scope,
                        both=self.budget.finetune_both).to_config()

    def enough(self, valid: int) -> bool:
        """Whether a training round with ``valid`` accepted replies may change server state."""
        if valid < self.budget.min_replies:
            log(WARNING, "Round %d: %d valid replies < min_replies=%d; state unchanged",
                self.tally.round, valid, self.budget.min_replies)
            return False
        return True

    # -- the hooks ---------------------------------------------------------------------------
    @abstractmethod
    def configure_train(self, server_round: int) -> Outgoing[Any]:
        """The training letters of ``server_round`` (to :meth:`train_clients`, built by
        :meth:`message`), with the strategy's record of them where its aggregation needs one
        (:class:`Outgoing`'s plan)."""

    @abstractmethod
    def aggregate_train(self, server_round: int, replies: Iterable[Message],
                        sent: Outgoing[Any] | None = None) -> StageResult:
        """The server's update from the training replies to what ``configure_train`` sent
        (``sent``); returns the round's ``train`` rows (and any ``server`` report). Called
        whenever clients were sampled, also with no replies."""

    @abstractmethod
    def configure_evaluate(self, server_round: int) -> Outgoing[Any]:
        """The evaluation letters of ``server_round`` (none: no evaluation)."""

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message],
                           sent: Outgoing[Any] | None = None) -> StageResult:
        """The personalized evaluation's rows, its kind and the clients ``sent`` an
        evaluation that are missing from it (None: not known)."""
        rows = []
        for metrics, _ in self.ok_replies(replies):
            cid = int(metrics["client_id"])
            rows.append({"client_id": cid,
                         "accuracy": float(metrics["accuracy"]),
                         "loss": float(metrics["loss"]),
                         "num_params": int(metrics.get("num_params", 0)),
                         "num_examples": int(metrics["num_examples"]),
                         "sample_passes": int(metrics.get("sample_passes", 0)),
                         **{k: float(metrics[k]) for k in ACCURACY_VARIANTS if k in metrics},
                         **({"finetune_seconds": float(metrics["train_seconds"])}
                            if "train_seconds" in metrics else {}),
                         **({"train_macs": float(metrics["train_macs"])}
                            if "train_macs" in metrics else {}),
                         **self.device_level(cid),
                         **self.evaluation_details(cid),
                         **self.reply_details(metrics)})
        asked = set() if sent is None else sent.clients()
        missing = sorted(asked - {r["client_id"] for r in rows})
        if missing:
            log(WARNING, "Round %d: %d of %d client(s) missing from the evaluation: %s",
                server_round, len(missing), len(asked), missing[:20])
        return StageResult(evaluation=sorted(rows, key=lambda r: r["client_id"]),
                           eval_kind=self.eval_kind(server_round), clients_missing=missing)

    def reply_details(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """Extra fields of an evaluation row read from its accepted reply (SPIDER: the
        client's local architecture); none by default."""
        return {}

    def evaluation_details(self, client_id: int) -> dict[str, Any]:
        """Extra per-client fields of an evaluation row (e.g. the architecture, its cost and
        the client's budget); none here."""
        return {}

    def device_level(self, client_id: int) -> dict[str, float]:
        """An evaluation row's ``level``: the client's device level (a width rate) where the
        simulated hardware draws levels, for the results' accuracy by tier."""
        profile = self.profiles.get(client_id)
        return {} if profile is None or profile.level is None else {"level": profile.level}

    @staticmethod
    def train_row(metrics: dict[str, Any]) -> dict[str, float]:
        keys = ("client_id", "train_loss", "train_seconds", "num_examples", "peak_memory_mb",
                "sample_passes", "train_macs", "forward_macs", "update_scale")
        return {k: metrics[k] for k in keys if k in metrics}

    def screened(self, rows: list[dict[str, Any]], kept: Sequence[bool]) -> None:
        """Mark (in place) the training rows whose reply a robust aggregation's screen left
        out (``screened_out: 1``; :mod:`pfednas.nas.aggregation`), one row per reply."""
        for row, keep in zip(rows, kept, strict=True):
            if not keep:
                row["screened_out"] = 1
                log(WARNING, "Round %d: the update of client %s left out by the %s rule's "
                    "screen", self.tally.round, row.get("client_id"),
                    self.budget.aggregation.rule)

    # -- the loop ----------------------------------------------------------------------------
    def send(self, grid: Grid, sent: Outgoing[Any], *, evaluation: bool = False
             ) -> list[Message]:
        """Record ``sent``'s requests (:meth:`record`), push its messages and pull their
        replies (:meth:`send_and_collect`)."""
        return self.send_and_collect(grid, self.record(sent).messages, evaluation=evaluation)

    def send_and_collect(self, grid: Grid, messages: list[Message], *,
                         evaluation: bool = False) -> list[Message]:
        """Push messages, pull replies until all arrived or the timeout passed (polling as
        :func:`next_poll` says).

        The timeout is ``round_timeout``, or for an evaluation ``eval_timeout`` (None: wait
        for every reply). Records, per replying node, the seconds from send to reply in
        ``self.current.reply_seconds`` (the measured round time RT_i).
        """
        self.current.reply_seconds = {}
        sent_at = time.perf_counter()
        for message in messages:  # each message's arrays as one object on the wire
            message.content = pack(message.content)
        pending = set(grid.push_messages(messages))
        replies: list[Message] = []
        timeout = self.budget.eval_timeout if evaluation else self.budget.round_timeout
        deadline = float("inf") if timeout is None else sent_at + timeout
        wait = 0.0
        while pending and time.perf_counter() < deadline:
            pulled = grid.pull_messages(list(pending))
            for reply in pulled:
                pending.discard(reply.metadata.reply_to_message_id)
                self.reply_seconds[reply.metadata.src_node_id] = time.perf_counter() - sent_at
                replies.append(reply)
            if pending:
                wait = next_poll(wait, bool(pulled))
                time.sleep(min(wait, max(0.0, deadline - time.perf_counter())))
        if pending:
            self.tally.failures += len(pending)
            log(WARNING, "%d client(s) did not reply within %.0fs", len(pending), timeout)
        return replies

    def run(self, grid: Grid, on_round: Callable[[RoundRecord], None],
            start_round: int = 1) -> list[RoundRecord]:
        """Run rounds ``start_round..R``; ``on_round`` receives each finished round's record."""
        records = []
        for server_round in range(start_round, self.budget.num_rounds + 1):
            record = self.play_round(grid, server_round)
            records.append(record)
            on_round(record)
        return records

    def play_round(self, grid: Grid, server_round: int) -> RoundRecord:
        """One round: training, evaluation, :meth:`finish_round`; its record."""
        start = time.perf_counter()
        self.current = RoundState(RoundTally(round=server_round))
        record = RoundRecord(round=server_round, sampled=self.train_clients(server_round))
        server_seconds = eval_seconds = 0.0
        for configure, aggregate, evaluation in (
                (self.configure_train, self.aggregate_train, False),
                (self.configure_evaluate, self.aggregate_evaluate, True)):
            stage = tic = time.perf_counter()
            sent = self.without_excluded(configure(server_round))
            server_seconds += time.perf_counter() - tic
            # training is aggregated whenever clients were sampled: a client sent nothing
            # (e.g. PerFedRLNAS's over budget, eq. 9) still has its outcome
            if sent.letters or (record.sampled and not evaluation):
                replies = (self.send(grid, sent, evaluation=evaluation)
                           if sent.letters else [])
                tic = time.perf_counter()
                record = aggregate(server_round, replies, sent).written_into(record)
                server_seconds += time.perf_counter() - tic
            if evaluation:
                eval_seconds = time.perf_counter() - stage
        self.finish_round(grid, server_round)
        tally = self.current.tally
        return dataclasses.replace(
            self.timed(record), failures=tally.failures, rejected=tally.rejected,
            bytes_up=tally.bytes_up, bytes_down=tally.bytes_down, server_seconds=server_seconds,
            eval_seconds=eval_seconds, wall_seconds=time.perf_counter() - start)

    def timed(self, record: RoundRecord) -> RoundRecord:
        """``record`` with each trained client's traffic (``bytes_down``, ``bytes_up``) and
        simulated time in its training row, the time of the training an evaluation did in
        its row, and the round's ``simulated_seconds``
        (:mod:`pfednas.hardware.simulated_time`, on the clients' profiles)."""
        profiles, down, up = self.profiles, self.tally.train_down, self.tally.train_up

        def train_row(row: dict[str, Any]) -> dict[str, Any]:
            cid = row.get("client_id")
            if not isinstance(cid, int) or cid not in up or cid not in profiles:
                return row  # no accepted training reply of this client (this round)
            return timed_train_row(row, profiles[cid], bytes_down=down.get(cid, 0),
                                   bytes_up=up[cid])

        def eval_row(row: dict[str, Any]) -> dict[str, Any]:
            cid = row.get("client_id")
            return timed_eval_row(row, profiles[cid]) if isinstance(cid, int) \
                and cid in profiles else row

        train = [train_row(row) for row in record.train]
        evaluation = [eval_row(row) for row in record.evaluation]
        return dataclasses.replace(record, train=train, evaluation=evaluation,
                                   simulated_seconds=round_seconds(train, evaluation))

    def finish_round(self, grid: Grid, server_round: int) -> None:
        """Hook after a round's evaluation (e.g. PerFedRLNAS's new-client search); what it
        sends and receives counts in the round's tally."""

    def without_excluded(self, sent: Outgoing[Any]) -> Outgoing[Any]:
        """``sent`` less the letters to excluded clients (then neither sent nor missed)."""
        if not self.excluded:
            return sent
        return dataclasses.replace(sent, letters=[letter for letter in sent.letters
                                                  if letter.client_id not in self.excluded])

    # -- checkpoints and summary ---------------------------------------------------------------
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
