"""The reply gate every strategy shares: each reply judged against its request.

A reply is accepted only if it answers the request the server sent that client
(same node, same message type, once), carries the metrics of that request in
their ranges and the arrays the server expects back — from the record's metadata
and each payload's own ``.npy`` header before anything is decoded, then each
decoded array for its role (:mod:`pfednas.wire.validation`). Whatever a reply
holds, the gate returns: nothing of a rejected reply reaches the server's state.
Training updates may further be bounded by the round's median update size
(:meth:`ReplyGate.train_replies`, :mod:`pfednas.strategies.robust`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from logging import WARNING
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import ArrayRecord, Message, MessageType, MetricRecord
from flwr.common import log

from pfednas.strategies.robust import bound_updates
from pfednas.wire.validation import (
    KNOWN_METRICS,
    REQUIRED_METRICS,
    ArrayHeader,
    ArraySpec,
    MetricSpec,
    check_array_headers,
    check_arrays,
    check_metrics,
    examples_bound_problem,
    npy_payload_problem,
)

if TYPE_CHECKING:
    from pfednas.strategies.budget import Budget

Reply = tuple[dict[str, Any], list[np.ndarray]]  # an accepted reply: its metrics, decoded arrays
SERVER_METRICS = ("update_scale",)  # set by the server on accepted replies, never by a client


@dataclass(frozen=True)
class Request:
    """What the server sent a client: the message type, the arrays a reply may carry
    (shapes, dtypes, roles), for training the arrays sent (the reference of its update),
    and the metrics a valid reply carries (types and ranges)."""

    kind: str
    specs: list[ArraySpec]
    sent: list[np.ndarray]
    metrics: list[MetricSpec] = field(default_factory=list)  # those a valid reply carries


@dataclass
class RoundTally:
    """What the gate and the round loop count in one round: replies that failed (an
    error, or none before the timeout), replies rejected, and the array bytes that
    travelled each way; per client, the bytes of its training message (``train_down``)
    and of its accepted training reply (``train_up``: the clients that trained). The loop
    starts one per round and copies it into the round's record."""

    round: int
    failures: int = 0
    rejected: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    train_down: dict[int, int] = field(default_factory=dict)
    train_up: dict[int, int] = field(default_factory=dict)


@dataclass
class RoundState:
    """One round's state, started afresh by the round loop each round: its tally, the last
    message sent to each client (:class:`Request`), the clients whose request has its
    accepted reply, and the seconds from send to reply of each node's last exchange."""

    tally: RoundTally
    requests: dict[int, Request] = field(default_factory=dict)
    answered: set[int] = field(default_factory=set)
    reply_seconds: dict[int, float] = field(default_factory=dict)


class ReplyGate:
    """The gate's half of :class:`pfednas.strategies.base.PersonalizedStrategy`.

    Subclasses name the extra metrics their replies must carry in
    ``TRAIN_REQUIRES`` / ``EVALUATE_REQUIRES`` (types and ranges:
    :data:`pfednas.wire.validation.KNOWN_METRICS`), or name a message's own when they send
    it (its :class:`Request`); :meth:`ok_replies` rejects a reply without them.
    """

    TRAIN_REQUIRES: tuple[str, ...] = ()
    EVALUATE_REQUIRES: tuple[str, ...] = ()
    budget: Budget
    current: RoundState              # this round's
    node_of: dict[int, int]
    partition_sizes: list[int] | None
    first_examples: dict[tuple[int, str], int]

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

    def ok_replies(self, replies: Iterable[Message]) -> list[Reply]:
        """Valid replies, as (metrics, decoded arrays), sorted by client id.

        Errors are counted as failures; malformed replies (wrong client id for the
        node, a type other than the request's, a second reply to one request, a
        required metric missing or out of its range, arrays of the wrong number /
        shape / dtype / size, a payload whose own ``.npy`` header disagrees, NaN or
        Inf, BatchNorm statistics out of their range, a sample count beyond what the
        server knows of the client) are rejected with a warning naming the client
        and the reason, and counted (``self.tally``); nothing of them is used, and no exception of
        theirs escapes. Arrays are checked from the record's metadata and their
        ``.npy`` headers before they are decoded, and decoded once.
        """
        good = []
        for reply in replies:
            if reply.has_error():
                self.tally.failures += 1
                log(WARNING, "A client failed: %s", reply.error.reason)
                continue
            metrics, arrays, reason, size = self.examine(reply)
            self.tally.bytes_up += size
            if reason is not None:
                self.tally.rejected += 1
                log(WARNING, "Rejected the update of client %s (node %s): %s",
                    str(metrics.get("client_id"))[:20], reply.metadata.src_node_id, reason)
                continue
            cid = int(metrics["client_id"])
            self.answered.add(cid)
            self.first_examples.setdefault((cid, self.requests[cid].kind),
                                           int(metrics["num_examples"]))
            if self.requests[cid].kind == MessageType.TRAIN:
                self.tally.train_up[cid] = size
            good.append((metrics, arrays))
        # in client order, not arrival order: sums over replies are then reproducible
        return sorted(good, key=lambda r: int(r[0]["client_id"]))

    def examine(self, reply: Message) -> tuple[dict[str, Any], list[np.ndarray], str | None,
                                                int]:
        """A reply's metrics, its decoded arrays, why it is rejected (None: accepted) and
        its bytes; whatever the reply holds, this returns."""
        metrics: dict[str, Any] = {}
        try:
            record = reply.content.get("metrics")
            metrics = dict(record) if isinstance(record, MetricRecord) else {}
            for key in SERVER_METRICS:
                metrics.pop(key, None)
            arrays_record = reply.content.get("arrays")
            values = list(arrays_record.values()) if isinstance(arrays_record, ArrayRecord) \
                else []
            headers = [ArrayHeader(tuple(a.shape), str(a.dtype), str(a.stype), len(a.data))
                       for a in values]
            reason = self.reply_problem(reply, metrics, headers)
            arrays: list[np.ndarray] = []
            if reason is None:
                arrays, reason = self.decoded(metrics, values)
            size = (sum(a.nbytes for a in arrays) if arrays else sum(h.size for h in headers))
            return metrics, arrays, reason, size
        except Exception as err:  # noqa: BLE001 - the gate's last line: reject, never crash
            return metrics, [], f"unreadable reply ({type(err).__name__}: {str(err)[:200]})", 0

    def decoded(self, metrics: dict[str, Any], values: list[Any]
                ) -> tuple[list[np.ndarray], str | None]:
        """The arrays of a reply whose metadata passed: each ``.npy`` header checked against
        the request's spec before decoding, the decoded arrays checked for their roles."""
        expected = self.requests[int(metrics["client_id"])].specs
        for i, (value, spec) in enumerate(zip(values, expected, strict=True)):
            if (problem := npy_payload_problem(value.data, spec)) is not None:
                return [], f"array {i}: {problem}"
        try:
            arrays = [a.numpy() for a in values]
        except Exception as err:  # noqa: BLE001 - headers matched; a corrupt body is left
            return [], f"arrays cannot be decoded ({type(err).__name__}: {str(err)[:200]})"
        return arrays, check_arrays(arrays, expected)

    def train_replies(self, replies: Iterable[Message]) -> list[Reply]:
        """Accepted training replies, each update bounded by ``Budget.update_norm_bound`` ×
        the round's lower median update RMS (:func:`pfednas.strategies.robust.bound_updates`;
        the update is the reply's arrays minus those sent). A bounded reply's metrics gain
        ``update_scale``; with no bound the replies are returned as accepted."""
        good = self.ok_replies(replies)
        factor = self.budget.update_norm_bound
        if factor is None or not good:
            return good
        sent = [self.requests[int(metrics["client_id"])].sent for metrics, _ in good]
        bounded, scales = bound_updates([(arrays, reference) for (_, arrays), reference
                                         in zip(good, sent, strict=True)], factor)
        out = []
        for (metrics, _), arrays, scale in zip(good, bounded, scales, strict=True):
            if scale < 1.0:
                log(WARNING, "Round %d: the update of client %s scaled by %.3g to the norm "
                    "bound", self.tally.round, metrics["client_id"], scale)
                metrics = {**metrics, "update_scale": scale}
            out.append((metrics, arrays))
        return out

    def reply_problem(self, reply: Message, metrics: dict[str, Any],
                      headers: list[ArrayHeader]) -> str | None:
        """Why a reply must be rejected, from its metrics and array metadata (None: fine).

        The reply is judged against the request the server sent this client (its
        type, the arrays it may return), never against what the reply says it is.
        """
        cid = metrics.get("client_id")
        if not isinstance(cid, int) or isinstance(cid, bool) \
                or self.node_of.get(cid) != reply.metadata.src_node_id:
            return f"client id {cid!r} is not the one of node {reply.metadata.src_node_id}"
        request = self.requests.get(cid)
        if request is None:
            return "no request was sent to this client"
        kind = reply.metadata.message_type
        if kind != request.kind:
            return f"a {str(kind)[:20]!r} reply to a {request.kind!r} request"
        if cid in self.answered:
            return "a second reply to one request"
        return (check_metrics(metrics, request.metrics, self.metric_specs())
                or self.examples_problem(cid, kind, int(metrics["num_examples"]))
                or check_array_headers(headers, request.specs))

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
        """A client's weight in averages and merges: its sample count, or 1 (uniform).

        In a deployment a sample count weighs only where the operator bounds it
        (``partition_sizes`` from ``federation.client_examples``); without that bound
        every client weighs 1: its own first report bounds nothing.
        """
        if self.budget.weighting == "uniform" or (self.budget.deployment
                                                  and self.partition_sizes is None):
            return 1.0
        return float(metrics["num_examples"])
