"""Who can run code on a silo: the Control API stays with the operator (issue 32, 13-14).

Flower 1.41's SuperLink serves its Fleet, Control and Runtime APIs on one port, and its
Control API takes a run from anyone holding the CA certificate. The multi-machine recipe
therefore publishes only :mod:`pfednas.deploy.fleet_gateway`; these tests start the real
processes on loopback and submit a foreign app (its ClientApp writes a marker file) from
an outsider that holds only ``ca.crt``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import ssl
import subprocess
from contextlib import suppress
from pathlib import Path

import httpx
import pytest
import tomli_w
from fastapi.routing import APIRoute
from flwr.proto.runtime_pb2 import AcquireTaskRequest
from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor, SuperExecAuthHttpInterceptor
from flwr.supercore.protobuf.client import ProtobufClientInterceptor
from flwr.supercore.runtime.runtime_http_client import RuntimeHttpClient
from flwr.superlink.routers.fleet.router import router as flower_fleet_router

from pfednas.deploy.certs import (
    TlsFiles,
    node_key_paths,
    write_dev_certificates,
    write_node_key,
    write_node_keys,
)
from pfednas.deploy.commands import (
    Security,
    fleet_gateway_command,
    node_config,
    supernode_command,
)
from pfednas.deploy.fleet_gateway import FLEET_CALLS, forwarded_path
from pfednas.deploy.local import HOST, LocalFederation, wait_healthy
from pfednas.deploy.superexec_auth import write_superexec_secrets
from pfednas.run.launcher import free_port
from tests.conftest import pids_with_token

FOREIGN_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "foreign-app"
version = "1.0.0"
description = "not the operator's app"
license = "Apache-2.0"
dependencies = ["flwr"]

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "outsider"

[tool.flwr.app.components]
serverapp = "foreign_app.server:app"
clientapp = "foreign_app.client:app"

[tool.flwr.app.config]
marker = ""
"""
FOREIGN_SERVER = """\
from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    messages = [Message(RecordDict(), dst_node_id=node, message_type="query")
                for node in grid.get_node_ids()]
    replies = list(grid.send_and_receive(messages, timeout=60))
    print(f"foreign app: {len(replies)} replies")
"""
FOREIGN_CLIENT = """\
from pathlib import Path

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.query()
def query(msg: Message, context: Context) -> Message:
    Path(str(context.run_config["marker"])).write_text(str(dict(context.node_config)))
    return Message(RecordDict(), reply_to=msg)
"""


def write_foreign_app(folder: Path) -> Path:
    """A Flower app that is not pfednas: its ClientApp writes the run config's marker file."""
    package = folder / "foreign_app"
    package.mkdir(parents=True)
    (folder / "pyproject.toml").write_text(FOREIGN_PYPROJECT)
    (package / "__init__.py").write_text("")
    (package / "server.py").write_text(FOREIGN_SERVER)
    (package / "client.py").write_text(FOREIGN_CLIENT)
    return folder


def holder_of_ca_only(home: Path, address: str, ca_cert: Path, base: dict[str, str]
                      ) -> dict[str, str]:
    """The environment of someone who has ``ca.crt`` and an address, nothing else."""
    home.mkdir(parents=True)
    (home / "config.toml").write_text(tomli_w.dumps({"superlink": {
        "default": "target", "target": {"address": address, "root-certificates": str(ca_cert)}}}))
    return dict(base, FLWR_HOME=str(home))


def flwr(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["flwr", *args], env=env, capture_output=True, text=True,
                          timeout=180, check=False, stdin=subprocess.DEVNULL)


# -- the gateway's rule, without processes -----------------------------------------------------
def test_gateway_forwards_exactly_the_fleet_api_of_flower() -> None:
    flower = {route.path for route in flower_fleet_router.routes if isinstance(route, APIRoute)}

    assert {f"/v1/fleet/{call}" for call in FLEET_CALLS} == flower


@pytest.mark.parametrize(("method", "path", "query", "forwarded"), [
    ("POST", b"/v1/fleet/pull-messages", b"", True),
    ("POST", b"/v1/fleet/register-node", b"", True),
    ("GET", b"/health", b"", True),
    ("POST", b"/v1/control/start-run", b"", False),
    ("POST", b"/v1/control/register-node", b"", False),
    ("POST", b"/v1/runtime/acquire-task", b"", False),
    ("POST", b"/v1/responses", b"", False),
    ("GET", b"/docs", b"", False),
    ("GET", b"/openapi.json", b"", False),
    ("GET", b"/v1/fleet/pull-messages", b"", False),
    ("POST", b"/v1/fleet/../control/start-run", b"", False),
    ("POST", b"/v1/fleet/%2e%2e/control/start-run", b"", False),
    ("POST", b"//v1/fleet/pull-messages", b"", False),
    ("POST", b"/v1/fleet/pull-messages/", b"", False),
    ("POST", b"/v1/fleet/pull-messages", b"x=1", False),
    ("POST", b"/v1/fleet/pull-\xffmessages", b"", False),
])
def test_gateway_rule(method: str, path: bytes, query: bytes, forwarded: bool) -> None:
    assert (forwarded_path(method, path, query) is not None) is forwarded


# -- real processes on loopback ----------------------------------------------------------------
@pytest.mark.slow
def test_outsider_with_the_ca_certificate_cannot_run_code_through_the_published_port(
        tmp_path: Path) -> None:
    # Prepare: the recipe on loopback. The SuperLink (TLS, node auth) listens where the
    # operator is; the gateway is what other machines reach; one registered SuperNode dials
    # the gateway, as a silo on another machine does.
    certs = write_dev_certificates(tmp_path / "certs")
    node_key = write_node_keys(tmp_path / "keys", 1)[0]
    stranger_key = write_node_key(node_key_paths(tmp_path / "stranger", 7))
    app = write_foreign_app(tmp_path / "foreign")
    federation = LocalFederation(num_nodes=0, work_dir=tmp_path / "work", log_dir=tmp_path / "logs",
                                 security=Security(tls=certs, node_auth=True))
    markers = {who: tmp_path / f"ran-for-{who}" for who in ("outsider", "operator")}

    with federation:
        gateway_port = free_port()
        published = f"{HOST}:{gateway_port}"
        gateway = federation.spawn(fleet_gateway_command(
            host=HOST, port=gateway_port, upstream=federation.address, tls=certs,
            node_keys=tmp_path / "keys"),
            "fleet-gateway.log")
        wait_healthy(f"https://{published}/health", gateway,
                     federation.log_dir / "fleet-gateway.log", cafile=certs.ca_cert)
        federation.register([node_key.public])
        node = federation.spawn(supernode_command(
            superlink=published, runtime_host=HOST, runtime_port=free_port(),
            security=federation.security, node_config=node_config(0, 1),
            private_key=node_key.private), "supernode-0.log",
            dict(federation.env, FLWR_HOME=str(tmp_path / "work" / "node-0")))
        federation.nodes.append(node)
        federation.wait_connected([node])
        outsider = holder_of_ca_only(tmp_path / "outsider", published, certs.ca_cert,
                                     federation.env)
        direct = holder_of_ca_only(tmp_path / "direct", federation.address, certs.ca_cert,
                                   federation.env)

        # Execute: the outsider tries the published port; then the same `flwr run` against
        # the SuperLink's own port, which only the operator reaches
        foreign_run = flwr(["run", str(app), "target", "--stream", "--run-config",
                            f'marker="{markers["outsider"]}"'], outsider)
        foreign_key = flwr(["supernode", "register", str(stranger_key.public), "target",
                            "--format", "json"], outsider)
        with httpx.Client(verify=ssl.create_default_context(cafile=certs.ca_cert),
                          timeout=30) as client:
            raw = {path: client.post(f"https://{published}{path}", content=b"").status_code
                   for path in ("/v1/control/list-runs", "/v1/runtime/acquire-task")}
        operator_run = flwr(["run", str(app), "target", "--stream", "--run-config",
                             f'marker="{markers["operator"]}"'], direct)
        nodes = federation.list_nodes()

    # Assert: refused at the published port, before the SuperLink saw anything
    assert foreign_run.returncode != 0, foreign_run.stdout
    assert "Successfully started run" not in foreign_run.stdout
    refusal = json.loads(foreign_key.stdout)
    assert refusal["success"] is False
    assert "404 Not Found' for url" in refusal["error-message"]
    assert raw == {"/v1/control/list-runs": 404, "/v1/runtime/acquire-task": 404}
    assert not markers["outsider"].exists()
    gateway_log = (federation.log_dir / "fleet-gateway.log").read_text()
    assert "refused POST '/v1/control/start-run'" in gateway_log
    assert "refused POST '/v1/control/register-node'" in gateway_log
    superlink_log = (federation.log_dir / "superlink.log").read_text()
    assert superlink_log.count("POST /v1/control/start-run") == 1  # the operator's only
    assert superlink_log.count("POST /v1/control/register-node") == 1  # node-0 only
    assert len(nodes) == 1
    # ...while the SuperLink's own port takes a foreign app from anyone holding ca.crt (why
    # it is never published), and the node behind the gateway runs the operator's runs
    assert operator_run.returncode == 0, operator_run.stdout + operator_run.stderr
    assert "foreign app: 1 replies" in operator_run.stdout
    assert json.loads(markers["operator"].read_text().replace("'", '"')) == {
        "partition-id": 0, "num-partitions": 1}
    assert pids_with_token(federation.token) == []


def listening_addresses(pids: list[int]) -> set[str]:
    """``IP`` of every TCP socket in LISTEN state that one of ``pids`` holds."""
    inodes = set()
    for pid in pids:
        with suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    addresses = set()
    for table, width in (("tcp", 4), ("tcp6", 16)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                raw = bytes.fromhex(fields[1].split(":")[0])
                if width == 4:
                    addresses.add(str(ipaddress.IPv4Address(raw[::-1])))
                else:  # four little-endian 32-bit words
                    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                    addresses.add(str(ipaddress.IPv6Address(words)))
    return addresses


def test_deploy_local_listens_on_loopback_only(tmp_path: Path) -> None:
    # Prepare: the federation `pfednas deploy local` starts (TLS, node auth, one node)
    federation = LocalFederation(num_nodes=1, work_dir=tmp_path / "work", log_dir=tmp_path / "logs",
                                 security=Security(tls=write_dev_certificates(tmp_path / "c"),
                                                   node_auth=True),
                                 keys=write_node_keys(tmp_path / "keys", 1))

    # Execute: every port its processes (SuperLink, SuperNode, their SuperExecs) listen on
    with federation:
        addresses = listening_addresses(pids_with_token(federation.token))

    # Assert: its Control and Runtime APIs reach no other machine
    assert addresses == {HOST}
    assert pids_with_token(federation.token) == []


def test_supernode_runtime_api_hands_tasks_only_to_the_holder_of_its_secret(
        tmp_path: Path) -> None:
    # Prepare: a SuperNode as in docker-compose.yml (--isolation process, Runtime API over TLS)
    # with its SuperExec secret made by `pfednas deploy secrets`
    certs = write_dev_certificates(tmp_path / "certs", nodes=1)
    node_key = write_node_keys(tmp_path / "keys", 1)[0]
    secret = write_superexec_secrets(tmp_path / "secrets", 1, superlink=False)[0]
    federation = LocalFederation(num_nodes=0, work_dir=tmp_path / "work", log_dir=tmp_path / "logs",
                                 security=Security(tls=certs, node_auth=True))
    acquire = AcquireTaskRequest(supported_task_types=["clientapp"])

    def executor(port: int, secret_bytes: bytes | None) -> RuntimeHttpClient:
        interceptors: list[ProtobufClientInterceptor] = [
            RuntimeVersionHttpInterceptor(component_name="SuperExec")]
        if secret_bytes is not None:
            interceptors.append(SuperExecAuthHttpInterceptor(
                master_secret=secret_bytes,
                protected_methods={"/flwr.proto.Runtime/AcquireTask"}))
        return RuntimeHttpClient.from_server_address(
            f"{HOST}:{port}", insecure=False, root_certificates=certs.ca_cert.read_bytes(),
            interceptors=interceptors)

    with federation:
        federation.register([node_key.public])
        port = free_port()
        node = federation.spawn(supernode_command(
            superlink=federation.address, runtime_host=HOST, runtime_port=port,
            security=federation.security, node_config=node_config(0, 1),
            private_key=node_key.private, isolation="process",
            runtime_tls=TlsFiles.of_node(tmp_path / "certs", 0), superexec_secret=secret),
            "supernode-0.log", dict(federation.env, FLWR_HOME=str(tmp_path / "work" / "n0")))
        federation.nodes.append(node)
        federation.wait_connected([node])

        # Execute: who may ask the SuperNode's Runtime API for this silo's tasks
        outcomes: dict[str, object] = {}
        for who, key in (("no secret", None), ("wrong secret", os.urandom(32)),
                         ("its secret", secret.read_bytes())):
            with executor(port, key) as client:
                try:
                    outcomes[who] = client.AcquireTask(acquire).HasField("task")
                except httpx.HTTPStatusError as err:
                    outcomes[who] = err.response.status_code

    # Assert: 401 to anyone without the secret; the holder is served (no task is pending)
    assert outcomes == {"no secret": 401, "wrong secret": 401, "its secret": False}
    assert pids_with_token(federation.token) == []
