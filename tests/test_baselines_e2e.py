"""FedRep, FedBABU and FedNAS end to end: `pfednas` on digits, 3 rounds, through flwr run + Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import pids_with_token, run_pfednas

FEDERATION = ["federation.num_clients=4", "federation.clients_per_round=2",
              "federation.num_rounds=3", "federation.eval_every=3"]
METHOD = {
    "fedrep": ["method.arch=min", "method.finetune_epochs=2"],
    "fedbabu": ["method.arch=min", "method.finetune_epochs=2"],
    # a small darts_s2 supernet: 3 cells (normal, reduce, reduce), 2 nodes, 4 channels
    "fednas": ["search_space=darts_s2", "search_space.channels=4", "search_space.layers=3",
               "search_space.steps=2", "search_space.multiplier=2", "method.finetune_epochs=2"],
}


@pytest.mark.parametrize("method", sorted(METHOD))
def test_three_rounds_on_digits_beat_chance_and_leave_no_process(tmp_path: Path,
                                                                  method: str) -> None:
    out = tmp_path / "run"

    result = run_pfednas([f"method={method}", *FEDERATION, *METHOD[method]], out)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == method and summary["num_clients_evaluated"] == 4
    assert summary["personalized_acc_mean"] > 0.3  # chance is 0.1
    rounds = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert all(len(r["train"]) == 2 and r["rejected"] == 0 for r in rounds)
    assert summary["bytes_down"] > 0 and summary["bytes_up"] > 0
    if method == "fednas":
        archs = {row["arch"] for row in rounds[-1]["evaluation"]}
        assert len(archs) == 1 and archs.pop().startswith("darts_s2:")
    token = (out / "logs" / "run_token").read_text().strip()
    assert pids_with_token(token) == []
