"""A real deployment on one machine: a SuperLink and N SuperNodes on 127.0.0.1.

Unlike the simulation (``flower-superlink --simulation``), every client is its
own ``flower-supernode`` process that connects to the SuperLink over HTTPS,
authenticates with its own key pair, and runs the ClientApp in processes its
SuperExec starts, exactly as on separate machines. :class:`LocalFederation`

1. writes a run-local ``FLWR_HOME/config.toml`` naming the SuperLink (with the
   CA as ``root-certificates``);
2. starts ``flower-superlink`` (TLS, ``--enable-supernode-auth``) on a free port
   and waits for its health endpoint;
3. registers every node's public key with ``flwr supernode register``;
4. starts the SuperNodes, each with its private key, its ``--node-config`` and
   a Runtime API port of its own, and waits until every one is connected; with warm
   ClientApps (``clientapps="warm"``, :mod:`pfednas.deploy.warm`) each node's fork server
   first, and the node's shim first on its ``PATH``;

and on exit, whatever the exit, stops every process carrying the run's
``PFEDNAS_RUN_TOKEN`` (see :mod:`pfednas.run.launcher`). :func:`run_deployment`
then submits the app with ``flwr run <app> <connection> --stream``.

Paths are set as an operator would set them, never by the run config: the
SuperLink side gets ``PFEDNAS_OUTPUT_BASE`` (the run's folder; its ServerApp writes
nowhere else), and each node's ``--node-config`` names the folders it reads the
dataset from, keeps client state in and caches its composed config and splits in
(``data-root``, ``checkpoint-dir``, ``cache-dir``: ``<work_dir>/node_cache``).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import tomli_w

from pfednas.config import NODE_KEYS_ENV, OUTPUT_BASE_ENV, SERVERAPP_PID_FILE
from pfednas.deploy import warm
from pfednas.deploy.certs import NodeKey, TlsFiles
from pfednas.deploy.commands import (
    Security,
    flwr_run_command,
    list_nodes_command,
    node_config,
    register_command,
    superlink_command,
    supernode_command,
)
from pfednas.run.launcher import (
    FLWR_RUN_LOG,
    free_port,
    run_env,
    staged_app,
    start_streamed,
    stop_processes,
    wait_run,
)

CONNECTION = "pfednas-deploy"
HOST = "127.0.0.1"
NODE_READY = "SuperNode ID:"  # the SuperNode's log line once the SuperLink activated it
TASK_POLL_ENV = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"


class DeploymentError(RuntimeError):
    """A process of the deployment failed to start or connect; the message names its log."""


def write_connection(flwr_home: Path, address: str, tls: TlsFiles | None) -> Path:
    """``FLWR_HOME/config.toml`` whose default connection is this SuperLink."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    connection: dict[str, object] = {"address": address}
    if tls is None:
        connection["insecure"] = True
    else:
        connection["root-certificates"] = str(tls.ca_cert.resolve())
    path = flwr_home / "config.toml"
    path.write_text(tomli_w.dumps({"superlink": {"default": CONNECTION,
                                                 CONNECTION: connection}}))
    return path


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log_file: Path, *,
                 cafile: Path | None, timeout: float = 60.0) -> None:
    context = ssl.create_default_context(cafile=str(cafile)) if cafile else None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DeploymentError(f"SuperLink exited with code {proc.returncode}; see {log_file}")
        try:
            with urllib.request.urlopen(url, timeout=2, context=context):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise DeploymentError(f"SuperLink not healthy within {timeout:.0f}s; see {log_file}")


@dataclass
class LocalFederation:
    """SuperLink + SuperNodes on loopback; a context manager that always cleans up."""

    num_nodes: int
    work_dir: Path
    log_dir: Path
    security: Security
    keys: Sequence[NodeKey] = ()
    data_dirs: Sequence[Path] = ()
    data_root: Path | None = None       # node config data-root (dataset.root of partitions)
    checkpoint_dir: Path | None = None  # node config checkpoint-dir (client state)
    model_dir: Path | None = None  # node config model-dir (the personalized models)
    # each node's stated hardware profile ("memory-budget-mb=… macs-per-second=…", node
    # config entries; pfednas.hardware.profile): one per node, or none (the nodes measure theirs)
    node_profiles: Sequence[str] = ()
    output_base: Path | None = None     # PFEDNAS_OUTPUT_BASE; default: the parent of log_dir
    node_timeout: float = 120.0
    clientapps: str = warm.COLD  # warm: a fork server per node hands out ClientApp processes
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    port: int = 0
    env: dict[str, str] = field(default_factory=dict)
    nodes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)
    warm_servers: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.clientapps not in warm.CLIENTAPPS:
            raise ValueError(f"clientapps must be one of {warm.CLIENTAPPS}, "
                             f"got {self.clientapps!r}")
        if self.security.node_auth and len(self.keys) < self.num_nodes:
            raise ValueError(f"node authentication needs {self.num_nodes} key pairs, "
                             f"got {len(self.keys)}")
        if self.data_dirs and len(self.data_dirs) != self.num_nodes:
            raise ValueError(f"give one data dir per node: {self.num_nodes} nodes, "
                             f"{len(self.data_dirs)} data dirs")
        if self.node_profiles and len(self.node_profiles) != self.num_nodes:
            raise ValueError(f"give one node profile per node: {self.num_nodes} nodes, "
                             f"{len(self.node_profiles)} profiles")

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> LocalFederation:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.log_dir / "run_token").write_text(self.token + "\n")
        try:
            self._start_superlink()
            if self.clientapps == warm.WARM:  # they import PyTorch while the keys register
                for index in range(self.num_nodes):
                    self.start_warm_server(index)
            if self.security.node_auth:
                self.register([key.public for key in self.keys[: self.num_nodes]])
            for index in self.warm_servers:
                self.wait_warm(index)
            for index in range(self.num_nodes):
                key = self.keys[index].private if self.security.node_auth else None
                data_dir = self.data_dirs[index] if self.data_dirs else None
                config = node_config(index, self.num_nodes, data_dir, data_root=self.data_root,
                                     checkpoint_dir=self.checkpoint_dir,
                                     cache_dir=self.work_dir / "node_cache",
                                     model_dir=self.model_dir)
                if self.node_profiles:
                    config = f"{config} {self.node_profiles[index]}".strip()
                self.nodes.append(self.start_supernode(index, private_key=key, config=config))
            self.wait_connected(self.nodes)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> list[int]:
        """Stop every process of the run (by token), SuperNodes first, and reap our children."""
        for proc in self.nodes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        stopped = stop_processes(self.token)
        for proc in self.children:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        return stopped

    # -- pieces (also used on their own by the tests) ----------------------------------------
    def _start_superlink(self) -> None:
        self.port = free_port()
        write_connection(self.work_dir / "flwr_home", self.address, self.security.tls)
        self.env = run_env(self.work_dir / "flwr_home", self.token)
        self.env[OUTPUT_BASE_ENV] = str((self.output_base or self.log_dir.parent).resolve())
        self.env.setdefault(TASK_POLL_ENV, "0.2")  # Flower's default is 1 s per poll
        if self.security.node_auth and self.keys:
            # client id i is pinned to node i's key: no other node can claim it
            self.env[NODE_KEYS_ENV] = str(self.keys[0].public.parent.resolve())
        command = superlink_command(host=HOST, port=self.port, security=self.security)
        proc = self.spawn(command, "superlink.log")
        scheme = "http" if self.security.tls is None else "https"
        wait_healthy(f"{scheme}://{self.address}/health", proc, self.log_dir / "superlink.log",
                     cafile=None if self.security.tls is None else self.security.tls.ca_cert)

    def spawn(self, command: list[str], log_name: str,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with (self.log_dir / "commands.sh").open("a") as script:
            script.write(shlex.join(command) + "\n")
        with (self.log_dir / log_name).open("ab") as log:
            proc = subprocess.Popen(command, env=env or self.env, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.children.append(proc)
        return proc

    def register(self, public_keys: Sequence[Path]) -> list[int]:
        """Register public keys with the SuperLink (in parallel); returns the node ids."""
        with (self.log_dir / "commands.sh").open("a") as script:
            script.writelines(shlex.join(register_command(key, CONNECTION)) + "\n"
                              for key in public_keys)
        procs = [subprocess.Popen(register_command(key, CONNECTION), env=self.env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL) for key in public_keys]
        node_ids = []
        for key, proc in zip(public_keys, procs, strict=True):
            out, _ = proc.communicate(timeout=120)
            text = out.decode(errors="replace")
            with (self.log_dir / "register.log").open("a") as log:
                log.write(f"$ flwr supernode register {key}\n{text}\n")
            try:
                reply = json.loads(text[text.index("{"):])
            except ValueError:
                reply = {}
            if proc.returncode != 0 or not reply.get("success"):
                raise DeploymentError(f"registering {key} failed: {text.strip()[-500:]}")
            node_ids.append(int(reply["node-id"]))
        return node_ids

    def start_supernode(self, index: int, *, private_key: Path | None, config: str,
                        security: Security | None = None, max_retries: int | None = None,
                        log_name: str | None = None) -> subprocess.Popen[bytes]:
        command = supernode_command(
            superlink=self.address, runtime_host=HOST, runtime_port=free_port(),
            security=security or self.security, node_config=config, private_key=private_key,
            max_retries=max_retries)
        return self.spawn(command, log_name or f"supernode-{index}.log", self.node_env(index))

    def node_dir(self, index: int) -> Path:
        return self.work_dir / "nodes" / f"node-{index}"

    def node_env(self, index: int) -> dict[str, str]:
        """Each SuperNode installs the app into its own FLWR_HOME, as on a machine of its
        own; a warm node finds its shim first on its PATH."""
        env = dict(self.env, FLWR_HOME=str(self.node_dir(index)))
        return warm.with_shim(env, self.node_dir(index)) if index in self.warm_servers else env

    def start_warm_server(self, index: int) -> subprocess.Popen[bytes]:
        """Node ``index``'s fork server (stopped with the run, or when this process is gone)
        and its ``flwr-clientapp`` shim, bound to the real one on the run's PATH."""
        node_dir = self.node_dir(index)
        warm.write_shim(node_dir, warm.cold_command(self.env.get("PATH", os.defpath)))
        env = dict(self.env, FLWR_HOME=str(node_dir))
        proc = self.spawn(warm.server_command(node_dir, parent_pid=os.getpid()),
                          f"warm-clientapps-{index}.log", warm.with_shim(env, node_dir))
        self.warm_servers[index] = proc
        return proc

    def wait_warm(self, index: int) -> None:
        """Until node ``index``'s fork server listens (it has imported PyTorch and pfednas)."""
        path, proc = warm.socket_path(self.node_dir(index)), self.warm_servers[index]
        log = self.log_dir / f"warm-clientapps-{index}.log"
        deadline = time.monotonic() + self.node_timeout
        while not path.exists():
            if proc.poll() is not None:
                raise DeploymentError(f"the warm ClientApp server of node {index} exited with "
                                      f"code {proc.returncode}; see {log}")
            if time.monotonic() > deadline:
                raise DeploymentError(f"the warm ClientApp server of node {index} was not "
                                      f"ready within {self.node_timeout:.0f}s; see {log}")
            time.sleep(0.1)

    def node_log(self, proc: subprocess.Popen[bytes]) -> Path:
        return self.log_dir / f"supernode-{self.nodes.index(proc)}.log"

    def wait_connected(self, procs: Sequence[subprocess.Popen[bytes]]) -> None:
        """Until every SuperNode says its node id (the SuperLink activated it)."""
        pending = set(range(len(procs)))
        deadline = time.monotonic() + self.node_timeout
        while pending:
            for i in sorted(pending):
                log = self.node_log(procs[i])
                if NODE_READY in log.read_text(errors="replace"):
                    pending.discard(i)
                elif procs[i].poll() is not None:
                    raise DeploymentError(f"SuperNode {i} exited with code "
                                          f"{procs[i].returncode}; see {log}")
            if pending and time.monotonic() > deadline:
                raise DeploymentError(f"SuperNodes {sorted(pending)} did not connect within "
                                      f"{self.node_timeout:.0f}s; see {self.log_dir}")
            time.sleep(0.2)

    def list_nodes(self) -> list[dict[str, object]]:
        """``flwr supernode list`` as seen by the SuperLink."""
        out = subprocess.run(list_nodes_command(CONNECTION), env=self.env, capture_output=True,
                             text=True, timeout=60, check=False).stdout
        return list(json.loads(out[out.index("{"):]).get("nodes", []))


@dataclass(frozen=True)
class DeploymentRequest:
    """What ``pfednas deploy local`` runs."""

    app_dir: Path
    out_dir: Path
    run_config: dict[str, str]
    num_nodes: int
    security: Security
    keys: tuple[NodeKey, ...] = ()
    data_dirs: tuple[Path, ...] = ()
    data_root: Path | None = None
    checkpoint_dir: Path | None = None
    model_dir: Path | None = None
    node_timeout: float = 120.0
    announced: tuple[str, ...] = ()  # lines the command already printed (not repeated)
    node_profiles: tuple[str, ...] = ()  # each node's stated profile (node config entries)
    clientapps: str = warm.WARM  # warm: each node's fork server; cold: Flower's own processes


def run_deployment(request: DeploymentRequest) -> int:
    """Start the federation, run the app with ``flwr run --stream``; its exit code."""
    log_dir = request.out_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    run_config_file = log_dir / "run_config.toml"
    run_config_file.write_text(tomli_w.dumps(request.run_config))
    federation = LocalFederation(num_nodes=request.num_nodes,
                                 work_dir=request.out_dir / "deploy", log_dir=log_dir,
                                 security=request.security, keys=request.keys,
                                 data_dirs=request.data_dirs, data_root=request.data_root,
                                 checkpoint_dir=request.checkpoint_dir,
                                 model_dir=request.model_dir,
                                 node_profiles=request.node_profiles,
                                 output_base=request.out_dir, node_timeout=request.node_timeout,
                                 clientapps=request.clientapps)
    with federation, staged_app(request.app_dir) as app:
        print(f"[pfednas] SuperLink {federation.address} "
              f"({'TLS' if request.security.tls else 'INSECURE'}"
              f"{', node authentication' if request.security.node_auth else ''}), "
              f"{request.num_nodes} SuperNodes connected, {request.clientapps} ClientApps",
              flush=True)
        command = flwr_run_command(app, CONNECTION, run_config_file)
        (log_dir / "flwr_run.cmd").write_text(
            f"# run on a temporary staged copy of {request.app_dir} (see staged_app)\n"
            + shlex.join(flwr_run_command(request.app_dir, CONNECTION, run_config_file)) + "\n")
        proc, pump = start_streamed(command, federation.env, log_dir / FLWR_RUN_LOG,
                                    request.announced)
        try:
            code = wait_run(proc, log_dir / SERVERAPP_PID_FILE)
        except BaseException:
            proc.send_signal(signal.SIGTERM)
            raise
        pump.join(timeout=10)
        return code
