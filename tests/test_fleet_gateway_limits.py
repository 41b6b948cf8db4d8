"""What an outsider can make the Fleet gateway hold (issue 43, findings 2 and 5).

Each test starts the real gateway (``python -m pfednas.deploy.fleet_gateway`` with its
default limits, the command of ``docker-compose.yml``) in front of a recording stand-in
for the SuperLink: a TLS server on loopback that keeps every byte it receives, so "never
reaches the SuperLink" means not one byte arrived upstream.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from pfednas.deploy.certs import TlsFiles, write_dev_certificates
from pfednas.deploy.commands import fleet_gateway_command
from pfednas.deploy.local import HOST, wait_healthy
from pfednas.run.launcher import free_port

MiB = 1 << 20
OBJECT_LIMIT = 8 * MiB  # the gateway's default --max-object-mb
CONTROL_LIMIT = 64 << 10
READ_TIMEOUT_S = 10.0   # the gateway's default --read-timeout
PER_PEER = 8            # the gateway's default --max-per-peer


# -- a SuperLink stand-in that records what reaches it ------------------------------------
@dataclass
class RecordingUpstream:
    """Answers each complete request ``200`` with ``stored <sha256 of its body>``."""

    tls: TlsFiles
    raw: bytearray = field(default_factory=bytearray)
    requests: list[tuple[bytes, bytes]] = field(default_factory=list)  # (request line, body)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(self.tls.server_cert, self.tls.server_key)
        self.listener = socket.create_server((HOST, 0))
        self.port = int(self.listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def clear(self) -> None:
        with self.lock:
            self.raw.clear()
            self.requests.clear()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _recv(self, conn: ssl.SSLSocket) -> bytes:
        data = conn.recv(1 << 16)
        with self.lock:
            self.raw += data
        return data

    def _serve(self, raw_conn: socket.socket) -> None:
        with suppress(OSError), self.context.wrap_socket(raw_conn, server_side=True) as conn:
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    if not (data := self._recv(conn)):
                        return
                    buffer += data
                head, _, rest = buffer.partition(b"\r\n\r\n")
                length = content_length(head)
                while len(rest) < length:
                    if not (data := self._recv(conn)):
                        return
                    rest += data
                body, buffer = rest[:length], rest[length:]
                with self.lock:
                    self.requests.append((head.split(b"\r\n")[0], body))
                reply = b"stored " + hashlib.sha256(body).hexdigest().encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
                             b"content-length: %d\r\n\r\n%s" % (len(reply), reply))


def content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


# -- the gateway under test ----------------------------------------------------------------
@dataclass
class Gateway:
    port: int
    tls: TlsFiles
    log: Path
    upstream: RecordingUpstream

    def url(self, call: str) -> str:
        return f"https://{HOST}:{self.port}/v1/fleet/{call}"

    def client(self) -> httpx.Client:
        return httpx.Client(verify=ssl.create_default_context(cafile=str(self.tls.ca_cert)),
                            timeout=15.0)

    def connect(self) -> ssl.SSLSocket:
        """A raw TLS connection, for what a well-behaved client never sends."""
        context = ssl.create_default_context(cafile=str(self.tls.ca_cert))
        sock = socket.create_connection((HOST, self.port), timeout=15.0)
        return context.wrap_socket(sock, server_hostname=HOST)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    tls = write_dev_certificates(tmp_path / "certs")
    upstream = RecordingUpstream(tls)
    port = free_port()
    command = fleet_gateway_command(host=HOST, port=port, upstream=f"{HOST}:{upstream.port}",
                                    tls=tls)
    log = tmp_path / "fleet-gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, *command[1:]], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_healthy(f"https://{HOST}:{port}/health", proc, log, cafile=tls.ca_cert)
        upstream.clear()  # the health check went through
        yield Gateway(port, tls, log, upstream)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        upstream.close()


def head(call: str, length: int | None, extra: str = "") -> bytes:
    size = "" if length is None else f"content-length: {length}\r\n"
    return (f"POST /v1/fleet/{call} HTTP/1.1\r\nhost: {HOST}\r\n"
            f"content-type: application/protobuf\r\n{size}{extra}\r\n").encode()


def read_reply(sock: ssl.SSLSocket, timeout: float) -> tuple[int, bytes]:
    """Status and everything the gateway sent until it closed (``(0, b"")``: no answer)."""
    sock.settimeout(timeout)
    data = b""
    with suppress(OSError):
        while chunk := sock.recv(1 << 16):
            data += chunk
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    return status, data


def seconds_until_closed(sock: ssl.SSLSocket, limit: float,
                         every_second: Callable[[], None] = lambda: None) -> float:
    """Seconds until the gateway closes ``sock`` (at most ``limit``), calling
    ``every_second`` between one-second waits."""
    start = time.monotonic()
    sock.settimeout(1.0)
    while time.monotonic() - start < limit:
        try:
            if not sock.recv(1 << 16):
                return time.monotonic() - start
        except TimeoutError:
            try:
                every_second()
            except OSError:
                return time.monotonic() - start
        except OSError:
            return time.monotonic() - start
    return limit


# -- the tests -----------------------------------------------------------------------------
def test_a_body_over_its_call_limit_is_refused_413_before_it_is_read(gateway: Gateway) -> None:
    # Prepare: a push-object declaring 1 GiB that sends no body at all, and control-like
    # calls one byte over their limit sent in full
    declared = gateway.connect()
    over_control = b"x" * (CONTROL_LIMIT + 1)
    over_messages = b"x" * (MiB + 1)

    # Execute
    start = time.monotonic()
    declared.sendall(head("push-object", 1 << 30))
    status, _ = read_reply(declared, timeout=5.0)
    answered_in = time.monotonic() - start
    with gateway.client() as client:
        control = client.post(gateway.url("send-node-heartbeat"), content=over_control)
        messages = client.post(gateway.url("push-messages"), content=over_messages)

    # Assert: refused on Content-Length alone, before any body byte, and nothing upstream
    assert status == 413
    assert answered_in < 2.0
    assert (control.status_code, messages.status_code) == (413, 413)
    assert bytes(gateway.upstream.raw) == b""


def test_a_body_without_content_length_or_an_oversized_head_is_refused(gateway: Gateway) -> None:
    # Prepare: a chunked push-object (its size unknown up front), and a request head that
    # goes on past 20 KiB without ending
    chunked = gateway.connect()
    endless = gateway.connect()

    # Execute
    chunked.sendall(head("push-object", None, "transfer-encoding: chunked\r\n")
                    + b"5\r\nhello\r\n0\r\n\r\n")
    chunked_status, _ = read_reply(chunked, timeout=5.0)
    endless.sendall(head("push-object", 1000).removesuffix(b"\r\n") + b"x-pad: a" * (3 << 10))
    head_status, _ = read_reply(endless, timeout=5.0)

    # Assert: 411, and 400 once the unfinished head passes 16 KiB; not one byte upstream
    assert (chunked_status, head_status) == (411, 400)
    assert bytes(gateway.upstream.raw) == b""


def test_a_truncated_body_never_reaches_upstream(gateway: Gateway) -> None:
    # Prepare: declare 1000 bytes, send 5, close
    sock = gateway.connect()
    sock.sendall(head("push-object", 1000) + b"hello")

    # Execute: leave, give the gateway a second, then a complete call on a new connection
    sock.close()
    time.sleep(1.0)
    with gateway.client() as client:
        after = client.post(gateway.url("send-node-heartbeat"), content=b"beat")

    # Assert: only the complete call reached the SuperLink; the truncated one is logged
    assert after.status_code == 200
    assert gateway.upstream.requests == [(b"POST /v1/fleet/send-node-heartbeat HTTP/1.1",
                                          b"beat")]
    assert ("dropped POST /v1/fleet/push-object from 127.0.0.1, nothing forwarded: "
            "the client left after 5 of 1000 bytes") in gateway.log.read_text()


def test_a_stalled_body_and_slow_heads_are_cut_within_the_read_timeout(
        gateway: Gateway) -> None:
    # Prepare: at once, a connection idle after its TLS handshake, one trickling its request
    # head at a byte a second, and one stalling after 5 of 1000 body bytes
    idle, trickle, stalled = gateway.connect(), gateway.connect(), gateway.connect()
    trickled = iter(head("push-object", 1000))
    stalled.sendall(head("push-object", 1000) + b"hello")

    def send_a_byte() -> None:
        trickle.sendall(bytes([next(trickled)]))

    # Execute
    with ThreadPoolExecutor(3) as pool:
        idle_s = pool.submit(seconds_until_closed, idle, 15.0)
        trickle_s = pool.submit(seconds_until_closed, trickle, 15.0, send_a_byte)
        stalled_reply = pool.submit(read_reply, stalled, 15.0)
        start = time.monotonic()
        status, _ = stalled_reply.result()
        stalled_s = time.monotonic() - start

    # Assert: each is closed at the 10 s read timeout (never the 15 s we would wait), the
    # stalled body answered 408, and nothing reached the SuperLink
    for seconds in (idle_s.result(), trickle_s.result(), stalled_s):
        assert READ_TIMEOUT_S - 1.0 <= seconds <= READ_TIMEOUT_S + 2.0
    assert status == 408
    assert bytes(gateway.upstream.raw) == b""


def test_a_body_slower_than_the_minimum_rate_is_cut_at_its_deadline() -> None:
    # imported here: read_body is new with these limits, and the other tests must still
    # run (and fail for their own reasons) against a gateway without them
    from pfednas.deploy.fleet_gateway import GatewayLimits, Refused, read_body

    # Prepare: a body of 100 bytes trickled a byte every 50 ms, never near the 1 s idle limit
    async def trickle() -> dict[str, object]:
        await asyncio.sleep(0.05)
        return {"type": "http.request", "body": b"x", "more_body": True}

    # Execute
    start = time.monotonic()
    with pytest.raises(Refused) as refused:
        asyncio.run(read_body(trickle, 100, idle_s=1.0, total_s=0.5))
    elapsed = time.monotonic() - start

    # Assert: 408 at the 0.5 s deadline; the gateway's deadline for a full 8 MiB object is
    # the 10 s read timeout plus 8 MiB at 64 KiB/s, 128 s
    assert refused.value.status == 408
    assert 0.5 <= elapsed < 0.8
    assert GatewayLimits().body_deadline_s(OBJECT_LIMIT) == READ_TIMEOUT_S + 128.0


def test_a_peer_over_its_request_cap_is_answered_503_until_one_ends(gateway: Gateway) -> None:
    # Prepare: PER_PEER requests from this address, each holding its body half sent
    held = [gateway.connect() for _ in range(PER_PEER)]
    for sock in held:
        sock.sendall(head("push-object", 1000) + b"hello")
    time.sleep(1.0)

    # Execute: one more complete call; then the held ones leave and it is tried again
    with gateway.client() as client:
        over = client.post(gateway.url("send-node-heartbeat"), content=b"beat")
        for sock in held:
            sock.close()
        time.sleep(1.0)
        after = client.post(gateway.url("send-node-heartbeat"), content=b"beat")

    # Assert: 503 (which Flower's SuperNode retries) while the cap is full, 200 after; only
    # the call answered 200 reached the SuperLink
    assert (over.status_code, after.status_code) == (503, 200)
    assert gateway.upstream.requests == [(b"POST /v1/fleet/send-node-heartbeat HTTP/1.1",
                                          b"beat")]


def test_a_peer_over_its_connection_cap_is_cut_at_once(gateway: Gateway) -> None:
    # Prepare: twice PER_PEER connections from this address, idle after their handshakes
    kept = [gateway.connect() for _ in range(2 * PER_PEER)]

    # Execute: one more connection, and how long each stays open (up to 3 s)
    extra = gateway.connect()
    extra_s = seconds_until_closed(extra, 3.0)
    first_s = seconds_until_closed(kept[0], 1.0)

    # Assert: the extra one is aborted right after its handshake; the others stay open
    assert extra_s < 1.0
    assert first_s == 1.0
    for sock in kept:
        sock.close()


def test_a_normal_call_forwards_the_body_and_the_reply_exactly(gateway: Gateway) -> None:
    # Prepare: a push-object exactly at its limit and a register-node of Flower's size
    obj = os.urandom(OBJECT_LIMIT)
    key = os.urandom(218)

    # Execute
    with gateway.client() as client:
        pushed = client.post(gateway.url("push-object"), content=obj,
                             headers={"content-type": "application/protobuf"})
        registered = client.post(gateway.url("register-node"), content=key)

    # Assert: both bodies arrived upstream byte for byte, and the replies came back as sent
    assert gateway.upstream.requests == [(b"POST /v1/fleet/push-object HTTP/1.1", obj),
                                         (b"POST /v1/fleet/register-node HTTP/1.1", key)]
    assert (pushed.status_code, registered.status_code) == (200, 200)
    assert pushed.content == b"stored " + hashlib.sha256(obj).hexdigest().encode()
    assert registered.content == b"stored " + hashlib.sha256(key).hexdigest().encode()
