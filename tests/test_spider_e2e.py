"""SPIDER end to end through `pfednas` (flwr run + Ray), 3 rounds on digits; Ditto, its
baseline, on the same setting with the in-process runner (real strategy and ClientApp
handlers, no transport: its checks are about the search and the traffic, not processes).

The one real SPIDER run (a module fixture) also serves issue 17's checks that SPIDER brings
its own search space and that `pfednas report --tensorboard` reads a finished run.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pfednas.run.inprocess import run_inprocess
from tests.conftest import PFEDNAS, pids_with_token, run_pfednas

# A small darts_s2 and 150 samples per client keep a run near a minute; with t_s = 1, τ = 1
# the searcher decides one edge per cell type in rounds t = 1 and t = 2. Both methods bring
# their search space (darts_s2): no search_space= override.
TINY = ["search_space.layers=3", "search_space.channels=4",
        "federation.num_clients=3", "federation.clients_per_round=3",
        "federation.num_rounds=3", "federation.eval_every=3", "federation.local_epochs=1",
        "dataset.max_samples_per_client=150", "method.warmup_rounds=1",
        "method.recovery_rounds=1"]
FULL = "darts_s2:n_" + "b" * 14 + "-r_" + "b" * 14

Run = tuple[Path, subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def spider_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("spider") / "run"
    return out, run_pfednas(["method=spider", *TINY], out)


def _ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def check_three_rounds(summary: dict[str, Any], records: list[dict[str, Any]],
                       method: str) -> list[str]:
    """What both methods share; returns the final architectures."""
    assert summary["method"] == method and summary["num_clients_evaluated"] == 3
    assert summary["personalized_acc_mean"] > 0.25  # chance is 0.1
    assert [r["round"] for r in records] == [1, 2, 3]
    assert all(len(r["sampled_clients"]) == 3 for r in records)  # full participation
    archs = [row["arch"] for row in records[-1]["evaluation"]]
    assert all(a.startswith("darts_s2:n_") for a in archs)
    # only the global supernet travels, identical in both directions
    assert summary["bytes_up"] == summary["bytes_down"] > 0
    return archs


@pytest.mark.slow
def test_spider_three_rounds_search_beat_chance_and_leave_no_process(spider_run: Run) -> None:
    out, result = spider_run

    _ok(result)
    summary = json.loads((out / "summary.json").read_text())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    archs = check_three_rounds(summary, records, "spider")
    assert [row["decided_edges"] for row in records[-1]["train"]] == [4, 4, 4]
    assert all(a != FULL for a in archs)
    token = (out / "logs" / "run_token").read_text().strip()
    assert pids_with_token(token) == []


@pytest.mark.slow
def test_ditto_three_rounds_keep_the_full_supernet_and_beat_chance() -> None:
    run = run_inprocess(["method=ditto", *TINY])

    archs = check_three_rounds(run.summary, [r.to_json() for r in run.records], "ditto")
    assert archs == [FULL] * 3


# -- issue 17: a method brings its search space -------------------------------------------------
@pytest.mark.slow
def test_spider_without_search_space_runs_on_darts_s2(spider_run: Run) -> None:
    out, result = spider_run

    _ok(result)
    assert yaml.safe_load((out / "resolved_config.yaml").read_text())["search_space"]["name"] \
        == "darts_s2"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_clients_evaluated"] == 3
    # SPIDER's rows carry each client's local architecture
    assert all(row["arch"].startswith("darts_s2:") for row in summary["per_client"])
    assert summary["distinct_archs"] >= 1


# -- issue 17: pfednas report --tensorboard, read back by TensorBoard ----------------------------
@pytest.mark.slow
def test_report_tensorboard_event_files_read_back_by_tensorboard(spider_run: Run,
                                                                 tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, result = spider_run
    _ok(result)

    report = subprocess.run([str(PFEDNAS), "report", str(out), "--tensorboard", "--out",
                             str(tmp_path / "report")], capture_output=True, text=True,
                            check=False, timeout=300)

    assert report.returncode == 0, report.stderr[-2000:]
    runs = sorted({p.parent for p in (tmp_path / "report" / "tensorboard").rglob("events.out.*")})
    assert len(runs) == 1
    events = EventAccumulator(str(runs[0]))
    events.Reload()
    acc = events.Scalars("personalized/acc_mean")
    assert [e.step for e in acc] == [3]  # the run's one evaluation, after round 3
    summary = json.loads((out / "summary.json").read_text())
    assert acc[0].value == pytest.approx(summary["personalized_acc_mean"], abs=1e-6)
    assert "round/wall_seconds" in events.Tags()["scalars"]
