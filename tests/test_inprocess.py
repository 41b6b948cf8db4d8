"""The in-process runner is a simulation by construction, as `pfednas` runs are."""

from __future__ import annotations

import os

import pytest

from pfednas.config import SIMULATION_ENV
from pfednas.run.inprocess import run_inprocess


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
