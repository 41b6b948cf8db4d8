"""The in-process runner is a simulation by construction, as `pfednas` runs are."""

from __future__ import annotations

import os

import pytest

from pfednas.config import SIMULATION_ENV
from pfednas.run.inprocess import run_inprocess
from tests.conftest import measured_removed


def test_an_inprocess_run_is_a_simulation_without_the_launchers_variable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: no PFEDNAS_SIMULATION in the environment; a fault plan, which only a
    # simulation accepts (a deployment's ClientApp refuses it)
    monkeypatch.delenv(SIMULATION_ENV, raising=False)
    overrides = ["method=fedavg", "federation.num_clients=2", "federation.clients_per_round=2",
                 "federation.num_rounds=1", "federation.local_epochs=1",
                 "method.finetune_epochs=0", "fault_injection={plan: {1: bad_accuracy}}"]

    # Execute
    run = run_inprocess(overrides)

    # Assert: client 1's reply was rejected by the server, client 0's aggregated; the
    # process's environment is as it was
    (record,) = run.records
    assert record.rejected == 1
    assert [row["client_id"] for row in record.train] == [0]
    assert SIMULATION_ENV not in os.environ


@pytest.mark.parametrize("method", ["fedrep", "perfedrlnas"])
def test_clients_side_by_side_give_the_records_of_clients_one_after_another(
        method: str) -> None:
    # Prepare: FedRep keeps each client's head between rounds in its node's context
    overrides = [f"method={method}", "federation.num_clients=6",
                 "federation.clients_per_round=3", "federation.num_rounds=3",
                 "federation.eval_every=3", "method.finetune_epochs=1"]

    # Execute
    alone = run_inprocess(overrides)
    side_by_side = run_inprocess(overrides, workers=2)

    # Assert
    first = [measured_removed(r.to_json()) for r in alone.records]
    second = [measured_removed(r.to_json()) for r in side_by_side.records]
    assert first == second
    assert alone.summary["personalized_acc_mean"] == side_by_side.summary["personalized_acc_mean"]
