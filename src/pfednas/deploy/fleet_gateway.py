"""The one port a multi-machine SuperLink shows other machines: its Fleet API, nothing else.

Flower 1.41's SuperLink serves its Fleet API (SuperNodes), Control API (``flwr run``,
``flwr supernode register``) and Runtime API (the ServerApp executor) on one HTTPS port,
and the open-source SuperLink authenticates no Control API caller: whoever reaches that
port with the CA certificate can register a SuperNode key or start a run whose ClientApp
executes on every silo (``tests/test_control_api_exposure.py`` shows it). So the SuperLink
listens where only its operator reaches it (loopback, or the compose ``link`` network),
and this gateway, on the published port, forwards to it only

* ``POST /v1/fleet/<call>`` for the twelve calls of Flower 1.41's Fleet API, signed by a
  registered SuperNode (``--node-keys``, checked on the headers before any body), and
* ``GET`` / ``HEAD /health``;

every other request (Control, Runtime, ``/docs``, a path with ``..``, ``%`` or a query)
is answered ``404`` here, and a Fleet call without a registered node's signature ``401``:
neither reaches the SuperLink. The gateway serves TLS with the SuperLink's certificate and
verifies the SuperLink's certificate upstream::

    python -m pfednas.deploy.fleet_gateway --host 0.0.0.0 --port 9092 \\
        --upstream 127.0.0.1:9093 --ssl-certfile certificates/server.pem \\
        --ssl-keyfile certificates/server.key --ssl-ca-certfile certificates/ca.crt \\
        --node-keys keys

**Who gets in.** ``--node-keys`` is the folder of the ``node-<i>.pub`` files the operator
registers with ``flwr supernode register``. A Fleet call is forwarded only when its
headers carry one of these keys, a timestamp of the last 305 s and that key's signature
over it: the check the SuperLink makes (:mod:`pfednas.deploy.fleet_auth`), made here
before a byte of body is read, so an outsider can make the gateway hold request heads and
connections (bounded below) but never a body, and no outsider can hold what a registered
node needs.

**What a caller can make it hold.**

* Bodies per call, refused ``413`` as soon as ``Content-Length`` exceeds them (``411``
  for a body without one), before a byte of body is read.

  ``push-object`` carries one object of Flower's object store: an array, or a 5 MiB chunk
  of a larger one (Flower's ``FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE``). pfednas packs a
  message's arrays into one array (:mod:`pfednas.packing`), so a whole state travels as one
  object up to 5 MiB and as chunks beyond. Measured at 32 px, 3 channels and 100 classes,
  the largest whole state pfednas sends is the ``darts_s2`` supernet at SPIDER's width
  (channels 16): 709,685 float32, 2.71 MiB (``mobilenetv3`` 2.64 MiB, ``vit`` 1.81 MiB,
  ``darts_s2`` at channels 8 0.80 MiB). The default ``--max-object-mb 8`` is Flower's
  5 MiB chunk plus 60 %, and 2.9 times that largest state; raise it with Flower's chunk
  size.

  ``push-messages`` carries a reply's metadata and object tree, about 68 bytes per
  object: a packed reply is 6 objects; a reply of unpacked arrays (which the reply gate
  still reads) is two objects an array, 70,277 bytes for the ``darts_s2`` supernet's
  1,025 objects, under :data:`MESSAGES_BODY_BYTES` (1 MiB, 15 times that). Every other
  call carries ids, a public key or a heartbeat interval (227 bytes at most,
  ``activate-node``), under :data:`CONTROL_BODY_BYTES` (64 KiB). Replies come from the
  SuperLink and are not limited here.
* A body is read in full (at most its call's limit) and forwarded only once every
  declared byte arrived, rather than streamed, so that a client that leaves early has
  nothing forwarded. It gets ``408`` when it pauses over ``--read-timeout`` between
  chunks, or falls behind :data:`MIN_BODY_RATE` (64 KiB/s) after the first
  ``--read-timeout`` seconds. The bodies held at once, counted by the bytes received
  (not declared), are at most ``--max-buffered-mb`` (``503`` beyond).
* A request head (request line and headers) still incomplete past :data:`HEAD_BYTES`
  gets ``400``; one not complete ``--read-timeout`` after the TLS handshake or the
  previous response has its connection aborted; an idle keep-alive connection is closed
  after :data:`KEEP_ALIVE_S` seconds.
* Requests in flight: ``--max-per-peer`` per registered node (by its key), and as many
  per client address for ``/health`` (``503`` beyond).
* Connections, counted from the TCP accept (:mod:`pfednas.deploy.fleet_connections`):
  twice ``--max-per-peer`` per client address and ``--max-connections`` in all, aborted at
  the accept beyond; a TLS handshake not complete ``--read-timeout`` after the accept is
  aborted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import ssl
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from pfednas.deploy.fleet_auth import RegisteredKeys, signer
from pfednas.deploy.fleet_connections import guarded_protocol, server_context

FLEET_CALLS = (
    "register-node", "activate-node", "deactivate-node", "unregister-node",
    "send-node-heartbeat", "pull-messages", "push-messages", "get-run", "get-fab",
    "push-object", "pull-object", "confirm-message-received",
)
FORWARDED = frozenset({("POST", f"/v1/fleet/{call}") for call in FLEET_CALLS}
                      | {("GET", "/health"), ("HEAD", "/health")})
KiB, MiB = 1 << 10, 1 << 20
CONTROL_BODY_BYTES = 64 * KiB
MESSAGES_BODY_BYTES = 1 * MiB
DEFAULT_OBJECT_MB = 8
DEFAULT_BUFFERED_MB = 128
DEFAULT_PER_PEER = 8
DEFAULT_CONNECTIONS = 256
DEFAULT_READ_TIMEOUT_S = 10.0
MIN_BODY_RATE = 64 * KiB  # bytes per second, after the first read timeout of a body
HEAD_BYTES = 16 * KiB
KEEP_ALIVE_S = 5
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "te", "trailer", "trailers", "transfer-encoding", "upgrade", "host",
                        "content-length", "content-encoding"})
UPSTREAM_TIMEOUT = httpx.Timeout(120.0, connect=10.0)

log = logging.getLogger("pfednas.fleet_gateway")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Take = Callable[[int], None]


class Refused(Exception):
    """A request answered here with ``status`` and never forwarded."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ClientGone(Exception):
    """The client left before its body was complete: nothing to forward, no one to answer."""


@dataclass(frozen=True)
class GatewayLimits:
    """What callers can make one gateway hold (see the module docstring)."""

    object_bytes: int = DEFAULT_OBJECT_MB * MiB
    buffered_bytes: int = DEFAULT_BUFFERED_MB * MiB
    requests_per_peer: int = DEFAULT_PER_PEER
    connections: int = DEFAULT_CONNECTIONS
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S

    def body_limit(self, path: str) -> int:
        if path == "/v1/fleet/push-object":
            return self.object_bytes
        if path == "/v1/fleet/push-messages":
            return MESSAGES_BODY_BYTES
        return 0 if path == "/health" else CONTROL_BODY_BYTES

    def __str__(self) -> str:
        return (f"bodies up to {self.object_bytes / MiB:g} MiB (push-object), "
                f"{MESSAGES_BODY_BYTES // KiB} KiB (push-messages), "
                f"{CONTROL_BODY_BYTES // KiB} KiB (other calls), "
                f"{self.buffered_bytes / MiB:g} MiB held at once; "
                f"{self.requests_per_peer} requests per node or address; "
                f"{2 * self.requests_per_peer} connections per address, "
                f"{self.connections} in all; read and handshake timeout "
                f"{self.read_timeout_s:g} s")


def forwarded_path(method: str, raw_path: bytes, query: bytes) -> str | None:
    """The path to forward, or ``None``: an exact match of an allowed call, nothing else
    (the path is compared byte for byte before any decoding or dot-segment removal)."""
    if query:
        return None
    try:
        path = raw_path.decode("ascii")
    except UnicodeDecodeError:
        return None
    return path if (method, path) in FORWARDED else None


def declared_size(method: str, headers: Iterable[tuple[bytes, bytes]], limit: int) -> int:
    """The body's length as ``Content-Length`` declares it (h11 has checked its syntax),
    or :class:`Refused`: ``411`` for a POST without one, ``413`` over ``limit``."""
    fields = {name.lower(): value for name, value in headers}
    if b"transfer-encoding" in fields or b"content-length" not in fields:
        if method == "POST":
            raise Refused(411, "a Content-Length is required")
        return 0
    size = int(fields[b"content-length"])
    if size > limit:
        raise Refused(413, f"request body over {limit} bytes")
    return size


class BodyBudget:
    """Body bytes the gateway holds, all requests together, counted as they arrive."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    @contextmanager
    def holding(self) -> Iterator[Take]:
        """``take(n)`` for one request's next ``n`` bytes (:class:`Refused` ``503`` past the
        limit); everything it took is given back at the exit."""
        taken = 0

        def take(n: int) -> None:
            nonlocal taken
            if self.held + n > self.limit:
                raise Refused(503, "gateway busy: too many request bodies in flight")
            self.held += n
            taken += n

        try:
            yield take
        finally:
            self.held -= taken


async def read_body(receive: Receive, size: int, *, take: Take, idle_s: float,
                    min_rate: float) -> bytes:
    """Exactly ``size`` bytes of body, each ``take``-n as it arrives; :class:`Refused`
    ``408`` when the client pauses over ``idle_s``, or when ``idle_s + n / min_rate``
    seconds after the start it has sent no more than ``n`` bytes; :class:`ClientGone` when
    the client leaves (or ends its body) before ``size`` bytes."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    chunks: list[bytes] = []
    received = 0
    more = True
    while more:
        due = start + idle_s + received / min_rate  # the next bytes must be here by then
        try:
            message = await asyncio.wait_for(receive(), min(idle_s, due - loop.time()))
        except TimeoutError:
            raise Refused(408, f"request body incomplete after {received} bytes") from None
        if message["type"] == "http.disconnect":
            raise ClientGone(f"left after {received} of {size} bytes")
        chunk = message.get("body", b"")
        if received + len(chunk) > size:
            raise Refused(413, f"request body over its Content-Length of {size} bytes")
        take(len(chunk))
        chunks.append(chunk)
        received += len(chunk)
        more = message.get("more_body", False)
    if received != size:
        raise ClientGone(f"ended its body after {received} of {size} bytes")
    return b"".join(chunks)


def _forward_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers
            if k.decode("latin-1").lower() not in HOP_BY_HOP]


async def _respond(send: Send, status: int, body: bytes,
                   headers: Sequence[tuple[str, str]] = ()) -> None:
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _refuse(send: Send, refused: Refused) -> None:
    """Answer here and close the connection (its body, if any, is left unread)."""
    await _respond(send, refused.status, f"{refused.reason}\n".encode(),
                   [("content-type", "text/plain"), ("connection", "close")])


class FleetGateway:
    """An ASGI app forwarding the Fleet API calls that a node of ``keys`` signed to
    ``upstream`` (``https://HOST:PORT``)."""

    def __init__(self, upstream: str, verify: ssl.SSLContext, keys: RegisteredKeys,
                 limits: GatewayLimits | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.verify = verify
        self.keys = keys
        self.limits = limits or GatewayLimits()
        self.client: httpx.AsyncClient | None = None
        self.in_flight: Counter[str] = Counter()  # requests being served, per node or address
        self.budget = BodyBudget(self.limits.buffered_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.client = httpx.AsyncClient(verify=self.verify, timeout=UPSTREAM_TIMEOUT)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.client is not None:
                    await self.client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        raw_path = scope.get("raw_path") or scope["path"].encode()
        path = forwarded_path(method, raw_path, scope.get("query_string", b""))
        peer = (scope.get("client") or ("?", 0))[0]
        try:
            if path is None:
                raise Refused(404, "not served here: this port forwards the Fleet API only")
            holder = peer if path == "/health" else self._node(scope["headers"])
            size = declared_size(method, scope["headers"], self.limits.body_limit(path))
            with self._in_flight(holder), self.budget.holding() as take:
                body = await read_body(receive, size, take=take,
                                       idle_s=self.limits.read_timeout_s, min_rate=MIN_BODY_RATE)
                await self._forward(method, path, scope["headers"], body, send)
        except Refused as refused:
            what = "not a Fleet API call" if refused.status == 404 else refused.reason
            log.warning("refused %s %r from %s: %s", method, raw_path.decode("latin-1"), peer,
                        what)
            await _refuse(send, refused)
        except ClientGone as gone:
            log.warning("dropped %s %s from %s, nothing forwarded: the client %s", method, path,
                        peer, gone)

    def _node(self, headers: list[tuple[bytes, bytes]]) -> str:
        """The registered node that signed the request, or :class:`Refused` ``401``."""
        node = signer(headers, self.keys)
        if node is None:
            raise Refused(401, "not signed by a registered SuperNode (--node-keys)")
        return node.name

    @contextmanager
    def _in_flight(self, holder: str) -> Iterator[None]:
        """Count a request against its node's (or address's) cap while it is served."""
        if self.in_flight[holder] >= self.limits.requests_per_peer:
            raise Refused(503, f"over {self.limits.requests_per_peer} requests from {holder}")
        self.in_flight[holder] += 1
        try:
            yield
        finally:
            self.in_flight[holder] -= 1
            if not self.in_flight[holder]:
                del self.in_flight[holder]

    async def _forward(self, method: str, path: str, headers: list[tuple[bytes, bytes]],
                       body: bytes, send: Send) -> None:
        assert self.client is not None, "the lifespan starts the upstream client"
        try:
            reply = await self.client.request(method, self.upstream + path, content=body,
                                              headers=_forward_headers(headers))
        except httpx.HTTPError as err:
            log.warning("upstream %s%s failed: %s", self.upstream, path, err)
            await _respond(send, 502, b"SuperLink unreachable\n")
            return
        reply_headers = [(k, v) for k, v in reply.headers.multi_items()
                         if k.lower() not in HOP_BY_HOP]
        await _respond(send, reply.status_code, reply.content, reply_headers)


def upstream_context(ca_cert: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_cert))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pfednas.deploy.fleet_gateway",
        description="Publish a SuperLink's Fleet API only (TLS in front, TLS upstream).")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on")
    parser.add_argument("--port", type=int, default=9092)
    parser.add_argument("--upstream", required=True, metavar="HOST:PORT",
                        help="the SuperLink, reachable from here only (e.g. 127.0.0.1:9093)")
    parser.add_argument("--ssl-certfile", type=Path, required=True,
                        help="certificate shown to SuperNodes (the SuperLink's server.pem)")
    parser.add_argument("--ssl-keyfile", type=Path, required=True)
    parser.add_argument("--ssl-ca-certfile", type=Path, required=True,
                        help="CA that signed the SuperLink's certificate (verified upstream)")
    parser.add_argument("--node-keys", type=Path, required=True, metavar="DIR",
                        help="folder of the registered SuperNodes' public keys (*.pub, "
                             "OpenSSH): only Fleet calls they sign are forwarded")
    limits = parser.add_argument_group("limits (docs/DEPLOYMENT.md, section 9)")
    limits.add_argument("--max-object-mb", type=float, default=DEFAULT_OBJECT_MB,
                        help="largest push-object body, MiB (default: %(default)s)")
    limits.add_argument("--max-buffered-mb", type=float, default=DEFAULT_BUFFERED_MB,
                        help="request bodies held at once, all clients, MiB (default: %(default)s)")
    limits.add_argument("--max-per-peer", type=int, default=DEFAULT_PER_PEER,
                        help="requests in flight per node or client address; connections "
                             "per address: twice this (default: %(default)s)")
    limits.add_argument("--max-connections", type=int, default=DEFAULT_CONNECTIONS,
                        help="connections, all clients (default: %(default)s)")
    limits.add_argument("--read-timeout", type=float, default=DEFAULT_READ_TIMEOUT_S,
                        metavar="SECONDS", help="for a TLS handshake, a request head, and "
                        "between body chunks (default: %(default)s)")
    return parser


def _limits(args: argparse.Namespace) -> GatewayLimits:
    return GatewayLimits(object_bytes=int(args.max_object_mb * MiB),
                         buffered_bytes=int(args.max_buffered_mb * MiB),
                         requests_per_peer=args.max_per_peer, connections=args.max_connections,
                         read_timeout_s=args.read_timeout)


class _HideHttpScheme(logging.Filter):
    """uvicorn listens on plain TCP here (TLS is the gateway's own) and would announce
    ``http://``; the gateway announces its ``https://`` address itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Uvicorn running on")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if min(args.max_object_mb, args.max_buffered_mb, args.max_per_peer, args.max_connections,
           args.read_timeout) <= 0:
        parser.error("every limit must be positive")
    missing = [str(p) for p in (args.ssl_certfile, args.ssl_keyfile, args.ssl_ca_certfile)
               if not p.is_file()]
    if missing:
        print(f"fleet_gateway: error: missing {', '.join(missing)}", file=sys.stderr)
        return 2
    keys = RegisteredKeys(args.node_keys) if args.node_keys.is_dir() else None
    if not keys:
        print(f"fleet_gateway: error: no EC public key (*.pub) in {args.node_keys}",
              file=sys.stderr)
        return 2
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("uvicorn.error").addFilter(_HideHttpScheme())
    limits = _limits(args)
    app = FleetGateway(f"https://{args.upstream}", upstream_context(args.ssl_ca_certfile), keys,
                       limits)
    log.info("forwarding the Fleet API of https://%s on https://%s:%d (nothing else), "
             "signed by %d registered nodes (%s)", args.upstream, args.host, args.port,
             len(keys), args.node_keys)
    log.info("limits: %s", limits)
    protocol = guarded_protocol(
        tls=server_context(str(args.ssl_certfile), str(args.ssl_keyfile)),
        deadline_s=limits.read_timeout_s, connections_per_peer=2 * limits.requests_per_peer,
        connections=limits.connections)
    uvicorn.run(app, host=args.host, port=args.port, loop="asyncio", lifespan="on",
                log_level="info", server_header=False, timeout_keep_alive=KEEP_ALIVE_S,
                h11_max_incomplete_event_size=HEAD_BYTES, http=protocol,
                backlog=limits.connections)  # accepted at once, before any is aborted
    return 0


if __name__ == "__main__":
    sys.exit(main())
