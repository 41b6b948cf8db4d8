"""The in-process runner is a simulation by construction, as `pfednas` runs are."""

from __future__ import annotations

import os

import pytest
import torch

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
    # what its figures depend on besides the config: the vector unit and the libraries
    environment = run.summary["environment"]
    assert environment["cpu_capability"] == torch.backends.cpu.get_cpu_capability() != ""
    assert environment["torch"] == torch.__version__.split("+")[0] or \
        environment["torch"] == torch.__version__
    assert environment["client_threads"] == 1 and environment["flwr"].startswith("1.")


# These tests compare two runs of one setting, figures aside: 100 samples a client and the
# fixed-architecture baselines' smallest model (their default is the space's largest that
# fits, ~15x the compute) keep each run a few seconds; what they compare does not depend on
# the model's size or the data's.
FIXED_ARCH = ("fedavg", "local", "fedrep", "fedbabu")


def small(method: str) -> list[str]:
    return ["dataset.max_samples_per_client=100",
            *(["method.arch=min"] if method in FIXED_ARCH else [])]


@pytest.mark.parametrize("method", ["fedrep", "perfedrlnas"])
@pytest.mark.slow
def test_clients_side_by_side_give_the_records_of_clients_one_after_another(
        method: str) -> None:
    # Prepare: FedRep keeps each client's head between rounds in its node's context
    overrides = [f"method={method}", "federation.num_clients=6",
                 "federation.clients_per_round=3", "federation.num_rounds=3",
                 "federation.eval_every=3", "method.finetune_epochs=1", *small(method)]

    # Execute
    alone = run_inprocess(overrides)
    side_by_side = run_inprocess(overrides, workers=2)

    # Assert
    first = [measured_removed(r.to_json()) for r in alone.records]
    second = [measured_removed(r.to_json()) for r in side_by_side.records]
    assert first == second
    assert alone.summary["personalized_acc_mean"] == side_by_side.summary["personalized_acc_mean"]


@pytest.mark.parametrize("method", ["fedavg", "local", "fedrep", "fedbabu", "perfedrlnas",
                                    "hapfnas", "fednas", "spider", "ditto"])
@pytest.mark.slow
def test_fine_tuned_evaluations_along_the_way_change_no_training_and_no_final_figure(
        method: str) -> None:
    # Prepare: every round evaluated, quick (un-fine-tuned) or fine-tuned like the last;
    # FedRep keeps each client's head in its node's context, SPIDER its local model
    overrides = [f"method={method}", "federation.num_clients=4",
                 "federation.clients_per_round=2", "federation.num_rounds=3",
                 "federation.eval_every=1", "method.finetune_epochs=1", *small(method)]
    if method == "local":  # it has no fine-tuning: its evaluations are alike either way
        overrides.remove("method.finetune_epochs=1")
    if method == "hapfnas":  # one round of distillation, one of search, two of heteroFedAvg
        overrides[overrides.index("federation.num_rounds=3")] = "federation.num_rounds=4"
        overrides += ["method.distill_rounds=1",
                      "method.search_rounds=1", "method.knowledge_width=4",
                      "method.transfer.size=100", "method.distill.steps=2",
                      "method.distill.random_subnets=1", "method.knowledge_epochs=1",
                      "method.predictor.archs_per_client=2", "method.predictor.trees=5",
                      "method.predictor.folds=2", "method.evolution.population=4",
                      "method.evolution.generations=2", "method.evolution.parents=2"]
    if method in ("fednas", "spider", "ditto"):
        overrides += ["search_space.channels=4", "search_space.layers=3",
                      "search_space.steps=2", "search_space.multiplier=2"]

    # Execute
    quick = run_inprocess([*overrides, "federation.eval_finetune=final"])
    tuned = run_inprocess([*overrides, "federation.eval_finetune=all"])

    # Assert: the evaluations along the way are fine-tuned ones, and the training and the
    # final evaluation are those of the run without them
    if method != "local":  # (HAPFNAS evaluates in its heteroFedAvg rounds only)
        kinds = [[r.eval_kind for r in run.records if r.eval_kind] for run in (quick, tuned)]
        assert kinds[0][-1] == kinds[1][-1] == "final" and len(kinds[0]) == len(kinds[1]) > 1
        assert set(kinds[0][:-1]) == {"quick"} and set(kinds[1][:-1]) == {"full"}
    assert [measured_removed(r.train) for r in quick.records] == \
        [measured_removed(r.train) for r in tuned.records]
    assert measured_removed(quick.records[-1].evaluation) == \
        measured_removed(tuned.records[-1].evaluation)
    assert quick.summary["personalized_acc_mean"] == tuned.summary["personalized_acc_mean"]
