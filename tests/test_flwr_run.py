"""`flwr run .` in the repository, as a new user runs it: no `pfednas` command, Flower's own
local SuperLink (the default connection of a fresh ``FLWR_HOME``), offline.

The run is a simulation (the ServerApp gets Flower's in-memory grid, the ClientApps run in
the runtime's Ray actors; no ``PFEDNAS_SIMULATION``): the server draws every client's
hardware profile and the clients read their partitions by partition id, so the run ends
with the in-process runner's summary, times aside. A federation of another size fails the run
(Flower's ``finished:failed``) after one line naming both numbers and the fixes; sized once
with ``flwr federation simulation-config``, the local SuperLink runs the job with no
``--federation-config``. The real runs (~30-40 s each on 2 cores) are marked slow; the checks
they rest on run in the quick loop.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from flwr.app import Context, RecordDict
from flwr.superlink.grid import InMemoryGrid

from pfednas.app import server_app
from pfednas.app.server_app import RunRefused
from pfednas.config import SIMULATION_ENV, ConfigError, in_simulation
from pfednas.run.inprocess import run_inprocess
from pfednas.run.launcher import ANSI_ESCAPE, free_port, run_env, stop_processes
from tests.conftest import REPO, AnsweringGrid, comparable, pids_with_token

TINY = ["method=fedavg", "method.arch=min", "federation.num_clients=3",
        "federation.clients_per_round=3", "federation.num_rounds=1", "method.finetune_epochs=0"]


class SimulatedNodes(InMemoryGrid):
    """Flower's in-memory grid (the Simulation Runtime's) with ``count`` SuperNodes."""

    def __init__(self, count: int) -> None:  # no link state: only the nodes are asked for
        self.count = count

    def get_node_ids(self) -> list[int]:
        return list(range(100, 100 + self.count))


# -- what the real runs rest on ---------------------------------------------------------------
def test_flowers_in_memory_grid_is_a_simulation_without_the_environment_variable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SIMULATION_ENV, raising=False)

    assert in_simulation(SimulatedNodes(3))
    assert not in_simulation(AnsweringGrid(lambda _: None))  # another grid: a deployment's
    assert not in_simulation()  # a ClientApp outside the runtime's Ray actors: a node's


def test_a_simulation_of_another_size_is_refused_naming_both_numbers_and_the_fix() -> None:
    server_app.check_supernodes(SimulatedNodes(3), 3)
    with pytest.raises(ConfigError, match=r"runs 2 SuperNodes but federation.num_clients=3 .*"
                                          r"--federation-config 'num-supernodes=3'.*"
                                          r"`flwr federation simulation-config "
                                          r"--num-supernodes 3`"):
        server_app.check_supernodes(SimulatedNodes(2), 3)


def test_a_refused_simulation_fails_the_run_after_one_logged_line_and_writes_nothing(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Prepare
    monkeypatch.delenv(SIMULATION_ENV, raising=False)
    logged: list[str] = []
    monkeypatch.setattr(server_app, "log", lambda _level, text, *args: logged.append(text % args))
    out = tmp_path / "run"
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                      run_config={"overrides": json.dumps(TINY), "output-dir": str(out)})

    # Execute: Flower marks a run whose ServerApp raised finished:failed
    with pytest.raises(RunRefused) as refused:
        server_app.serve(SimulatedNodes(2), context)

    # Assert
    assert len(logged) == 1 and logged[0].startswith("pfednas: error: this simulation runs 2")
    assert "\n" not in logged[0] and str(refused.value) == (
        "pfednas refused the run: " + logged[0].removeprefix("pfednas: error: "))
    assert not out.exists()


# -- `flwr run .` for real ------------------------------------------------------------------


@pytest.fixture(scope="module")
def flower_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment of a user's shell: an empty ``FLWR_HOME`` (Flower writes its default
    config there, whose ``local`` connection starts a SuperLink and leaves it running), here
    on free ports, offline and with a private Ray. Every process the runs started carries a
    token and is stopped at the end."""
    token = uuid.uuid4().hex
    env = run_env(tmp_path_factory.mktemp("flwr_home"), token)  # without PFEDNAS_SIMULATION
    env.update(FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(free_port()),
               FLWR_LOCAL_CONTROL_API_PORT=str(free_port()))
    yield env
    stop_processes(token)
    assert pids_with_token(token) == []


def flwr_run(env: dict[str, str], out: Path, *federation: str) -> str:
    """``flwr run . --stream`` of the tiny job, writing to ``out``; its output, uncoloured."""
    run_config = f"overrides='{json.dumps(TINY)}' output-dir='{out}'"
    result = subprocess.run(["flwr", "run", ".", "--stream", "--run-config", run_config,
                             *federation], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=240, check=False)
    output = ANSI_ESCAPE.sub("", result.stdout + result.stderr)
    assert result.returncode == 0, output[-3000:]
    return output


def run_status(env: dict[str, str]) -> tuple[str, str]:
    """The status of the latest run on the local SuperLink and its details (``flwr ls``)."""
    result = subprocess.run(["flwr", "ls", "--format", "json"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60, check=True)
    runs = json.loads(result.stdout)["runs"]
    latest = max(runs, key=lambda r: r["pending-at"])
    return latest["status"], latest["status-details"]


@pytest.mark.slow
def test_flwr_run_on_another_number_of_supernodes_fails_the_run_with_one_line(
        flower_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "run"

    output = flwr_run(flower_env, out, "--federation-config", "num-supernodes=2")

    errors = [line for line in output.splitlines() if "pfednas: error:" in line]
    assert len(errors) == 1, output[-3000:]
    assert ("this simulation runs 2 SuperNodes but federation.num_clients=3" in errors[0]
            and "--federation-config 'num-supernodes=3'" in errors[0]), errors[0]
    status, details = run_status(flower_env)
    assert status == "finished:failed" and "pfednas refused the run: this simulation" in details
    assert not out.exists()  # refused before anything was written


@pytest.mark.slow
def test_flwr_run_without_federation_config_runs_the_job_on_a_federation_sized_once(
        flower_env: dict[str, str], tmp_path: Path) -> None:
    # Prepare: the local SuperLink's federation sized to the job, as the refusal says
    subprocess.run(["flwr", "federation", "simulation-config", "--num-supernodes", "3"],
                   cwd=REPO, env=flower_env, capture_output=True, timeout=60, check=True)
    out = tmp_path / "run"

    # Execute
    output = flwr_run(flower_env, out)

    # Assert: the configured job as a simulation (every profile drawn by the server, none
    # measured), its results written to the absolute output-dir, the in-process runner's
    # summary. (--federation-config num-supernodes=K reaches pfednas as K SuperNodes: the
    # refused run above.)
    assert "pfednas: error:" not in output and "Traceback" not in output, output[-3000:]
    assert run_status(flower_env)[0] == "finished:completed"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_clients_evaluated"] == 3
    assert [p["source"] for p in summary["profiles"]] == ["simulated"] * 3
    assert "hardware profile" not in output  # no client measured its own machine
    assert sorted(p.name for p in (out / "models").iterdir()) == [
        "client_0", "client_1", "client_2"]
    assert comparable(summary) == comparable(run_inprocess(TINY).summary)
