"""``pfednas deploy local`` with warm ClientApps (issue 65, item 2), its default: each node's
fork server hands out its ClientApp processes, the run is its simulation's bit for bit, and no
fork server or task outlives the deployment."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from pfednas.run.inprocess import run_inprocess
from tests.conftest import PFEDNAS, REPO, pids_with_token

NODES = 2
RUN = ["method=fedavg", "method.arch=min", "federation.num_rounds=2", "federation.eval_every=2",
       "federation.local_epochs=1", "method.finetune_epochs=2"]


def processes_naming(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.slow
def test_a_warm_deployment_reproduces_its_simulation_and_leaves_no_process(tmp_path: Path
                                                                          ) -> None:
    out = tmp_path / "run"

    result = subprocess.run([str(PFEDNAS), "deploy", "local", "--clientapps", "warm",
                             f"nodes={NODES}", *RUN, f"hydra.run.dir={out}"],
                            cwd=REPO, capture_output=True, text=True, timeout=600, check=False)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"{NODES} SuperNodes connected, warm ClientApps" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    simulated = run_inprocess([f"federation.num_clients={NODES}",
                               f"federation.clients_per_round={NODES}", *RUN]).summary
    fields = ("client_id", "accuracy", "accuracy_no_ft", "arch", "budget", "memory_bytes")
    assert [{k: row.get(k) for k in fields} for row in summary["per_client"]] == \
        [{k: row.get(k) for k in fields} for row in simulated["per_client"]]
    logs = out / "logs"
    for node in range(NODES):
        server_log = (logs / f"warm-clientapps-{node}.log").read_text()
        assert "ready in" in server_log and "stopped" in server_log
        # its id query, 2 training rounds and the final evaluation, each a fork that succeeded
        tasks = re.findall(r"task \d+ ended: (.*)", server_log)
        assert len(tasks) >= 4 and set(tasks) == {"exit code 0"}, server_log
        assert "forking with" not in server_log  # one thread at every fork
        assert "unreachable" not in (logs / f"supernode-{node}.log").read_text()  # never cold
    assert pids_with_token((logs / "run_token").read_text().strip()) == []
    assert processes_naming(str(out / "deploy" / "nodes")) == []  # no fork server, no task
