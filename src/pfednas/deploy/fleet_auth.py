"""Which registered SuperNode signed a Fleet API request, known from its headers alone.

Flower 1.41's SuperNode signs every Fleet API call over HTTP in three headers
(``flwr.supernode.node_auth_http_interceptor``): ``flwr-public-key``, its public key
(base64 of PEM SubjectPublicKeyInfo); ``flwr-timestamp``, the ISO time of the call; and
``flwr-signature``, ECDSA-SHA256 over that timestamp. The SuperLink accepts a call whose
timestamp is younger than ``TIMESTAMP_TOLERANCE + SYSTEM_TIME_TOLERANCE`` (305 s) and at
most ``SYSTEM_TIME_TOLERANCE`` (5 s) ahead, whose signature verifies with that key, and
whose key the operator registered (``flwr.superlink.routers.fleet.node_auth``). The body
plays no part, so :func:`signer` makes the same check before a byte of body is read; the
SuperLink still checks that the key holds the node id the body names.

The registered keys are the ``*.pub`` files the operator registers (``flwr supernode
register``, OpenSSH format as ``pfednas deploy keys`` writes them): :class:`RegisteredKeys`.
Flower's names and tolerances are restated here, not imported (importing ``flwr`` would
double the gateway's memory, 40 → 69 MB); ``tests/test_fleet_auth.py`` keeps them equal.
"""

from __future__ import annotations

import binascii
import datetime as dt
import logging
import time
from base64 import b64decode
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

# Flower 1.41: flwr.supercore.constant and flwr.common.constant
PUBLIC_KEY_HEADER = b"flwr-public-key"   # FLEET_HTTP_PUBLIC_KEY_HEADER
SIGNATURE_HEADER = b"flwr-signature"     # FLEET_HTTP_SIGNATURE_HEADER
TIMESTAMP_HEADER = b"flwr-timestamp"     # TIMESTAMP_HEADER
TIMESTAMP_TOLERANCE_S = 300              # TIMESTAMP_TOLERANCE
CLOCK_SKEW_S = 5                         # SYSTEM_TIME_TOLERANCE
RELOAD_S = 1.0  # an unknown key re-reads the folder at most this often

log = logging.getLogger("pfednas.fleet_gateway")


@dataclass(frozen=True)
class RegisteredKey:
    name: str  # the file's stem: node-3 for node-3.pub
    key: ec.EllipticCurvePublicKey


def read_public_keys(folder: Path) -> dict[bytes, RegisteredKey]:
    """Every EC ``*.pub`` of ``folder`` by its PEM SubjectPublicKeyInfo (the bytes a node
    sends); a file that is not one is named in a warning and skipped."""
    keys = {}
    for path in sorted(folder.glob("*.pub")):
        try:
            key = serialization.load_ssh_public_key(path.read_bytes())
        except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as err:
            log.warning("skipped %s: not an OpenSSH public key (%s)", path, err)
            continue
        if not isinstance(key, ec.EllipticCurvePublicKey):
            log.warning("skipped %s: not an EC key (Flower's node keys are)", path)
            continue
        pem = key.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo)
        keys[pem] = RegisteredKey(path.stem, key)
    return keys


class RegisteredKeys:
    """The public keys of ``folder``, re-read when a request shows one not among them (at
    most every :data:`RELOAD_S`): a key registered while the gateway runs is taken without
    a restart. A key removed from the folder stays until the next re-read; the SuperLink
    refuses it meanwhile."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.keys = read_public_keys(folder)
        self.read_at = time.monotonic()

    def __len__(self) -> int:
        return len(self.keys)

    def find(self, pem: bytes) -> RegisteredKey | None:
        found = self.keys.get(pem)
        if found is None and time.monotonic() - self.read_at >= RELOAD_S:
            self.keys = read_public_keys(self.folder)
            self.read_at = time.monotonic()
            found = self.keys.get(pem)
        return found


def signer(headers: Iterable[tuple[bytes, bytes]], keys: RegisteredKeys,
           now: dt.datetime | None = None) -> RegisteredKey | None:
    """The registered key that signed a request with these headers, as the SuperLink
    checks it; ``None`` for a missing, malformed, stale or forged signature or a key
    not registered."""
    fields: Mapping[bytes, bytes] = {name.lower(): value for name, value in headers}
    try:
        pem = b64decode(fields[PUBLIC_KEY_HEADER], validate=True)
        signature = b64decode(fields[SIGNATURE_HEADER], validate=True)
        timestamp = fields[TIMESTAMP_HEADER].decode("ascii")
        age = ((now or dt.datetime.now(dt.UTC)) - dt.datetime.fromisoformat(timestamp))
        if not -CLOCK_SKEW_S < age.total_seconds() < TIMESTAMP_TOLERANCE_S + CLOCK_SKEW_S:
            return None
        found = keys.find(pem)
        if found is None:
            return None
        found.key.verify(signature, timestamp.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        return found
    except (KeyError, ValueError, TypeError, UnicodeError, binascii.Error, InvalidSignature):
        return None
