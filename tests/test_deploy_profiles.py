"""A real deployment whose nodes state different hardware profiles: each gets its own
architecture within its own stated budget, timed on the server's clock."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PFEDNAS, REPO, pids_with_token

# MiB, against the calibrated upper bound of real training memory a deployment compares
# (pfednas.search.memory_bound; at batch 32 on digits 41.9 MiB for the smallest subnet,
# 67.6 MiB for the largest): just above the smallest, about 40 % of the way up, above the
# largest
BUDGETS_MB = (42.5, 52.0, 70.0)
RUN = ["method=perfedrlnas", "dataset=digits", "nodes=3", "federation.num_rounds=2",
       "federation.clients_per_round=3", "federation.eval_every=2",
       "federation.local_epochs=1", "method.finetune_epochs=0"]


@pytest.mark.slow
def test_nodes_stating_different_budgets_get_different_architectures_within_them(
        tmp_path: Path) -> None:
    # Prepare: three SuperNodes, each stating its own memory budget and speed
    out = tmp_path / "run"
    profiles = [f"--node-profile=memory-budget-mb={mb} macs-per-second={2e9 * (i + 1)} "
                "bandwidth-mbps=100" for i, mb in enumerate(BUDGETS_MB)]

    # Execute
    result = subprocess.run([str(PFEDNAS), "deploy", "local", "--insecure", *profiles, *RUN,
                             f"hydra.run.dir={out}"], cwd=REPO, capture_output=True,
                            text=True, timeout=600, check=False)

    # Assert: every client's stated profile in the results, its architecture within its
    # stated budget, the architectures not all one, the round time from the server's clock
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [(p["client_id"], p["memory_budget_mb"], p["source"]) for p in summary["profiles"]] \
        == [(i, mb, "stated") for i, mb in enumerate(BUDGETS_MB)]
    assert [p["macs_per_second"] for p in summary["profiles"]] == [2e9, 4e9, 6e9]
    rows = {row["client_id"]: row for row in summary["per_client"]}
    assert sorted(rows) == [0, 1, 2]
    for cid, mb in enumerate(BUDGETS_MB):
        assert rows[cid]["budget"] == mb * 2**20
        assert rows[cid]["within_budget"] and rows[cid]["memory_bytes"] <= mb * 2**20
    assert len({row["arch"] for row in rows.values()}) >= 2
    assert summary["within_budget_share"] == 1.0
    assert summary["round_time_source"] == "server_clock" and "excluded_clients" not in summary
    rounds = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    trained = [row for r in rounds for row in r["train"] if "round_time" in row]
    assert trained and all(0 < row["round_time"] < 600 for row in trained)
    commands = (out / "logs" / "commands.sh").read_text()
    assert "memory-budget-mb=42.5" in commands and "memory-budget-mb=70.0" in commands
    assert pids_with_token((out / "logs" / "run_token").read_text().strip()) == []
    # the exported model of the most constrained client is the one its claimed budget chose
    # (measured by the nodes below; the export's own measurement: tests/test_kept_models.py)
    export = subprocess.run([str(PFEDNAS), "export", str(out), "--client", "0", "--no-measure",
                             "--out", str(tmp_path / "export")], capture_output=True, text=True,
                            check=False)
    assert export.returncode == 0, export.stderr[-2000:]
    spec = json.loads((tmp_path / "export" / "client_0.json").read_text())
    assert spec["arch"] == rows[0]["arch"]
    # each node kept its model in its model-dir and measured it there, beside its budget
    for cid, mb in enumerate(BUDGETS_MB):
        kept = json.loads((out / "models" / f"client_{cid}" / "spec.json").read_text())
        node = kept["measured"]["node"]
        assert node["runtime"].startswith("torch.jit") and node["latency_ms_median"] > 0
        assert node["peak_rss_mb"] > 0 and kept["profile"]["source"] == "stated"
        assert kept["budget"]["budget"] == mb * 2**20 and kept["budget"]["fits"]
        assert kept["models"][kept["reported"]]["accuracy"] == rows[cid]["accuracy"]
