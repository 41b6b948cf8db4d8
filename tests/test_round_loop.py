"""The round loop owns the round's record: hooks return what their stage produced
(``StageResult``), the reply gate counts into the round's tally, and ``play_round``
writes both into the ``RoundRecord``; getters change nothing."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from flwr.app import ArrayRecord, Message, MessageType, MetricRecord, RecordDict

from pfednas.records import RoundRecord, StageResult
from pfednas.strategies import Budget, FedAvgFTStrategy
from tests.conftest import SGD, AnsweringGrid

WEIGHTS = [np.zeros((2, 3), np.float32), np.zeros(4, np.float32)]
SENT_BYTES = sum(a.nbytes for a in WEIGHTS)

# Messages need the task identity Flower sets inside a run (conftest.run_id).
pytestmark = pytest.mark.usefixtures("run_id")


def fedavg(**budget: object) -> FedAvgFTStrategy:
    settings = {"num_clients": 3, "clients_per_round": 2, "num_rounds": 3, "local_epochs": 1,
                "eval_every": 1, "round_timeout": 0.2, "eval_timeout": 0.2, "seed": 0,
                **budget}
    strategy = FedAvgFTStrategy(budget=Budget(**settings),  # type: ignore[arg-type]
                                sgd=SGD, initial_arrays=WEIGHTS, finetune_epochs=2)
    strategy.node_of = {c: 100 + c for c in range(3)}
    return strategy


def client(silent: int | None = None, bad_loss: int | None = None
           ) -> Callable[[Message], RecordDict | None]:
    """Client ``c`` (node 100 + c) trains to all-ones and evaluates to accuracy c / 10;
    ``silent`` never answers, ``bad_loss`` answers its evaluation with a loss of NaN."""
    def answer(msg: Message) -> RecordDict | None:
        cid = msg.metadata.dst_node_id - 100
        if cid == silent:
            return None
        if msg.metadata.message_type == MessageType.TRAIN:
            return RecordDict({"arrays": ArrayRecord(numpy_ndarrays=[np.ones_like(a)
                                                                      for a in WEIGHTS]),
                               "metrics": MetricRecord({"client_id": cid, "num_examples": 10,
                                                        "train_loss": 0.5})})
        loss = float("nan") if cid == bad_loss else 0.7
        return RecordDict({"metrics": MetricRecord({"client_id": cid, "num_examples": 5,
                                                    "accuracy": cid / 10, "loss": loss})})
    return answer


def test_a_round_record_is_what_the_stages_returned_and_the_tally_counted() -> None:
    # Prepare: round 1 of 3 (an intermediate evaluation: quick, F = 2 is skipped)
    strategy = fedavg()
    sampled = strategy.train_clients(1)
    grid = AnsweringGrid(client(bad_loss=2))

    # Execute
    record = strategy.play_round(grid, 1)  # type: ignore[arg-type]

    # Assert: sampled, rows, kind, missing and the counts, all in the returned record
    assert record.round == 1 and record.sampled == sampled
    assert [row["client_id"] for row in record.train] == sampled
    assert [row["client_id"] for row in record.evaluation] == [0, 1]
    assert [row["accuracy"] for row in record.evaluation] == [0.0, 0.1]
    assert record.eval_kind == "quick" and record.clients_missing == [2]
    assert (record.rejected, record.failures) == (1, 0)
    assert record.bytes_down == 5 * SENT_BYTES  # 2 training + 3 evaluation messages
    assert record.bytes_up == 2 * SENT_BYTES
    assert all(m.content["config"]["finetune_epochs"] == 0  # type: ignore[index]
               for m in grid.pushed if m.metadata.message_type == MessageType.EVALUATE)
    np.testing.assert_array_equal(strategy.arrays[0], np.ones((2, 3), np.float32))


def test_each_round_starts_a_new_tally_and_the_last_evaluation_is_final() -> None:
    # Prepare: client 1 never answers (a failure in every message it is sent)
    strategy = fedavg(num_rounds=2, clients_per_round=3)
    records: list[RoundRecord] = []

    # Execute
    strategy.run(AnsweringGrid(client(silent=1)), records.append)  # type: ignore[arg-type]

    # Assert: the failures of round 1 are not counted again in round 2
    assert [r.round for r in records] == [1, 2]
    assert [r.failures for r in records] == [2, 2]  # its training and its evaluation
    assert [r.eval_kind for r in records] == ["quick", "final"]
    assert [r.clients_missing for r in records] == [[1], [1]]


def test_the_fine_tuning_getters_change_nothing() -> None:
    # Prepare
    strategy = fedavg()
    before = dict(vars(strategy))

    # Execute
    epochs = [strategy.eval_finetune_epochs(r) for r in (1, 2, 3)]
    kinds = [strategy.eval_kind(r) for r in (1, 2, 3)]

    # Assert: F only at the last round; the strategy untouched
    assert epochs == [0, 0, 2] and kinds == ["quick", "quick", "final"]
    assert fedavg(eval_finetune="all").eval_kind(1) == "full"
    assert vars(strategy) == before


def test_an_empty_stage_field_leaves_the_record_as_it_is() -> None:
    # Prepare: a record with the training stage's rows and server report
    record = RoundRecord(round=4, train=[{"client_id": 0}], server={"phase": 1})

    # Execute: an evaluation stage that fills only its own fields
    after = StageResult(evaluation=[{"client_id": 0, "accuracy": 0.5}], eval_kind="full",
                        clients_missing=[]).written_into(record)

    # Assert
    assert after.train == [{"client_id": 0}] and after.server == {"phase": 1}
    assert after.evaluation == [{"client_id": 0, "accuracy": 0.5}]
    assert after.eval_kind == "full" and record.evaluation == []
