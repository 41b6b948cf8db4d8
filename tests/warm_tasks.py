"""Fake ClientApp entry points for the warm fork server's tests (standard library only).

``main`` reads its command from ``sys.argv[1:]``, as ``flwr-clientapp`` reads its arguments:

* ``leave``: report what an earlier task could have left (a module global, an environment
  variable, an open descriptor, its working folder), then leave each of them behind;
* ``exit N``: write to stdout and stderr, exit with code N;
* ``kill``: kill itself with SIGKILL;
* ``wait``: say "waiting", then wait for a signal; SIGTERM ends it with code 42;
* ``raise``: raise an exception; ``interrupt``: raise KeyboardInterrupt;
* ``finish``: start a (non-daemon) thread and register an ``atexit`` handler, each of which
  prints a line once ``main`` has returned.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import threading
import time

LEFT_BEHIND: list[str] = []  # a module global a task appends to
PRELOADED_AT = time.time()


def leave() -> int:
    seen = {"global": list(LEFT_BEHIND), "env": os.environ.get("WARM_LEFT_BEHIND"),
            "fd": _fd_open(99),
            "pid": os.getpid(), "argv": sys.argv, "cwd": os.getcwd(),
            "env_given": os.environ.get("WARM_GIVEN"), "path0": sys.path[0]}
    LEFT_BEHIND.append("task")
    os.environ["WARM_LEFT_BEHIND"] = "1"
    os.dup2(1, 99)
    print(json.dumps(seen), flush=True)
    os.chdir("/")
    return 0


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def main() -> int:
    command = sys.argv[1:]
    if command[0] == "leave":
        return leave()
    if command[0] == "exit":
        print("to stdout", flush=True)
        print("to stderr", file=sys.stderr, flush=True)
        sys.exit(int(command[1]))
    if command[0] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if command[0] == "wait":
        signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(42))
        print("waiting", flush=True)
        while True:
            time.sleep(0.05)
    if command[0] == "raise":
        raise RuntimeError("boom")
    if command[0] == "interrupt":
        raise KeyboardInterrupt
    if command[0] == "finish":
        threading.Thread(target=lambda: (time.sleep(0.3), print("thread done", flush=True)),
                         daemon=False).start()
        atexit.register(lambda: print("atexit ran", flush=True))
        return 0
    raise ValueError(f"unknown command {command}")
