"""`federation.ray_address`: which values pass, which cluster they name, and what the
launcher hands Flower and Ray."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pfednas.config import ConfigError, check_ray_address, compose, settings_from_cfg
from pfednas.run.launcher import SimulationRequest, flwr_run_command, run_env
from pfednas.run.ray_cluster import cluster_address, gcs_reachable, resolve_ray_address


@pytest.mark.parametrize("address", [None, "auto", "127.0.0.1:6379", "head.example.org:6379",
                                     "[::1]:6379", "10.0.0.5:65535"])
def test_ray_address_accepts_null_auto_and_host_port(address: str | None) -> None:
    check_ray_address(address)


@pytest.mark.parametrize("address", ["", "local", "6379", ":6379", "head:", "head:0",
                                     "head:65536", "head:port", "ray://head:10001",
                                     "user@head:6379", "a b:6379", 6379])
def test_ray_address_rejects_anything_else(address: object) -> None:
    with pytest.raises(ConfigError, match="ray_address must be null, auto or HOST:PORT"):
        check_ray_address(address)


def test_a_host_port_override_reaches_the_settings_as_typed() -> None:
    settings = settings_from_cfg(compose(["federation.ray_address=10.0.0.5:6379"]))

    assert settings.federation.ray_address == "10.0.0.5:6379"
    assert settings_from_cfg(compose([])).federation.ray_address is None


def test_ray_num_cpus_is_refused_with_a_cluster() -> None:
    cfg = compose(["federation.ray_address=auto", "federation.ray_num_cpus=2"])

    with pytest.raises(ConfigError, match="leave ray_num_cpus null"):
        settings_from_cfg(cfg)


def request(ray_address: str | None, ray_num_cpus: int | None) -> SimulationRequest:
    return SimulationRequest(app_dir=Path("app"), flwr_home=Path("home"), run_config={},
                             num_supernodes=4, client_cpus=1, client_gpus=0.25,
                             ray_num_cpus=ray_num_cpus, log_dir=Path("logs"),
                             ray_address=ray_address)


def federation_config(command: list[str]) -> list[str]:
    return command[command.index("--federation-config") + 1].split()


def test_a_private_ray_is_sized_by_ray_num_cpus() -> None:
    fed = federation_config(flwr_run_command(request(None, 3), Path("rc.toml")))

    assert "init-args-num-cpus=3" in fed
    assert {"client-resources-num-cpus=1", "client-resources-num-gpus=0.25"} <= set(fed)


def test_a_cluster_gets_the_client_resources_and_no_ray_size() -> None:
    # ray.init refuses num_cpus when it connects to an existing cluster
    fed = federation_config(flwr_run_command(request("10.0.0.5:6379", 3), Path("rc.toml")))

    assert not [item for item in fed if item.startswith("init-args-")]
    assert {"client-resources-num-cpus=1", "client-resources-num-gpus=0.25"} <= set(fed)


def test_ray_address_names_the_cluster_or_a_private_ray_whatever_the_environment(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "10.9.9.9:6379")  # the user's shell, or a leftover

    private = run_env(tmp_path, "token")
    cluster = run_env(tmp_path, "token", "10.0.0.5:6379")

    assert private["RAY_ADDRESS"] == "local"  # ray.init: start a new local Ray
    assert cluster["RAY_ADDRESS"] == "10.0.0.5:6379"
    assert private["PFEDNAS_RUN_TOKEN"] == cluster["PFEDNAS_RUN_TOKEN"] == "token"


def test_auto_is_ray_address_from_the_environment_first() -> None:
    assert resolve_ray_address("auto", {"RAY_ADDRESS": "10.0.0.5:6379"}) == "10.0.0.5:6379"
    assert resolve_ray_address("10.0.0.6:6379", {"RAY_ADDRESS": "10.0.0.5:6379"}) == (
        "10.0.0.6:6379")
    with pytest.raises(ConfigError, match="RAY_ADDRESS='ray://head:10001'"):
        resolve_ray_address("auto", {"RAY_ADDRESS": "ray://head:10001"})


def test_auto_is_else_the_cluster_ray_start_recorded(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))  # Ray's temp folder: tmp_path/ray
    with pytest.raises(ConfigError, match="no cluster was started with `ray start`"):
        resolve_ray_address("auto", {})
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("10.0.0.7:6379\n")

    assert resolve_ray_address("auto", {}) == "10.0.0.7:6379"


def test_a_cluster_that_does_not_answer_stops_the_command_before_it_starts() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"

        assert gcs_reachable(address)
        assert cluster_address(address, {}) == address
    assert not gcs_reachable(address)  # closed
    with pytest.raises(ConfigError, match=f"cannot reach the Ray cluster at {address}"):
        cluster_address(address, {})
    assert cluster_address(None, {"RAY_ADDRESS": address}) is None  # a private Ray
