"""SPIDER and Ditto end to end through `pfednas` (flwr run + Ray), 3 rounds on digits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import pids_with_token, run_pfednas

# A small darts_s2 and 90 training samples per client keep a run near a minute; with
# t_s = 1, τ = 1 the searcher decides one edge per cell type in rounds t = 1 and t = 2.
TINY = ["search_space=darts_s2", "search_space.layers=3", "search_space.channels=4",
        "federation.num_clients=3", "federation.clients_per_round=3",
        "federation.num_rounds=3", "federation.eval_every=3", "federation.local_epochs=1",
        "dataset.max_samples_per_client=150", "method.warmup_rounds=1",
        "method.recovery_rounds=1"]
FULL = "darts_s2:n_" + "b" * 14 + "-r_" + "b" * 14


@pytest.mark.parametrize("method", ["spider", "ditto"])
def test_three_rounds_search_beat_chance_and_leave_no_process(tmp_path: Path,
                                                              method: str) -> None:
    out = tmp_path / "run"

    result = run_pfednas([f"method={method}", *TINY], out)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == method and summary["num_clients_evaluated"] == 3
    assert summary["personalized_acc_mean"] > 0.25  # chance is 0.1
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [1, 2, 3]
    assert all(len(r["sampled_clients"]) == 3 for r in records)  # full participation
    final = records[-1]
    archs = [row["arch"] for row in final["evaluation"]]
    assert all(a.startswith("darts_s2:n_") for a in archs)
    if method == "spider":
        assert [row["decided_edges"] for row in final["train"]] == [4, 4, 4]
        assert all(a != FULL for a in archs)
    else:
        assert archs == [FULL] * 3
    # only the global supernet travels, identical in both directions
    assert summary["bytes_up"] == summary["bytes_down"] > 0
    token = (out / "logs" / "run_token").read_text().strip()
    assert pids_with_token(token) == []
