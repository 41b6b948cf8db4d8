"""`pfednas federation.ray_address=HOST:PORT` on a real Ray cluster that the test starts.

The head is started here with the venv's own ``ray`` (so its workers run the python that
imports pfednas), in a temporary folder of its own (not /tmp/ray, where other Rays on the
machine live), and every one of its processes carries a token of the test's in
``PFEDNAS_RUN_TOKEN`` — a different one from the run's — so the finalizer stops exactly
those processes and nothing else on the machine (``ray stop`` would stop every Ray).

The cluster's own state is read from its GCS tables (``ray._private.state``): Ray's public
state API (``ray list actors``) needs the dashboard of ``ray[default]``, which
``flwr[simulation]`` does not install.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pfednas.run.launcher import free_port, process_alive, stop_processes
from tests.conftest import pids_with_token, run_pfednas

RAY = Path(sys.executable).parent / "ray"
SMALL = ["method=fedavg", "method.arch=min", "federation.num_clients=4",
         "federation.clients_per_round=2", "federation.num_rounds=2", "federation.eval_every=2",
         "method.finetune_epochs=1"]

CLUSTER_STATE = """
import json, sys
import ray
from ray._private import state

ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
me = ray.get_runtime_context().get_job_id()
print(json.dumps({
    "cpus": ray.cluster_resources().get("CPU"),
    "nodes": [n["NodeID"] for n in ray.nodes() if n["Alive"]],
    "actors": [{"cls": a["ActorClassName"], "state": a["State"], "job": a["JobID"],
                "pid": a["Pid"], "node": a["Address"]["NodeID"]} for a in state.actors().values()],
    "jobs": [{"job": j["JobID"], "dead": j["IsDead"], "entrypoint": j["Entrypoint"]}
             for j in state.jobs() if j["JobID"] != me],
}))
ray.shutdown()
"""


@dataclass(frozen=True)
class RayHead:
    address: str  # as a user passes it: 127.0.0.1:PORT (Ray resolves it to the node's IP)
    token: str    # PFEDNAS_RUN_TOKEN of every process of the cluster


def head_command(port: int, temp_dir: Path) -> list[str]:
    return [str(RAY), "start", "--head", "--port", str(port), "--num-cpus", "2",
            "--num-gpus", "0", "--node-ip-address", "127.0.0.1", "--temp-dir", str(temp_dir),
            "--ray-client-server-port", str(free_port()), "--include-dashboard", "false",
            "--disable-usage-stats"]


@pytest.fixture
def ray_head() -> Iterator[RayHead]:
    assert RAY.is_file(), f"{RAY} missing: flwr[simulation] installs it"
    temp_dir = Path(tempfile.mkdtemp(prefix="pfr-", dir="/tmp"))  # short: Ray's socket paths
    token = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update({"PFEDNAS_RUN_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"})
    port = free_port()
    try:
        started = subprocess.run(head_command(port, temp_dir), env=env, capture_output=True,
                                 text=True, timeout=180, check=False)
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        yield RayHead(address=f"127.0.0.1:{port}", token=token)
    finally:
        stop_processes(token)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert pids_with_token(token) == [], "a process of the test's Ray head is left"


def cluster_state(address: str) -> dict[str, Any]:
    """The cluster's nodes, CPUs, actors and jobs (other than this query's), from its GCS."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PFEDNAS_RUN_TOKEN")}
    result = subprocess.run([sys.executable, "-c", CLUSTER_STATE, address], env=env,
                            capture_output=True, text=True, timeout=120, check=True)
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def process_names(pids: list[int]) -> set[str]:
    names = set()
    for pid in pids:
        try:
            names.add(Path(f"/proc/{pid}/comm").read_text().strip())
        except OSError:
            continue
    return names


def wait_gone(pids: list[int], timeout: float = 60.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(process_alive(p) for p in pids):
        time.sleep(0.5)
    return [p for p in pids if process_alive(p)]


@pytest.mark.slow
def test_a_run_joins_the_cluster_its_actors_run_there_and_the_cluster_stays_up(
        tmp_path: Path, ray_head: RayHead) -> None:
    out = tmp_path / "run"

    result = run_pfednas([*SMALL, f"federation.ray_address={ray_head.address}"], out)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"joining the cluster at {ray_head.address}" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_clients_evaluated"] == 4
    assert summary["personalized_acc_mean"] > 0.3  # chance is 0.1
    assert "init-args-num-cpus" not in (out / "logs" / "flwr_run.cmd").read_text()
    # everything pfednas started is gone
    assert pids_with_token((out / "logs" / "run_token").read_text().strip()) == []
    # the cluster is up, whole, and its head processes are the ones the test started
    state = cluster_state(ray_head.address)
    assert state["cpus"] == 2.0 and len(state["nodes"]) == 1
    assert {"gcs_server", "raylet"} <= process_names(pids_with_token(ray_head.token))
    # the run's client actors ran on the cluster's node (so pfednas started no Ray of its
    # own: a Flower simulation has one Ray), for one driver, Flower's simulation runtime
    actors = [a for a in state["actors"] if a["cls"] == "ClientAppActor"]
    assert len(actors) == 2  # 2 CPUs / client_cpus=1
    assert {a["node"] for a in actors} == set(state["nodes"])
    [job] = state["jobs"]
    assert {a["job"] for a in actors} == {job["job"]}
    assert "flwr-simulation" in job["entrypoint"]
    # ...and ended with it: the job is over, its actors dead and their processes gone
    assert job["dead"] and {a["state"] for a in actors} == {"DEAD"}
    assert wait_gone([a["pid"] for a in actors]) == []
