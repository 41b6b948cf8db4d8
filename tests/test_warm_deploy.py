"""``pfednas deploy local`` with warm ClientApps (issue 65, item 2): a task killed mid-task
fails as Flower reports a crashed ClientApp, and the next tasks get fresh forks. The
deployment waits out Flower's heartbeat, so it is a background scenario (tests/background.py).

That a warm deployment (deploy local's default) reproduces its simulation bit for bit and
leaves no fork server or task behind is checked on the TLS deployment of
``tests/test_deploy.py``, which runs warm."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.background import Scenarios, scenario
from tests.conftest import PFEDNAS, REPO, pids_with_token

NODES = 2
RUN = ["method=fedavg", "method.arch=min", "federation.num_rounds=2", "federation.eval_every=2",
       "federation.local_epochs=1", "method.finetune_epochs=2"]


# CPU seconds a warm task has used once it trains (its pull takes less; a round-1 training
# task of this run used 3.5 s here, round 2's 1.5 s)
TRAINING_CPU_S = 0.5


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@scenario
def warm_task_killed_run(folder: Path) -> dict[str, Any]:
    """A deployment whose node 0 loses its first training task to SIGKILL."""
    out = folder / "run"
    proc = subprocess.Popen([str(PFEDNAS), "deploy", "local", f"nodes={NODES}", *RUN,
                             "--out", str(out)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    server_log = out / "logs" / "warm-clientapps-0.log"
    deadline = time.monotonic() + 300
    killed = None
    try:
        while killed is None and proc.poll() is None and time.monotonic() < deadline:
            # its first task answers the id query, the second trains round 1: once it has
            # pulled its message and trains (a ClientApp killed before its pull is started
            # again by Flower, which then has no failure to report)
            started = [int(pid) for pid in re.findall(r"task (\d+) started",
                                                      _text(server_log))]
            if len(started) >= 2 and cpu_seconds(started[1]) >= TRAINING_CPU_S:
                killed = started[1]
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.02)
        if killed is None:
            proc.terminate()  # deploy local stops all it started
        output = proc.communicate(timeout=600)[0]
    finally:
        if proc.poll() is None:  # past its timeout: stopped with all it started
            proc.terminate()
            proc.communicate(timeout=120)
    return {"out": str(out), "returncode": proc.returncode, "killed": killed,
            "output": output}


@pytest.mark.slow
@pytest.mark.scenario("warm_task_killed_run")
def test_a_warm_task_killed_mid_task_fails_as_flower_reports_a_crashed_clientapp(
        scenarios: Scenarios) -> None:
    # Execute: the deployment (started in the background: it waits out Flower's heartbeat)
    run = scenarios.outcome("warm_task_killed_run")
    out, killed, output = Path(run["out"]), run["killed"], run["output"]
    server_log = out / "logs" / "warm-clientapps-0.log"

    # Assert: Flower's own verdict on a ClientApp that died (its task token expired), the
    # round counted one failure, and the next tasks ran in fresh forks
    assert killed is not None, f"no round-1 training task to kill: {output[-3000:]}"
    assert run["returncode"] == 0, output[-3000:]
    assert f"task {killed} ended: killed by signal 9" in server_log.read_text()
    logs = "".join(_text(p) for p in (out / "logs").iterdir()) + output
    assert "A client failed: ClientApp stopped responding." in logs
    rounds = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["failures"] for r in rounds] == [1, 0]
    assert len(rounds[1]["train"]) == NODES
    assert re.findall(r"task \d+ ended: (.*)", server_log.read_text())[2:] == \
        ["exit code 0"] * 2  # round 2's training and the final evaluation
    assert pids_with_token((out / "logs" / "run_token").read_text().strip()) == []


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
