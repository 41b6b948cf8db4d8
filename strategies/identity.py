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
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pfednas.config import NODE_KEYS_ENV  # set by the operator where the ServerApp starts


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
