"""The one port a multi-machine SuperLink shows other machines: its Fleet API, nothing else.

Flower 1.41's SuperLink serves its Fleet API (SuperNodes), Control API (``flwr run``,
``flwr supernode register``) and Runtime API (the ServerApp executor) on one HTTPS port,
and the open-source SuperLink authenticates no Control API caller: whoever reaches that
port with the CA certificate can register a SuperNode key or start a run whose ClientApp
executes on every silo (``tests/test_control_api_exposure.py`` shows it). So the SuperLink
listens where only its operator reaches it (loopback, or the compose ``link`` network),
and this gateway, on the published port, forwards to it only

* ``POST /v1/fleet/<call>`` for the twelve calls of Flower 1.41's Fleet API (which
  SuperNode authentication guards), and
* ``GET`` / ``HEAD /health``;

every other request (Control, Runtime, ``/docs``, a path with ``..``, ``%`` or a query)
is answered ``404`` here and never reaches the SuperLink. The gateway serves TLS with the
SuperLink's certificate and verifies the SuperLink's certificate upstream::

    python -m pfednas.deploy.fleet_gateway --host 0.0.0.0 --port 9092 \\
        --upstream 127.0.0.1:9093 --ssl-certfile certificates/server.pem \\
        --ssl-keyfile certificates/server.key --ssl-ca-certfile certificates/ca.crt
"""

from __future__ import annotations

import argparse
import logging
import ssl
import sys
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import httpx

FLEET_CALLS = (
    "register-node", "activate-node", "deactivate-node", "unregister-node",
    "send-node-heartbeat", "pull-messages", "push-messages", "get-run", "get-fab",
    "push-object", "pull-object", "confirm-message-received",
)
FORWARDED = frozenset({("POST", f"/v1/fleet/{call}") for call in FLEET_CALLS}
                      | {("GET", "/health"), ("HEAD", "/health")})
MAX_BODY_BYTES = 1 << 30  # Flower's own message limit is 2 GiB; an object is far smaller
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "te", "trailer", "trailers", "transfer-encoding", "upgrade", "host",
                        "content-length", "content-encoding"})
UPSTREAM_TIMEOUT = httpx.Timeout(120.0, connect=10.0)

log = logging.getLogger("pfednas.fleet_gateway")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


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


def _forward_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers
            if k.decode("latin-1").lower() not in HOP_BY_HOP]


async def _read_body(receive: Receive) -> bytes | None:
    """The request body, or ``None`` when it is larger than :data:`MAX_BODY_BYTES`."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(send: Send, status: int, body: bytes,
                   headers: Sequence[tuple[str, str]] = ()) -> None:
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class FleetGateway:
    """An ASGI app forwarding the Fleet API calls to ``upstream`` (``https://HOST:PORT``)."""

    def __init__(self, upstream: str, verify: ssl.SSLContext) -> None:
        self.upstream = upstream.rstrip("/")
        self.verify = verify
        self.client: httpx.AsyncClient | None = None

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
        path = forwarded_path(method, scope.get("raw_path") or scope["path"].encode(),
                              scope.get("query_string", b""))
        client = scope.get("client") or ("?", 0)
        if path is None:
            log.warning("refused %s %r from %s: not a Fleet API call", method,
                        scope.get("raw_path", b"").decode("latin-1"), client[0])
            await _respond(send, 404, b"not served here: this port forwards the Fleet API only\n",
                           [("content-type", "text/plain")])
            return
        body = await _read_body(receive)
        if body is None:
            await _respond(send, 413, b"request body too large\n")
            return
        assert self.client is not None, "the lifespan starts the upstream client"
        try:
            reply = await self.client.request(method, self.upstream + path, content=body,
                                              headers=_forward_headers(scope["headers"]))
        except httpx.HTTPError as err:
            log.warning("upstream %s%s failed: %s", self.upstream, path, err)
            await _respond(send, 502, b"SuperLink unreachable\n")
            return
        headers = [(k, v) for k, v in reply.headers.multi_items() if k.lower() not in HOP_BY_HOP]
        await _respond(send, reply.status_code, reply.content, headers)


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    missing = [str(p) for p in (args.ssl_certfile, args.ssl_keyfile, args.ssl_ca_certfile)
               if not p.is_file()]
    if missing:
        print(f"fleet_gateway: error: missing {', '.join(missing)}", file=sys.stderr)
        return 2
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app = FleetGateway(f"https://{args.upstream}", upstream_context(args.ssl_ca_certfile))
    log.info("forwarding the Fleet API of https://%s on https://%s:%d (nothing else)",
             args.upstream, args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, ssl_certfile=str(args.ssl_certfile),
                ssl_keyfile=str(args.ssl_keyfile), lifespan="on", log_level="info",
                server_header=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
