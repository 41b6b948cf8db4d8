"""The ``flwr-clientapp`` a warm node's SuperExec starts: it hands its task to the node's fork
server (:mod:`pfednas.deploy.warm`) and lives exactly as long as the task.

Standard library only, and written out as an executable (``#!python -SE``, no ``site``):
:func:`pfednas.deploy.warm.write_shim` copies this module's text below a shebang and a call of
:func:`main` with the node's socket and the real ``flwr-clientapp``: it imports neither PyTorch
nor Flower (a whole warm task, the shim's start to its exit, took 0.14 s at load 5:
``benchmarks/bench_warm_clientapp.py``).

The conversation on the node's Unix socket:

1. the shim sends its request: a 4-byte length, then JSON ``{"argv", "env", "cwd"}``, with its
   stdin, stdout and stderr attached (``SCM_RIGHTS``);
2. the server forks a child of its pristine, preloaded process, which takes those descriptors,
   environment, folder and arguments and runs Flower's own ``flwr-clientapp`` entry point;
   it answers ``{"pid": N}`` (one JSON object a line);
3. a SIGTERM, SIGINT or SIGHUP the shim receives goes to the child (``{"signal": N}``);
4. the server reaps the child and answers ``{"status": W}`` (its wait status); the shim exits
   with the child's exit code, or kills itself with the child's signal, as the cold process
   would have ended.

The server unreachable (not started, gone) or refusing the task (it could not fork): the shim
says so in one line on stderr and ``exec``s the real ``flwr-clientapp``: the task runs cold,
Flower's protocol unchanged.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
import time
from contextlib import suppress
from typing import Any

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STD_FDS = (0, 1, 2)
HEADER = struct.Struct(">I")
MAX_REQUEST = 1 << 22  # 4 MiB: argv and an environment, never more
SUN_PATH_MAX = 100  # below sockaddr_un's 108 bytes


def socket_address(path: str) -> tuple[str, int | None]:
    """An address for ``path`` that fits ``sockaddr_un``: the path itself, or, where it is
    longer, ``/proc/self/fd/<fd>/<name>`` through an open descriptor of its folder (the
    caller closes it)."""
    if len(os.fsencode(path)) <= SUN_PATH_MAX:
        return path, None
    folder = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
    return f"/proc/self/fd/{folder}/{os.path.basename(path)}", folder


def connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    address, folder = socket_address(path)
    try:
        sock.connect(address)
    except OSError:
        sock.close()
        raise
    finally:
        if folder is not None:
            os.close(folder)
    return sock


def encode_request(argv: list[str], env: dict[str, str], cwd: str) -> bytes:
    body = json.dumps({"argv": argv, "env": env, "cwd": cwd}).encode()
    return HEADER.pack(len(body)) + body


def open_std_fds() -> list[int]:
    """Our stdin, stdout and stderr, each one that is closed replaced by ``/dev/null``."""
    fds = []
    for fd in STD_FDS:
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:
            fds.append(os.open(os.devnull, os.O_RDWR))
    return fds


def send_request(sock: socket.socket, argv: list[str], env: dict[str, str], cwd: str) -> None:
    data = encode_request(argv, env, cwd)
    sent = socket.send_fds(sock, [data], open_std_fds())
    sock.sendall(data[sent:])


def send_line(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(json.dumps(message).encode() + b"\n")


def read_lines(sock: socket.socket) -> Any:
    """The JSON objects the peer sends, one a line, until it closes."""
    buffer = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield json.loads(line)


def exit_like(status: int) -> int:
    """End this process as the child ended: its exit code, or killed by its signal."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        with suppress(OSError, ValueError):
            signal.signal(number, signal.SIG_DFL)
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), number)
        time.sleep(1)  # a signal that does not end a process by default
        return 128 + number
    return os.waitstatus_to_exitcode(status)


def wait_gone(pid: int) -> None:
    """Until ``pid`` no longer exists (its server is gone: nobody reaps it for us)."""
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            pass
        time.sleep(0.2)


def run_cold(cold_command: str, argv: list[str], reason: str) -> int:
    print(f"[pfednas] warm ClientApp: {reason}: this task runs {cold_command} cold",
          file=sys.stderr, flush=True)
    os.execv(cold_command, argv)


def run_warm(sock: socket.socket, argv: list[str]) -> int:
    """The task in a fork of the server; cold where the server refuses it (it could not
    fork, or will not serve this user)."""
    send_request(sock, argv, dict(os.environ), os.getcwd())

    def forward(number: int, frame: object) -> None:
        with suppress(OSError):
            send_line(sock, {"signal": number})

    for number in FORWARDED:
        signal.signal(number, forward)
    pid = None
    for message in read_lines(sock):
        if "pid" in message:
            pid = int(message["pid"])
        elif "status" in message:
            return exit_like(int(message["status"]))
        elif "error" in message:
            return run_cold(argv[0], argv, f"the server refused the task ({message['error']})")
    if pid is not None:
        wait_gone(pid)
    print("[pfednas] warm ClientApp: the node's fork server went away before the task "
          "ended; its exit status is lost", file=sys.stderr, flush=True)
    return 1


def main(socket_path: str, cold_command: str) -> int:
    argv = [cold_command, *sys.argv[1:]]
    try:
        sock = connect(socket_path)
    except OSError as err:
        return run_cold(cold_command, argv, f"server unreachable at {socket_path} "
                                            f"({err.strerror or err})")
    with sock:
        return run_warm(sock, argv)
