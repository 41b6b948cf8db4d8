"""``pfednas deploy executor``: a node's ClientApp executor (``flower-superexec``) with warm
ClientApps, for nodes run with ``--isolation process`` (the compose silos' ``clientapp-<i>``).

    pfednas deploy executor [--clientapps warm|cold] [--node-dir DIR] -- SUPEREXEC_ARGS ...

warm (the default): start the node's fork server (:mod:`pfednas.deploy.warm`) with its socket
and shim in ``DIR/warm`` (default ``$FLWR_HOME``, else ``~/.flwr``), wait until it listens,
then become ``flower-superexec SUPEREXEC_ARGS`` (``exec``, same process id) with the shim first
on its ``PATH``: Flower's executor starts ``flwr-clientapp`` per task as ever, and each is a
fork of the warm server. The server stops when this process (then ``flower-superexec``) is
gone. cold: ``exec flower-superexec`` unchanged.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from pfednas.deploy.warm import (
    COLD,
    cold_command,
    server_command,
    socket_path,
    with_shim,
    write_shim,
)

SUPEREXEC = "flower-superexec"
READY_TIMEOUT = 300.0


def default_node_dir() -> Path:
    home = os.environ.get("FLWR_HOME")
    return Path(home) if home else Path.home() / ".flwr"


def start_warm_server(node_dir: Path, env: dict[str, str], parent_pid: int,
                      timeout: float = READY_TIMEOUT) -> subprocess.Popen[bytes]:
    """The node's fork server (its output on ours) and shim; returns once it listens."""
    write_shim(node_dir, cold_command(env.get("PATH", os.defpath)))
    server = subprocess.Popen(server_command(node_dir, parent_pid=parent_pid),
                              env=with_shim(env, node_dir), stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not socket_path(node_dir).exists():
        if server.poll() is not None:
            raise RuntimeError(f"the warm ClientApp server exited with code {server.returncode}")
        if time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(f"the warm ClientApp server was not ready within {timeout:.0f}s")
        time.sleep(0.1)
    return server


def run_executor(clientapps: str, node_dir: Path | None, superexec_args: list[str]) -> int:
    """Become ``flower-superexec``; only a failed start of the warm server returns (1)."""
    args = superexec_args[1:] if superexec_args[:1] == ["--"] else superexec_args
    env = dict(os.environ)
    if clientapps != COLD:
        folder = node_dir or default_node_dir()
        try:
            start_warm_server(folder, env, parent_pid=os.getpid())
        except (RuntimeError, OSError) as err:
            print(f"pfednas deploy executor: error: {err}", file=sys.stderr, flush=True)
            return 1
        env = with_shim(env, folder)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(SUPEREXEC, [SUPEREXEC, *args], env)
