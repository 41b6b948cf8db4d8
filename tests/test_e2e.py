"""The user's entry point end to end: `pfednas` on digits, 3 rounds, through flwr run + Ray.

FedAvg runs through the real command. Local training, which sends nothing, runs the same
setting with the in-process runner (real strategy and ClientApp handlers, no transport):
its checks are about its results; the command, its console and its processes are
FedAvg's run's (and the report tests run `local` through `pfednas bench`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pfednas.app.tensorboard import round_scalars
from pfednas.run.inprocess import run_inprocess
from tests.conftest import measured_removed, pids_with_token, run_pfednas

# method.arch=min: the baselines' default fixed model is the space's largest subnet (655 k
# parameters on digits, ~15x the compute of the smallest, and slower to learn in 3 rounds);
# the smallest keeps this test CI-sized. The bar (> 0.3, chance 0.1) is unchanged.
FAST = ["method.arch=min", "federation.num_clients=6", "federation.clients_per_round=3",
        "federation.num_rounds=3", "federation.eval_every=3"]


def check_results(summary: dict[str, Any], records: list[dict[str, Any]], method: str) -> None:
    assert summary["method"] == method and summary["dataset"] == "digits"
    assert summary["num_clients_evaluated"] == 6
    assert summary["personalized_acc_mean"] > 0.3  # chance is 0.1
    assert len(summary["per_client"]) == 6
    assert [r["round"] for r in records] == [1, 2, 3]


def test_fedavg_three_rounds_on_digits_beat_chance_and_leave_no_process(tmp_path: Path) -> None:
    out = tmp_path / "run"

    result = run_pfednas(["method=fedavg", *FAST, "method.finetune_epochs=2",
                          "tensorboard=true"], out)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    check_results(summary, records, "fedavg")
    assert summary["bytes_down"] > 0 and summary["bytes_up"] > 0
    assert records[0]["sampled_clients"] and records[0]["train"]
    assert "personalized acc" in result.stdout
    token = (out / "logs" / "run_token").read_text().strip()
    assert pids_with_token(token) == []
    # the folder holds what the run is for: no FLWR_HOME (the launcher's is temporary), no
    # empty cli.log, no checkpoint after 3 rounds with checkpoint_every=5; the live
    # TensorBoard log asked for, each round's scalars under `pfednas report`'s tags
    assert sorted(p.name for p in out.iterdir()) == [
        ".hydra", "logs", "metrics.jsonl", "models", "resolved_config.yaml", "summary.json",
        "tensorboard"]
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    for record in records:
        for tag, value in round_scalars(record).items():
            (logged,) = [e.value for e in events.Scalars(tag) if e.step == record["round"]]
            assert logged == pytest.approx(value, rel=1e-6)
    assert "personalized/acc_mean" in events.Tags()["scalars"]
    # Ray ran two clients side by side (client_cpus 1 on 2 CPUs, as CI has; a GPU share is
    # the same placement by another resource); one after another, in this process, the
    # records are the same, measured times and memory aside
    alone = run_inprocess(["method=fedavg", *FAST, "method.finetune_epochs=2"])
    assert [measured_removed(r) for r in records] == \
        [measured_removed(r.to_json()) for r in alone.records]


def test_local_three_rounds_on_digits_beat_chance_and_send_nothing() -> None:
    run = run_inprocess(["method=local", *FAST])

    check_results(run.summary, [r.to_json() for r in run.records], "local")
    assert run.summary["bytes_down"] == 0 and run.summary["bytes_up"] == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (on CPU the same "
                    "setting is refused before it starts: tests/test_cli_bad_input.py)")
def test_a_simulation_runs_its_clients_on_a_gpu_share(tmp_path: Path) -> None:
    # Prepare: each client asks Ray for a quarter of the GPU, as bench=paper_cifar10 does
    out = tmp_path / "run"

    # Execute
    result = run_pfednas(["method=fedavg", *FAST, "method.finetune_epochs=2",
                          "federation.client_gpus=0.25"], out)

    # Assert
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    check_results(summary, records, "fedavg")
