"""Which node holds which client id: claims, refusals and the operator's pins.

Flower addresses SuperNodes by node id; pfednas's clients (data partitions,
policies, budgets) by client id, which each node states once, when the server
asks (``PersonalizedStrategy.connect``). A claim binds the id to the node for
the whole run; a second claim of a bound id is refused and both nodes are named,
and a node holds one id. In a deployment the operator can pin ids to nodes by
the nodes' public keys: Flower 1.41 gives the ServerApp, per node, its node id
(drawn at random when the node registers) and, under SuperNode authentication,
the public key the operator registered (``Grid.get_nodes()`` → ``NodeInfo.
public_key``, PEM SubjectPublicKeyInfo). Only the key is stable and the
operator's: a pinned id is bound only to the node holding that key.

:class:`ClientClaims` is the strategy's half that asks the nodes (``connect``) and, in a
deployment, binds each node's hardware profile claim with its id (:mod:`pfednas.hardware.profile`).
"""

from __future__ import annotations

import math
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from logging import INFO, WARNING
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid

from pfednas.config import NODE_KEYS_ENV  # set by the operator where the ServerApp starts
from pfednas.hardware.profile import ClientProfile, ProfileBounds, profile_problem

if TYPE_CHECKING:
    from pfednas.strategies.budget import Budget


def claim_problem(node: int, claimed: Any, *, num_clients: int, node_of: Mapping[int, int],
                  node_key: bytes | None = None, pins: Mapping[int, bytes] | None = None
                  ) -> str | None:
    """Why ``node``'s claim of client id ``claimed`` is refused (None: bind it).

    ``node_of``: the ids bound so far; ``pins``: client id → the public key of the
    only node that may hold it (every id pinned when given); ``node_key``: the
    claiming node's registered public key.
    """
    if not isinstance(claimed, int) or isinstance(claimed, bool) \
            or not 0 <= claimed < num_clients:
        return f"node {node} claims client id {claimed!r}, not an id in [0, {num_clients})"
    holder = node_of.get(claimed)
    if holder is not None and holder != node:
        return (f"node {node} claims client id {claimed}, bound to node {holder}: refused, "
                f"node {holder} keeps it")
    held = [cid for cid, n in node_of.items() if n == node and cid != claimed]
    if held:
        return f"node {node} holds client id {held[0]} and now claims {claimed}: refused"
    if pins is not None and pins.get(claimed) != node_key:
        return (f"node {node} claims client id {claimed}, which the operator pinned to "
                "another node's public key: refused")
    return None


def pinned_keys(folder: Path, num_clients: int) -> dict[int, bytes]:
    """Client id → the PEM public key of ``folder/node-<id>.pub`` (OpenSSH format, as
    ``pfednas deploy keys`` writes it and ``flwr supernode register`` reads it).

    Raises ``ValueError`` naming the file when one is missing or not a public key.
    """
    from cryptography.hazmat.primitives import serialization

    out = {}
    for cid in range(num_clients):
        path = folder / f"node-{cid}.pub"
        try:
            key = serialization.load_ssh_public_key(path.read_bytes())
        except (OSError, ValueError, TypeError) as err:
            raise ValueError(f"{NODE_KEYS_ENV}: {path} is not a readable OpenSSH public key "
                             f"({err})") from err
        out[cid] = key.public_bytes(serialization.Encoding.PEM,
                                    serialization.PublicFormat.SubjectPublicKeyInfo)
    return out


def pins_from_env(num_clients: int) -> dict[int, bytes] | None:
    """The operator's pins (``$PFEDNAS_NODE_KEYS``, a folder of ``node-<id>.pub``), or None."""
    folder = os.environ.get(NODE_KEYS_ENV, "").strip()
    return pinned_keys(Path(folder).expanduser(), num_clients) if folder else None


class ClientClaims(ABC):
    """Client discovery, the half of :class:`pfednas.strategies.base.PersonalizedStrategy`
    that binds client ids (and a deployment's profile claims) to nodes.

    Every client has a hardware profile, ``self.profiles``: a simulation's strategy draws
    them from the seeded spread; in a deployment each node claims its own in its answer to
    the client-id query, bounded by the operator (``self.profile_bounds``), and a refused
    claim leaves the node without its client id. Clients in ``self.excluded`` (a budget no
    architecture fits, or below the fits_all floor) are neither sampled nor evaluated.
    """

    budget: Budget
    node_of: dict[int, int]
    pins: dict[int, bytes] | None  # client id -> the node's public key (PEM)
    # client id -> hardware profile: drawn by a simulation's strategy, claimed by each
    # node in a deployment (bounded by the operator's profile_bounds: None = not read)
    profiles: dict[int, ClientProfile]
    profile_bounds: ProfileBounds | None
    excluded: dict[int, str]  # client id -> why it takes no part

    @abstractmethod
    def send_and_collect(self, grid: Grid, messages: list[Message], *,
                         evaluation: bool = False) -> list[Message]:
        """Push messages and pull their replies (the round loop's)."""

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

    @abstractmethod
    def profiles_bound(self) -> None:
        """Hook once every client's claimed profile is known (a deployment)."""

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

    def profile_summary(self) -> dict[str, Any]:
        """``summary.json``'s ``profiles`` (each client's, with its source) and
        ``excluded_clients`` (who took no part, and why), where there are any."""
        out: dict[str, Any] = {}
        if self.profiles:
            out["profiles"] = [{"client_id": cid, **p.to_json()}
                               for cid, p in sorted(self.profiles.items())]
        if self.excluded:
            out["excluded_clients"] = [{"client_id": cid, "reason": reason}
                                       for cid, reason in sorted(self.excluded.items())]
        return out
