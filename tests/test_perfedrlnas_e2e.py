"""PerFedRLNAS end to end through `pfednas`: accuracy, the merge invariant, kill and resume.

Two real runs (a module fixture) serve every check: one whose ServerApp process is killed
after its round-2 checkpoint, and its resumption. The resumed run must end with the
summary of the uninterrupted run, which the in-process runner computes (the same strategy
and ClientApp handlers: the same records, times aside).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from pfednas.app.checkpoint import load_checkpoint
from pfednas.config import compose, settings_from_cfg, task_shape
from pfednas.data import load_client_data
from pfednas.seeding import MODEL_INIT, int_seed
from tests.conftest import (
    PFEDNAS,
    comparable,
    inprocess_summary,
    pids_with_token,
    run_and_stop_after_checkpoint,
    run_pfednas,
)

ARGS = ["method=perfedrlnas", "federation.num_clients=6", "federation.clients_per_round=3",
        "federation.num_rounds=4", "federation.eval_every=2", "checkpoint_every=2",
        "method.finetune_epochs=0"]  # the paper's personalized model: the slice as it is


def initial_supernet_arrays() -> tuple[list[np.ndarray], object]:
    settings = settings_from_cfg(compose(ARGS))
    task = task_shape(settings)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int_seed(settings.seed, MODEL_INIT))
        supernet = settings.search_space.build().build_supernet(
            num_classes=task.num_classes, in_channels=task.in_channels,
            image_size=task.image_size)
    return supernet.state_arrays(), supernet


FRESH = """
import json, sys
import numpy as np, torch
model = torch.jit.load(sys.argv[1])
data = np.load(sys.argv[2])
with torch.no_grad():
    pred = model(torch.as_tensor(data["x"])).argmax(1).numpy()
print(json.dumps({"accuracy": float((pred == data["y"]).mean()),
                  "pfednas_imported": any(m.startswith("pfednas") for m in sys.modules)}))
"""


def assert_export_reproduces_accuracy(run_dir: Path, summary: dict, out: Path,
                                      client: int) -> None:
    result = subprocess.run([str(PFEDNAS), "export", str(run_dir), "--client", str(client),
                             "--out", str(out)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    spec = json.loads((out / f"client_{client}.json").read_text())
    expected = next(c for c in summary["per_client"] if c["client_id"] == client)
    settings = settings_from_cfg(compose(ARGS))
    test = load_client_data(settings.data, client).test
    np.savez(out / "test.npz", x=test.x, y=test.y)
    fresh = subprocess.run([sys.executable, "-c", FRESH, str(out / f"client_{client}.pt"),
                            str(out / "test.npz")], capture_output=True, text=True,
                           check=True, cwd=out)
    loaded = json.loads(fresh.stdout.strip().splitlines()[-1])
    assert not loaded["pfednas_imported"]
    assert loaded["accuracy"] == expected["accuracy"]
    assert spec["arch"] == records_last_arch(run_dir, client)
    assert spec["input"]["shape"][1:] == [1, 8, 8]


def records_last_arch(run_dir: Path, client: int) -> str:
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    return next(r["arch"] for r in last["evaluation"] if r["client_id"] == client)


@dataclass(frozen=True)
class KilledAndResumed:
    killed: Path
    ended: subprocess.CompletedProcess[str]  # the command whose ServerApp was killed
    resumed: Path
    result: subprocess.CompletedProcess[str]  # the resuming command

    def summary(self) -> dict:
        return dict(json.loads((self.resumed / "summary.json").read_text()))

    def records(self) -> list[dict]:
        return [json.loads(x) for x in (self.resumed / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> KilledAndResumed:
    """The run with its ServerApp process killed (SIGKILL, by PID) after the round-2
    checkpoint, then resumed from that checkpoint."""
    base = tmp_path_factory.mktemp("perfedrlnas")
    killed = base / "killed"
    ended = run_and_stop_after_checkpoint(ARGS, killed, kill_server=True)
    resumed = base / "resumed"
    return KilledAndResumed(killed, ended, resumed,
                            run_pfednas([*ARGS, f"resume={killed}"], resumed))


@pytest.mark.slow
def test_killed_serverapp_stops_the_run_and_says_how_to_resume(runs: KilledAndResumed) -> None:
    # `pfednas` notices, stops everything and says how to resume
    assert runs.ended.returncode == 1
    assert "ServerApp process" in runs.ended.stderr
    assert f"resume={runs.killed}" in runs.ended.stderr
    assert not (runs.killed / "summary.json").exists(), "the run ended before it was killed"
    assert pids_with_token((runs.killed / "logs" / "run_token").read_text().strip()) == []


@pytest.mark.slow
def test_resumed_run_ends_like_the_uninterrupted_run(runs: KilledAndResumed) -> None:
    assert runs.result.returncode == 0, runs.result.stdout[-3000:] + runs.result.stderr[-3000:]
    assert "resumed from" in runs.result.stdout

    uninterrupted = inprocess_summary(ARGS)

    summary = runs.summary()
    assert comparable(summary) == comparable(uninterrupted)
    # above chance, architectures reported, nothing left running
    assert summary["method"] == "perfedrlnas"
    assert summary["personalized_acc_mean"] > 0.15  # chance is 0.1; 4 short rounds
    assert all(row["arch"].startswith("mobilenetv3:") for row in runs.records()[-1]["evaluation"])
    token = (runs.resumed / "logs" / "run_token").read_text().strip()
    assert pids_with_token(token) == []


@pytest.mark.slow
def test_entries_no_trained_subnet_covered_keep_their_initial_value(
        runs: KilledAndResumed) -> None:
    assert runs.result.returncode == 0, runs.result.stderr[-3000:]
    init, supernet = initial_supernet_arrays()

    _, state = load_checkpoint(runs.resumed)

    final = [state[f"supernet_{i}"] for i in range(len(init))]
    covered = [np.zeros(a.shape, bool) for a in init]
    space = supernet.space  # type: ignore[attr-defined]
    records = runs.records()
    assert [r["round"] for r in records] == [1, 2, 3, 4]  # rounds 1-2 from the killed run
    for record in records:
        for row in record["train"]:
            if not row.get("over_budget"):
                arch = space.arch_from_str(row["arch"])
                for i, where in supernet.regions(arch):  # type: ignore[attr-defined]
                    covered[i][where] = True
    assert any(not c.all() for c in covered), "every entry covered: the check would be empty"
    for a, b, c in zip(init, final, covered, strict=True):
        np.testing.assert_array_equal(a[~c], b[~c])


@pytest.mark.slow
def test_exported_model_reproduces_the_personalized_accuracy_without_pfednas(
        runs: KilledAndResumed, tmp_path: Path) -> None:
    # client 0's exported model, in a fresh interpreter without pfednas, reproduces the
    # client's personalized test accuracy
    assert runs.result.returncode == 0, runs.result.stderr[-3000:]

    assert_export_reproduces_accuracy(runs.resumed, runs.summary(), tmp_path / "export",
                                      client=0)


def test_resume_with_a_different_config_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    (run_dir / "checkpoint.npz").write_bytes(b"")
    (run_dir / "resolved_config.yaml").write_text("seed: 123\n")

    result = run_pfednas([*ARGS, f"resume={run_dir}"], tmp_path / "new", timeout=120)

    assert result.returncode == 2
    assert "config differs" in result.stderr
