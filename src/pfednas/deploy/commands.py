"""The exact Flower 1.41 command lines of a deployment, in one place.

The local multi-node run (:mod:`pfednas.deploy.local`) starts these commands;
``docker-compose.yml`` and ``docs/DEPLOYMENT.md`` use the same flags, and a test
keeps them in step.

Flower 1.41 serves the Fleet, Control and Runtime APIs of a SuperLink on one
HTTP(S) port (``--host`` / ``--port``), and its Control API authenticates no caller:
whoever reaches that port may start a run, i.e. run code on every silo. So a SuperLink
listens where only its operator reaches it, and other machines see the
:mod:`pfednas.deploy.fleet_gateway` (:func:`fleet_gateway_command`), which forwards
the Fleet API only. A SuperNode also listens on a port of its own: the Runtime API its
SuperExec (ClientApp executor) talks to. With ``--isolation subprocess`` each of them
starts its SuperExec itself (Flower then ignores any SuperExec secret); with
``--isolation process`` (containers) a separate ``flower-superexec
--runtime-api-address HOST:PORT`` does, and ``--superexec-auth-secret-file`` on both
sides makes the Runtime API hand tasks only to an executor holding the secret.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pfednas.deploy.certs import TlsFiles


@dataclass(frozen=True)
class Security:
    """TLS files and whether SuperNodes must be registered; ``tls=None`` is insecure."""

    tls: TlsFiles | None
    node_auth: bool

    def __post_init__(self) -> None:
        if self.node_auth and self.tls is None:
            raise ValueError("SuperNode authentication needs TLS (Flower refuses it without)")


def node_config(client_id: int, num_clients: int, data_dir: str | Path | None = None, *,
                data_root: str | Path | None = None,
                checkpoint_dir: str | Path | None = None,
                cache_dir: str | Path | None = None,
                model_dir: str | Path | None = None) -> str:
    """``--node-config`` value: a Dirichlet partition, or a silo's own folder; and the
    folders the node reads the dataset from (``data-root``), keeps client state in
    (``checkpoint-dir``), caches its composed config and splits in (``cache-dir``) and
    keeps its personalized model in (``model-dir``).
    In a deployment only these, never the run config, name paths."""
    if data_dir is None:
        parts = [f"partition-id={client_id}", f"num-partitions={num_clients}"]
    else:
        parts = [f"client-id={client_id}", f"data-dir={_toml(data_dir)}"]
    if data_root is not None:
        parts.append(f"data-root={_toml(data_root)}")
    if checkpoint_dir is not None:
        parts.append(f"checkpoint-dir={_toml(checkpoint_dir)}")
    if cache_dir is not None:
        parts.append(f"cache-dir={_toml(cache_dir)}")
    if model_dir is not None:
        parts.append(f"model-dir={_toml(model_dir)}")
    return " ".join(parts)


def _toml(path: str | Path) -> str:
    return json.dumps(str(path))  # a TOML basic string


def superlink_command(*, host: str, port: int, security: Security,
                      isolation: str = "subprocess", database: str = ":flwr-in-memory:",
                      superexec_secret: Path | None = None) -> list[str]:
    """``host`` is where the Control API is reachable too: loopback or an operator-only
    network, never a published address (publish :func:`fleet_gateway_command`)."""
    command = ["flower-superlink"]
    if security.tls is None:
        command.append("--insecure")
    else:
        command += ["--ssl-ca-certfile", str(security.tls.ca_cert),
                    "--ssl-certfile", str(security.tls.server_cert),
                    "--ssl-keyfile", str(security.tls.server_key)]
    if security.node_auth:
        command.append("--enable-supernode-auth")
    command += _secret(superexec_secret, isolation)
    return command + ["--isolation", isolation, "--host", host, "--port", str(port),
                      "--database", database, "--disable-runtime-dependency-installation"]


def _secret(path: Path | None, isolation: str) -> list[str]:
    if path is None:
        return []
    if isolation != "process":
        raise ValueError("a SuperExec secret needs --isolation process (Flower ignores it "
                         "with subprocess)")
    return ["--superexec-auth-secret-file", str(path)]


def fleet_gateway_command(*, host: str, port: int, upstream: str, tls: TlsFiles,
                          node_keys: Path | str) -> list[str]:
    """The published face of a SuperLink: its Fleet API only, over TLS with ``tls``'s
    server certificate (valid for the name SuperNodes dial), verifying ``upstream``, for
    the nodes whose public keys (``node-<i>.pub``) are in the folder ``node_keys``."""
    return ["python", "-m", "pfednas.deploy.fleet_gateway", "--host", host, "--port", str(port),
            "--upstream", upstream, "--ssl-certfile", str(tls.server_cert),
            "--ssl-keyfile", str(tls.server_key), "--ssl-ca-certfile", str(tls.ca_cert),
            "--node-keys", str(node_keys)]


def supernode_command(*, superlink: str, runtime_host: str, runtime_port: int,
                      security: Security, node_config: str, private_key: Path | None,
                      isolation: str = "subprocess", max_retries: int | None = None,
                      runtime_tls: TlsFiles | None = None,
                      superexec_secret: Path | None = None) -> list[str]:
    """``runtime_tls``: serve the node's Runtime API over TLS (a separate executor,
    ``--isolation process``, reaches it over a network: see ``TlsFiles.of_node``);
    ``superexec_secret``: hand tasks only to an executor holding that secret."""
    command = ["flower-supernode", "--superlink", superlink]
    if security.tls is None:
        command.append("--insecure")
    else:
        command += ["--root-certificates", str(security.tls.ca_cert)]
    if private_key is not None:
        command += ["--auth-supernode-private-key", str(private_key)]
    command += ["--node-config", node_config, "--isolation", isolation]
    if runtime_tls is not None:
        command += ["--ssl-certfile", str(runtime_tls.server_cert),
                    "--ssl-keyfile", str(runtime_tls.server_key),
                    "--ssl-ca-certfile", str(runtime_tls.ca_cert)]
    command += _secret(superexec_secret, isolation)
    command += ["--host", runtime_host, "--port", str(runtime_port)]
    if max_retries is not None:
        command += ["--max-retries", str(max_retries)]
    return command


def superexec_command(*, runtime_api: str, ca_cert: Path | None = None,
                      superexec_secret: Path | None = None) -> list[str]:
    """A separate executor (``--isolation process``): TLS to the Runtime API of a SuperLink
    or SuperNode when ``ca_cert`` is given, else plain HTTP (a one-machine demo); it signs
    its task requests with ``superexec_secret`` (the same file as the API it talks to)."""
    tls = ["--insecure"] if ca_cert is None else ["--root-certificates", str(ca_cert)]
    secret = _secret(superexec_secret, "process")
    return ["flower-superexec", *tls, *secret, "--runtime-api-address", runtime_api]


def register_command(public_key: Path, connection: str) -> list[str]:
    return ["flwr", "supernode", "register", str(public_key), connection, "--format", "json"]


def list_nodes_command(connection: str) -> list[str]:
    return ["flwr", "supernode", "list", connection, "--format", "json"]


def flwr_run_command(app_dir: Path, connection: str, run_config_file: Path) -> list[str]:
    return ["flwr", "run", str(app_dir), connection, "--stream",
            "--run-config", str(run_config_file)]


def flags(command: list[str]) -> set[str]:
    """The ``--flag`` names of a command line (values dropped)."""
    return {part.split("=", 1)[0] for part in command if part.startswith("--")}
