"""The Fleet gateway's connections: counted and capped from the TCP accept, TLS with a
deadline, then uvicorn's h11 protocol with a deadline on each request head.

uvicorn hands a TLS listener to the event loop, which calls a protocol only once the TLS
handshake is complete and gives up on a handshake after 60 s (uvicorn exposes neither):
until then a connection is counted nowhere. Here uvicorn listens on plain TCP and its
protocol class is :func:`guarded_protocol`'s, which at the accept counts the connection
against its address's cap and everyone's (aborting it beyond either), then runs the TLS
handshake itself (``loop.start_tls``) with a deadline, and only then hands the encrypted
transport to uvicorn's h11 protocol. The h11 protocol adds a deadline on each request
head (uvicorn times out only a keep-alive connection that sends nothing).

It needs uvicorn's ``asyncio`` loop: an asyncio transport paused in ``connection_made``
reads nothing until ``start_tls`` takes it over, while uvloop starts reading right after
``connection_made`` returns (a ClientHello read then by the raw protocol would be lost;
the gate aborts such a connection rather than leave it hanging).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import Counter
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("pfednas.fleet_gateway")


def server_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    return context


def guarded_protocol(*, tls: ssl.SSLContext, deadline_s: float, connections_per_peer: int,
                     connections: int) -> type[asyncio.Protocol]:
    """uvicorn's ``http`` protocol class for one server: a connection is aborted at its
    accept beyond ``connections_per_peer`` from its address or ``connections`` in all, when
    its TLS handshake is not complete ``deadline_s`` after the accept, and when a request
    head is not complete ``deadline_s`` after the handshake or the previous response."""
    open_from: Counter[str] = Counter()  # this server's connections, per client address

    class GuardedH11Protocol(H11Protocol):
        head_timer: asyncio.TimerHandle | None = None
        gate: TlsGate | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._start_head_timer()

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:  # a head arrived (or the request failed)
                self._stop_head_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._start_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_head_timer()
            super().connection_lost(exc)
            if self.gate is not None:
                self.gate.release()

        def _start_head_timer(self) -> None:
            self._stop_head_timer()
            self.head_timer = self.loop.call_later(deadline_s, self._head_timed_out)

        def _stop_head_timer(self) -> None:
            if self.head_timer is not None:
                self.head_timer.cancel()
                self.head_timer = None

        def _head_timed_out(self) -> None:
            self.head_timer = None
            log.warning("aborted a connection from %s: no request head within %.0f s",
                        self.client[0] if self.client else "?", deadline_s)
            self.transport.abort()

    class TlsGate(asyncio.Protocol):
        """One TCP connection until its TLS handshake completes (then the h11 protocol's)."""

        def __init__(self, **uvicorn_args: Any) -> None:
            self.http = GuardedH11Protocol(**uvicorn_args)
            self.peer: str | None = None
            self.early = bytearray()  # decrypted bytes that beat the hand-over to h11
            self.encrypting = False
            self.handed_over = False
            self.handshake: asyncio.Task[None] | None = None
            self.raw: asyncio.Transport | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            peer = str((transport.get_extra_info("peername") or ("?",))[0])
            if open_from[peer] >= connections_per_peer or open_from.total() >= connections:
                cap = (f"{connections_per_peer} from {peer}" if open_from[peer]
                       >= connections_per_peer else f"{connections} in all")
                log.warning("aborted a connection from %s at its accept: over %s", peer, cap)
                transport.abort()
                return
            open_from[peer] += 1
            self.peer = peer
            self.raw = transport
            self.http.gate = self
            transport.pause_reading()  # nothing is read until start_tls reads the handshake
            self.handshake = self.http.loop.create_task(self._handshake(transport))

        async def _handshake(self, transport: asyncio.Transport) -> None:
            self.encrypting = True  # from here on, data_received gets decrypted bytes
            try:
                encrypted = await self.http.loop.start_tls(
                    transport, self, tls, server_side=True, ssl_handshake_timeout=deadline_s)
            except (OSError, ssl.SSLError, TimeoutError, RuntimeError) as err:
                log.warning("closed a connection from %s: no TLS handshake within %.0f s (%s)",
                            self.peer, deadline_s, err or type(err).__name__)
                transport.abort()
                self.release()
                return
            if encrypted is None:  # the connection closed as the handshake ended
                self.release()
                return
            encrypted.set_protocol(self.http)
            self.handed_over = True
            self.http.connection_made(encrypted)
            if self.early:
                self.http.data_received(bytes(self.early))

        # the encrypted transport may deliver data (or its end) before the hand-over
        def data_received(self, data: bytes) -> None:
            if self.handed_over:
                self.http.data_received(data)
            elif self.encrypting:
                self.early += data
            else:  # an event loop that read before start_tls took the transport (uvloop)
                log.error("aborted a connection from %s: read before its TLS handshake "
                          "began (run the gateway on the asyncio loop)", self.peer)
                if self.handshake is not None:
                    self.handshake.cancel()
                if self.raw is not None:
                    self.raw.abort()
                self.release()

        def connection_lost(self, exc: Exception | None) -> None:
            if self.handed_over:
                self.http.connection_lost(exc)
            elif self.handshake is None or self.handshake.done():
                self.release()
            # else: the handshake task sees the loss and releases

        def release(self) -> None:
            if self.peer is not None:
                open_from[self.peer] -= 1
                if not open_from[self.peer]:
                    del open_from[self.peer]
                self.peer = None

    return TlsGate
