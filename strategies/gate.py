"""The reply gate every strategy shares: each reply judged against its request.

A reply is accepted only if it answers the request the server sent that client
(same node, same message type, once), carries the metrics of that request in
their ranges and the arrays the server expects back — from the record's metadata
and each payload's own ``.npy`` header before anything is decoded, then each
decoded array for its role (:mod:`pfednas.wire.validation`). Whatever a reply
holds, the gate returns: nothing of a rejected reply reaches the server's state.

The gate is a function, :func:`judge`: replies, the requests they answer and the rules
(:class:`GateRules`) in; the accepted replies and what it counted (:class:`Judged`) out.
The strategy folds that count into its round (:meth:`RoundState.count`). Training updates
may further be bounded by the round's median update size (:func:`bound_replies`,
:mod:`pfednas.strategies.robust`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from logging import WARNING
from typing import Any

import numpy as np
from flwr.app import Message, MessageType, MetricRecord
from flwr.common import log

from pfednas.packing import array_record
from pfednas.strategies.robust import bound_updates
from pfednas.wire.validation import (
    ArrayHeader,
    ArraySpec,
    MetricSpec,
    check_array_headers,
    check_arrays,
    check_metrics,
    examples_bound_problem,
    npy_payload_problem,
)

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

    def count(self, judged: Judged) -> None:
        """Add what the gate counted in one call to this round's."""
        self.tally.failures += judged.failures
        self.tally.rejected += judged.rejected
        self.tally.bytes_up += judged.bytes_up
        self.tally.train_up.update(judged.train_up)
        self.answered |= judged.answered


@dataclass(frozen=True)
class GateRules:
    """What a reply is judged by besides its request: the node each client id is bound to,
    the type and range of every metric, and the sample-count bounds (each client's
    partition size where the server knows it, else the first count it reported per
    message type, within ``examples_tolerance``)."""

    node_of: Mapping[int, int]
    metric_specs: Mapping[str, MetricSpec]
    partition_sizes: Sequence[int] | None
    first_examples: Mapping[tuple[int, str], int]
    examples_tolerance: float


@dataclass
class Judged:
    """What :func:`judge` returns: the accepted replies, as (metrics, decoded arrays) in
    client order, and what it counted: replies that failed (an error), replies rejected,
    the bytes that came up, per training reply accepted its bytes (``train_up``), the
    clients answered and their first sample counts (``first_examples``, new ones only)."""

    accepted: list[Reply] = field(default_factory=list)
    failures: int = 0
    rejected: int = 0
    bytes_up: int = 0
    train_up: dict[int, int] = field(default_factory=dict)
    answered: set[int] = field(default_factory=set)
    first_examples: dict[tuple[int, str], int] = field(default_factory=dict)


def judge(replies: Iterable[Message], requests: Mapping[int, Request], answered: set[int],
          rules: GateRules) -> Judged:
    """The valid replies, sorted by client id, and what the gate counted.

    Errors are counted as failures; malformed replies (wrong client id for the
    node, a type other than the request's, a second reply to one request, a
    required metric missing or out of its range, arrays of the wrong number /
    shape / dtype / size, a payload whose own ``.npy`` header disagrees, NaN or
    Inf, BatchNorm statistics out of their range, a sample count beyond what the
    server knows of the client) are rejected with a warning naming the client
    and the reason, and counted; nothing of them is used, and no exception of
    theirs escapes. Arrays are checked from the record's metadata and their
    ``.npy`` headers before they are decoded, and decoded once. ``answered``: the clients
    whose request already has its accepted reply (not changed here).
    """
    out = Judged()
    seen = set(answered)
    first = dict(rules.first_examples)
    rules = replace(rules, first_examples=first)  # the counts this call records, seen too
    for reply in replies:
        if reply.has_error():
            out.failures += 1
            log(WARNING, "A client failed: %s", reply.error.reason)
            continue
        metrics, arrays, reason, size = examine(reply, requests, seen, rules)
        out.bytes_up += size
        if reason is not None:
            out.rejected += 1
            log(WARNING, "Rejected the update of client %s (node %s): %s",
                str(metrics.get("client_id"))[:20], reply.metadata.src_node_id, reason)
            continue
        cid = int(metrics["client_id"])
        seen.add(cid)
        out.answered.add(cid)
        key = (cid, requests[cid].kind)
        if key not in first:
            first[key] = out.first_examples[key] = int(metrics["num_examples"])
        if requests[cid].kind == MessageType.TRAIN:
            out.train_up[cid] = size
        out.accepted.append((metrics, arrays))
    # in client order, not arrival order: sums over replies are then reproducible
    out.accepted.sort(key=lambda r: int(r[0]["client_id"]))
    return out


def examine(reply: Message, requests: Mapping[int, Request], answered: set[int],
            rules: GateRules) -> tuple[dict[str, Any], list[np.ndarray], str | None, int]:
    """A reply's metrics, its decoded arrays, why it is rejected (None: accepted) and
    its bytes; whatever the reply holds, this returns."""
    metrics: dict[str, Any] = {}
    try:
        record = reply.content.get("metrics")
        metrics = dict(record) if isinstance(record, MetricRecord) else {}
        for key in SERVER_METRICS:
            metrics.pop(key, None)
        arrays_record = array_record(reply.content)  # packed or plain; PackingError: refused
        values = list(arrays_record.values()) if arrays_record is not None else []
        headers = [ArrayHeader(tuple(a.shape), str(a.dtype), str(a.stype), len(a.data))
                   for a in values]
        reason = reply_problem(reply, metrics, headers, requests, answered, rules)
        arrays: list[np.ndarray] = []
        if reason is None:
            arrays, reason = decoded(values, requests[int(metrics["client_id"])].specs)
        size = (sum(a.nbytes for a in arrays) if arrays else sum(h.size for h in headers))
        return metrics, arrays, reason, size
    except Exception as err:  # noqa: BLE001 - the gate's last line: reject, never crash
        return metrics, [], f"unreadable reply ({type(err).__name__}: {str(err)[:200]})", 0


def decoded(values: list[Any], expected: list[ArraySpec]
            ) -> tuple[list[np.ndarray], str | None]:
    """The arrays of a reply whose metadata passed: each ``.npy`` header checked against
    the request's spec before decoding, the decoded arrays checked for their roles."""
    for i, (value, spec) in enumerate(zip(values, expected, strict=True)):
        if (problem := npy_payload_problem(value.data, spec)) is not None:
            return [], f"array {i}: {problem}"
    try:
        arrays = [a.numpy() for a in values]
    except Exception as err:  # noqa: BLE001 - headers matched; a corrupt body is left
        return [], f"arrays cannot be decoded ({type(err).__name__}: {str(err)[:200]})"
    return arrays, check_arrays(arrays, expected)


def reply_problem(reply: Message, metrics: dict[str, Any], headers: list[ArrayHeader],
                  requests: Mapping[int, Request], answered: set[int], rules: GateRules
                  ) -> str | None:
    """Why a reply must be rejected, from its metrics and array metadata (None: fine).

    The reply is judged against the request the server sent this client (its
    type, the arrays it may return), never against what the reply says it is.
    """
    cid = metrics.get("client_id")
    if not isinstance(cid, int) or isinstance(cid, bool) \
            or rules.node_of.get(cid) != reply.metadata.src_node_id:
        return f"client id {cid!r} is not the one of node {reply.metadata.src_node_id}"
    request = requests.get(cid)
    if request is None:
        return "no request was sent to this client"
    kind = reply.metadata.message_type
    if kind != request.kind:
        return f"a {str(kind)[:20]!r} reply to a {request.kind!r} request"
    if cid in answered:
        return "a second reply to one request"
    return (check_metrics(metrics, request.metrics, dict(rules.metric_specs))
            or examples_problem(cid, kind, int(metrics["num_examples"]), rules)
            or check_array_headers(headers, request.specs))


def examples_problem(client_id: int, message_type: str, n: int, rules: GateRules
                     ) -> str | None:
    limit = None if rules.partition_sizes is None else rules.partition_sizes[client_id]
    return examples_bound_problem(
        n, limit=limit, reference=rules.first_examples.get((client_id, message_type)),
        tolerance=rules.examples_tolerance)


def bound_replies(good: list[Reply], requests: Mapping[int, Request], factor: float | None,
                  server_round: int) -> list[Reply]:
    """Accepted training replies, each update bounded by ``factor`` × the round's upper
    median update RMS (:func:`pfednas.strategies.robust.bound_updates`; the update is the
    reply's arrays minus those sent). A bounded reply's metrics gain ``update_scale``;
    with no bound the replies are returned as they are."""
    if factor is None or not good:
        return good
    sent = [requests[int(metrics["client_id"])].sent for metrics, _ in good]
    bounded, scales = bound_updates([(arrays, reference) for (_, arrays), reference
                                     in zip(good, sent, strict=True)], factor)
    out = []
    for (metrics, _), arrays, scale in zip(good, bounded, scales, strict=True):
        if scale < 1.0:
            log(WARNING, "Round %d: the update of client %s scaled by %.3g to the norm "
                "bound", server_round, metrics["client_id"], scale)
            metrics = {**metrics, "update_scale": scale}
        out.append((metrics, arrays))
    return out
