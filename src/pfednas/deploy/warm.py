"""Warm ClientApps: a node's fork server, so that a task does not import PyTorch again.

    python -m pfednas.deploy.warm --socket NODE_DIR/warm/clientapp.sock [--parent-pid PID]

Flower 1.41's SuperExec (``SubprocessExecutor``) starts one ``flwr-clientapp`` process per
task, found on its ``PATH``, and each one imports Python, Flower, PyTorch and pfednas anew
(about 1 s of a message's time). This server imports them once, runs no torch operation and
opens no connection, then listens on a Unix socket (mode 0600, in a folder of mode 0700, the
node's own; only its user may connect). For each task the ``flwr-clientapp`` on the node's
``PATH`` is the shim of :mod:`pfednas.deploy.warm_shim`, which asks the server for a process:

* the server forks; the child takes the shim's stdin, stdout and stderr, environment, folder
  and arguments, and calls Flower's own ``flwr-clientapp`` entry point (the console script's
  target): the token, heartbeats, ``--parent-pid`` monitor and exit codes are Flower's own;
* the server never runs a task itself, so every task starts from the same pristine process:
  nothing one task sets (a module global, an environment variable, a file descriptor) is
  there for the next;
* it reaps the child and sends the shim its wait status; the shim exits as the child did (a
  child killed by a signal: the shim kills itself with it). A shim that goes away (killed)
  takes its child with it (SIGKILL), as killing a cold ``flwr-clientapp`` ends its task.

Threads: a fork copies only the forking thread. Importing NumPy and SciPy starts OpenBLAS's
worker threads, which OpenBLAS shuts down itself before any fork (``pthread_atfork``); the
server forks once at start so that it holds one thread from then on, and says how many it
held at each fork where that is more. PyTorch starts its intra-op and OpenMP pools at the
first operation, which the server never runs; gRPC starts nothing until a channel opens.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import signal
import socket
import struct
import sys
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from types import FrameType

from pfednas.deploy import warm_shim
from pfednas.deploy.warm_shim import HEADER, MAX_REQUEST, STD_FDS, send_line, socket_address
from pfednas.deploy.warm_task import Task, become_task, decode_request, load_entry, run_task

WARM, COLD = "warm", "cold"
CLIENTAPPS = (WARM, COLD)
ENTRY = "flwr-clientapp"  # Flower's console script: the command and the entry point
PRELOAD = ("torch", "flwr.supernode.cli", "pfednas.app.client_app")
FOLDER, SOCKET_NAME = "warm", "clientapp.sock"
STOP_GRACE = 5.0


def read_request(conn: socket.socket) -> Task:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, len(STD_FDS))
    try:
        if len(data) < HEADER.size:
            raise ValueError("no request")
        (length,) = HEADER.unpack_from(data)
        if length > MAX_REQUEST:
            raise ValueError(f"a request of {length} bytes")
        while len(data) < HEADER.size + length:
            chunk = conn.recv(HEADER.size + length - len(data))
            if not chunk:
                raise ValueError("the request ended early")
            data += chunk
        return decode_request(data[HEADER.size:HEADER.size + length], fds)
    except (ValueError, struct.error):
        for fd in fds:
            os.close(fd)
        raise


def peer_uid(conn: socket.socket) -> int:
    _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                    struct.calcsize("3i")))
    return int(uid)


def thread_count() -> int:
    """The threads of this process, as the kernel counts them (not only Python's)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def log(line: str) -> None:
    print(f"[pfednas] warm ClientApps: {line}", flush=True)


@dataclass
class ForkServer:
    """Accepts shims on ``listener``; :meth:`serve` returns a :class:`Task` in each forked
    child, and ``None`` in the server once it is told to stop (or ``parent_pid`` is gone)."""

    listener: socket.socket
    socket_path: Path
    parent_pid: int | None = None
    children: dict[int, socket.socket | None] = field(default_factory=dict)
    stopping: bool = False

    def __post_init__(self) -> None:
        self.pid = os.getpid()
        self.selector = selectors.DefaultSelector()
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(self.wake_write, False)
        signal.set_wakeup_fd(self.wake_write)
        signal.signal(signal.SIGCHLD, lambda number, frame: None)  # wakes the selector
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, self._stop)
        self.selector.register(self.listener, selectors.EVENT_READ, "listener")
        self.selector.register(self.wake_read, selectors.EVENT_READ, "wake")

    def _stop(self, number: int, frame: FrameType | None) -> None:
        self.stopping = True

    def serve(self) -> Task | None:
        while not self.stopping:
            for key, _ in self.selector.select(timeout=1.0):
                if key.data == "listener":
                    task = self._accept()
                    if task is not None:
                        return task  # in the child
                elif key.data == "wake":
                    with suppress(BlockingIOError):
                        os.read(self.wake_read, 4096)
                    self._reap()
                else:
                    self._message(key.fileobj, key.data)  # type: ignore[arg-type]
            if self.parent_pid is not None and not _alive(self.parent_pid):
                log(f"parent process {self.parent_pid} is gone; stopping")
                self.stopping = True
        self._shutdown()
        return None

    def _accept(self) -> Task | None:
        conn, _ = self.listener.accept()
        try:
            if peer_uid(conn) != os.getuid():
                raise ValueError("a process of another user")
            conn.settimeout(5.0)
            task = read_request(conn)
            conn.settimeout(None)
        except (OSError, ValueError) as err:
            log(f"refused a request: {err}")
            with suppress(OSError):
                send_line(conn, {"error": f"refused: {err}"})
            conn.close()
            return None
        if (threads := thread_count()) > 1:
            log(f"forking with {threads} threads")
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as err:
            pid = -1
            log(f"could not fork: {err}")
            with suppress(OSError):
                send_line(conn, {"error": f"could not fork: {err}"})
        if pid == 0:
            self._leave(conn)
            return task
        for fd in task.fds:
            os.close(fd)
        if pid < 0:
            conn.close()
            return None
        self.children[pid] = conn
        self.selector.register(conn, selectors.EVENT_READ, pid)
        log(f"task {pid} started")
        with suppress(OSError):
            send_line(conn, {"pid": pid})
        return None

    def _message(self, conn: socket.socket, pid: int) -> None:
        """A forwarded signal, or the shim gone (EOF): then its child goes too."""
        try:
            data = conn.recv(4096)
        except OSError:
            data = b""
        if not data:
            self.selector.unregister(conn)
            conn.close()
            if self.children.get(pid) is conn:
                self.children[pid] = None
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return
        for line in data.splitlines():
            with suppress(ValueError, TypeError, KeyError):
                number = int(json.loads(line)["signal"])
                if number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    with suppress(ProcessLookupError):
                        os.kill(pid, number)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            log(f"task {pid} ended: {describe_status(status)}")
            if conn is not None:
                with suppress(OSError):
                    send_line(conn, {"status": status})
                self.selector.unregister(conn)
                conn.close()

    def _shutdown(self) -> None:
        """Stop listening, end the running tasks (SIGTERM, then SIGKILL after a grace) and
        tell their shims how they ended."""
        self.selector.unregister(self.listener)
        self.listener.close()
        with suppress(FileNotFoundError):
            self.socket_path.unlink()
        for pid in self.children:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while self.children and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.05)
        for pid in self.children:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        while self.children:
            self._reap()
            time.sleep(0.01)
        log("stopped")

    def _leave(self, conn: socket.socket) -> None:
        """In a forked child: drop everything of the server's (its sockets, selector, wake-up
        pipe and signal handlers) before becoming the task."""
        signal.set_wakeup_fd(-1)
        for number in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(number, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        self.selector.close()
        for other in (self.listener, conn, *(c for c in self.children.values() if c)):
            other.close()
        os.close(self.wake_read)
        os.close(self.wake_write)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def settle_threads() -> int:
    """Fork once and reap: libraries that stop their pools before a fork (OpenBLAS) leave
    this process with its one thread. The threads left."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return thread_count()


def listen(path: Path) -> socket.socket:
    """A Unix socket at ``path`` (mode 0600 from its first moment, in a 0700 folder), bound
    under a temporary name and renamed: it appears only once it accepts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    with suppress(FileNotFoundError):
        staging.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    address, folder = socket_address(str(staging))
    previous = os.umask(0o177)
    try:
        listener.bind(address)
    finally:
        os.umask(previous)
        if folder is not None:
            os.close(folder)
    listener.listen(64)
    os.replace(staging, path)
    return listener


# -- the node's side: where the socket and the shim live -------------------------------------
def socket_path(node_dir: Path) -> Path:
    return node_dir / FOLDER / SOCKET_NAME


def shim_dir(node_dir: Path) -> Path:
    return node_dir / FOLDER / "bin"


def cold_command(path: str) -> str:
    """The real ``flwr-clientapp`` on ``path`` (a ``PATH`` without the shim's folder)."""
    found = shutil.which(ENTRY, path=path)
    return found or str(Path(sys.executable).parent / ENTRY)


def write_shim(node_dir: Path, cold: str, python: str = sys.executable) -> Path:
    """``NODE_DIR/warm/bin/flwr-clientapp``: the shim, bound to this node's socket."""
    folder = shim_dir(node_dir)
    folder.mkdir(parents=True, exist_ok=True)
    node_dir.joinpath(FOLDER).chmod(0o700)
    text = (f"#!{python} -SE\n" + Path(warm_shim.__file__).read_text()
            + f"\n\nif __name__ == \"__main__\":\n"
            f"    sys.exit(main({str(socket_path(node_dir))!r}, {cold!r}))\n")
    shim = folder / ENTRY
    shim.write_text(text)
    shim.chmod(0o700)
    return shim


def server_command(node_dir: Path, parent_pid: int | None = None) -> list[str]:
    # -P: nothing of the folder it starts in on sys.path, as a console script has it
    command = [sys.executable, "-P", "-m", "pfednas.deploy.warm", "--socket",
               str(socket_path(node_dir))]
    return command + (["--parent-pid", str(parent_pid)] if parent_pid is not None else [])


def with_shim(env: dict[str, str], node_dir: Path) -> dict[str, str]:
    """``env`` with the node's shim first on its ``PATH``."""
    return dict(env, PATH=str(shim_dir(node_dir)) + os.pathsep + env.get("PATH", os.defpath))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pfednas.deploy.warm",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="stop when this process is gone")
    parser.add_argument("--preload", action="append", default=None, metavar="MODULE",
                        help=f"modules to import before serving (default {' '.join(PRELOAD)})")
    parser.add_argument("--entry", default=ENTRY, metavar="SCRIPT_OR_MODULE:ATTR",
                        help="what a task runs (default Flower's flwr-clientapp)")
    args = parser.parse_args(argv)
    launch_path = None if sys.flags.safe_path else (sys.path[0] if sys.path else "")
    start = time.perf_counter()
    for module in args.preload or PRELOAD:
        import_module(module)
    entry = load_entry(args.entry)
    threads = settle_threads()
    listener = listen(args.socket)
    log(f"ready in {time.perf_counter() - start:.2f} s on {args.socket} (pid {os.getpid()}, "
        f"{threads} thread{'s' if threads > 1 else ''}, Python threads "
        f"{threading.active_count()})")
    task = ForkServer(listener, args.socket, args.parent_pid).serve()
    if task is None:
        return 0
    become_task(task, launch_path)
    run_task(entry)


if __name__ == "__main__":
    sys.exit(main())
