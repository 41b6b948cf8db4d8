"""HAPFNAS end to end through `pfednas`: the three phases on digits, flwr run + Ray.

One real run (module-scoped) serves the three-phase checks and those of the summary's
per-client rows and the console table that counts them (issue 17).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch

from pfednas.config import compose, settings_from_cfg
from pfednas.data import load_client_data
from tests.conftest import PFEDNAS, pids_with_token, run_pfednas

ARGS = ["method=hapfnas", "federation.num_clients=4", "federation.clients_per_round=2",
        "federation.num_rounds=6", "federation.local_epochs=2", "federation.eval_every=3",
        "dataset.max_samples_per_client=150", "method.distill_rounds=2",
        "method.search_rounds=1", "method.knowledge_width=8", "method.transfer.size=400",
        "method.distill.steps=10", "method.distill.random_subnets=1",
        "method.knowledge_epochs=5", "method.predictor.archs_per_client=12",
        "method.predictor.trees=30", "method.predictor.folds=3",
        "method.evolution.population=12", "method.evolution.generations=5",
        "method.evolution.parents=4",
        "method.finetune_epochs=0",  # the paper's personalized model: the slice as it is
        # a small space keeps the server's distillation at seconds on a shared 2-core machine
        "search_space.base_widths=[8,16,24]", "search_space.depths=[1,2]",
        "search_space.kernels=[3,5]", "search_space.stage_strides=[1,2,2]",
        "search_space.stage_se=[false,true,true]",
        "search_space.stage_acts=[relu,hswish,hswish]", "search_space.head_width=64"]


@pytest.fixture(scope="module")
def hapfnas_run(tmp_path_factory: pytest.TempPathFactory
                ) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("hapfnas") / "run"
    return out, run_pfednas(ARGS, out)


def finished_summary(run: tuple[Path, subprocess.CompletedProcess[str]]) -> dict:
    """The summary of a run that ended well."""
    out, result = run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return dict(json.loads((out / "summary.json").read_text()))


@pytest.mark.slow
def test_three_phases_on_digits_beat_chance_within_budgets(
        hapfnas_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, result = hapfnas_run
    summary = finished_summary(hapfnas_run)
    assert summary["method"] == "hapfnas" and summary["num_clients_evaluated"] == 4
    assert summary["personalized_acc_mean"] > 0.3  # chance is 0.1
    assert all(c["num_params"] > 0 for c in summary["per_client"])
    extra = summary["hapfnas"]
    assert extra["budget_violations"] == 0 and extra["clients"] == 4
    assert extra["phase_rounds"] == {"distill": 2, "search": 1, "hetero": 3}
    assert all(extra["phase_seconds"][p] > 0 for p in ("distill", "search", "hetero"))
    rounds = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == list(range(1, 7))
    assert [r.get("server", {}).get("phase") for r in rounds] == [1, 1, 2, None, None, None]
    assert all(r["failures"] == 0 and r["rejected"] == 0 for r in rounds)
    assert all(0 <= r["server"]["acc_max"] <= 1 and r["server"]["kl_min"] >= 0
               for r in rounds[:2])
    assert all(row["cost"] <= row["budget"] for row in rounds[2]["train"])
    final = rounds[-1]["evaluation"]
    assert all(row["arch"].startswith("mobilenetv3:") and row["over_budget"] == 0
               for row in final)
    token = (out / "logs" / "run_token").read_text().strip()
    assert pids_with_token(token) == []

    # Execute / Assert: `pfednas export` of client 1 reproduces its personalized accuracy
    exported = subprocess.run([str(PFEDNAS), "export", str(out), "--client", "1"],
                              capture_output=True, text=True, check=False)
    assert exported.returncode == 0, exported.stderr[-2000:]
    spec = json.loads((out / "export" / "client_1.json").read_text())
    assert spec["arch"] == next(r["arch"] for r in final if r["client_id"] == 1)
    test = load_client_data(settings_from_cfg(compose(ARGS)).data, 1).test
    model = torch.jit.load(str(out / "export" / "client_1.pt"))
    with torch.no_grad():
        predicted = model(torch.as_tensor(test.x)).argmax(1).numpy()
    expected = next(c["accuracy"] for c in summary["per_client"] if c["client_id"] == 1)
    assert float((predicted == test.y).mean()) == expected


@pytest.mark.slow
def test_nas_summary_rows_carry_arch_cost_budget_and_the_table_counts_them(
        hapfnas_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, result = hapfnas_run
    summary = finished_summary(hapfnas_run)
    rows = summary["per_client"]
    for row in rows:
        assert row["arch"].startswith("mobilenetv3:")
        assert row["params"] > 0 and row["flops"] > 0 and row["memory_bytes"] > 0
        assert row["budget_metric"] == "memory" and row["cost"] == row["memory_bytes"]
        assert row["within_budget"] == (row["cost"] <= row["budget"])
    assert summary["distinct_archs"] == len({row["arch"] for row in rows})
    assert summary["within_budget_share"] == sum(r["within_budget"] for r in rows) / len(rows)
    assert "distinct architectures" in result.stdout
    fits = sum(r["within_budget"] for r in rows)
    assert re.search(rf"\| clients within budget +\| {fits}/4 ", result.stdout)


def test_holdout_transfer_without_unheld_samples_is_refused_before_launch(
        tmp_path: Path) -> None:
    result = run_pfednas(["method=hapfnas", "method.transfer.source=holdout"], tmp_path / "run",
                         timeout=120)

    assert result.returncode == 2
    assert "no client holds" in result.stderr and "transfer.source=synthetic" in result.stderr
