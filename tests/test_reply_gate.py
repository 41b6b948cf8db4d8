"""The reply gate: no reply can crash a strategy or steer it beyond what the server knows."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from pfednas.config import SIMULATION_ENV, ConfigError, compose, settings_from_cfg
from pfednas.data import partition
from pfednas.methods.build import build_strategy
from pfednas.packing import LAYOUT, pack
from pfednas.search import DartsS2Space
from pfednas.strategies import Budget, FedAvgFTStrategy, SpiderStrategy
from pfednas.strategies.budget import Roster
from pfednas.strategies.gate import examine, judge
from pfednas.wire.archcode import code_capacity
from pfednas.wire.validation import (
    KNOWN_METRICS,
    MAX_BATCH_COUNT,
    MAX_BN_MEAN,
    MAX_BN_VAR,
    MAX_PARAM,
    ArrayHeader,
    ArraySpec,
    MetricSpec,
    array_specs,
    check_array_headers,
    check_arrays,
    check_metrics,
    examples_bound_problem,
    npy_payload_problem,
    parse_dtype,
)
from tests.conftest import SGD

WEIGHTS = [np.zeros((2, 3), np.float32), np.zeros(4, np.float32)]


# Messages need the task identity Flower sets inside a run (conftest.run_id).
pytestmark = pytest.mark.usefixtures("run_id")


def budget(**kw: Any) -> Budget:
    return Budget(**{"num_clients": 3, "clients_per_round": 3, "num_rounds": 2,
                     "local_epochs": 1, "eval_every": 1, "round_timeout": 60.0, "seed": 0, **kw})


def fedavg(partition_sizes: tuple[int, ...] | None = None, **kw: Any) -> FedAvgFTStrategy:
    strategy = FedAvgFTStrategy(budget=budget(**kw), sgd=SGD,
                                initial_arrays=WEIGHTS, finetune_epochs=0,
                                roster=Roster(partition_sizes=partition_sizes))
    strategy.node_of = {c: 100 + c for c in range(3)}
    return strategy


def reply(strategy: Any, cid: int, metrics: dict[str, Any], arrays: Any = None,
          kind: str = MessageType.TRAIN, node: int | None = None) -> Message:
    """A reply from the node of ``cid`` (or ``node``), as that node would send it."""
    TaskIdentity.node_id = strategy.node_of[cid] if node is None else node
    content = RecordDict({"metrics": MetricRecord(metrics)})
    if arrays is not None:
        content["arrays"] = arrays if isinstance(arrays, ArrayRecord) \
            else ArrayRecord(numpy_ndarrays=arrays)
    return Message(content, dst_node_id=0, message_type=kind)


def train_metrics(cid: int, n: int = 10, **extra: Any) -> dict[str, Any]:
    return {"client_id": cid, "num_examples": n, "train_loss": 1.0, "train_seconds": 0.5,
            **extra}


def trained(value: float) -> list[np.ndarray]:
    return [np.full(a.shape, value, a.dtype) for a in WEIGHTS]


# -- the schema, as pure functions ------------------------------------------------------------
def test_required_metric_missing_and_out_of_range_are_named() -> None:
    required = [KNOWN_METRICS[n] for n in ("client_id", "num_examples", "accuracy", "loss")]
    good = {"client_id": 1, "num_examples": 5, "accuracy": 0.5, "loss": 0.7}

    assert check_metrics(good, required) is None
    del good["loss"]
    assert check_metrics(good, required) == "required metric 'loss' missing"
    assert "not an integer" in str(check_metrics(
        {**good, "loss": 1.0, "sample_passes": 2.5}, required))
    assert "outside" in str(check_metrics({**good, "loss": 1.0, "sample_passes": -1}, required))
    assert check_metrics({**good, "loss": 1.0, "sample_passes": 3}, required) is None
    arch = MetricSpec("arch_code", int, 0, 7)
    assert "outside" in str(check_metrics({**good, "loss": 1.0, "arch_code": 8}, [arch]))


def test_configuring_a_stage_changes_nothing_and_sending_records_its_requests() -> None:
    # Prepare: a round's training letters, built twice
    strategy = fedavg()
    train = strategy.configure_train(1)
    again = strategy.configure_train(1)

    # Assert: building them records nothing
    assert strategy.requests == {} and strategy.tally.bytes_down == 0
    assert [letter.client_id for letter in train.letters] == [0, 1, 2] == [
        letter.client_id for letter in again.letters]

    # Execute: the loop records what it sends
    strategy.answered.add(1)
    assert strategy.record(train) is train

    # Assert: each client's request, unanswered, its bytes counted once per message
    nbytes = sum(a.nbytes for a in WEIGHTS)
    assert {c: r.kind for c, r in strategy.requests.items()} == dict.fromkeys(
        range(3), MessageType.TRAIN)
    assert strategy.answered == set()
    assert strategy.tally.bytes_down == 3 * nbytes
    assert strategy.tally.train_down == dict.fromkeys(range(3), nbytes)
    assert all(np.array_equal(r.sent[0], WEIGHTS[0]) for r in strategy.requests.values())


def test_the_gate_returns_its_verdict_and_changes_nothing_it_is_given() -> None:
    # Prepare: training requests to three clients; 1 answers twice, 2 with an error
    strategy = fedavg()
    strategy.record(strategy.configure_train(1))
    requests, answered = dict(strategy.requests), set(strategy.answered)
    rules = strategy.gate_rules()
    failed = Message(Error(code=0, reason="boom"), reply_to=Message(RecordDict(),
                     dst_node_id=102, message_type=MessageType.TRAIN))
    replies = [reply(strategy, 1, train_metrics(1, n=7), trained(1.0)),
               reply(strategy, 0, train_metrics(0), trained(0.0)),
               reply(strategy, 1, train_metrics(1), trained(1.0)), failed]

    # Execute
    judged = judge(replies, requests, answered, rules)

    # Assert: accepted in client order, the second reply rejected, the error a failure,
    # and the strategy's round untouched until it counts the verdict
    assert [int(m["client_id"]) for m, _ in judged.accepted] == [0, 1]
    assert (judged.rejected, judged.failures, judged.answered) == (1, 1, {0, 1})
    assert set(judged.train_up) == {0, 1} and judged.bytes_up > 0
    assert judged.first_examples == {(1, MessageType.TRAIN): 7, (0, MessageType.TRAIN): 10}
    assert strategy.tally.rejected == 0 and strategy.answered == answered == set()
    assert strategy.first_examples == {}
    strategy.current.count(judged)
    assert (strategy.tally.rejected, strategy.tally.failures) == (1, 1)


def test_a_packed_reply_is_judged_as_its_plain_arrays_and_a_broken_packing_is_refused(
        ) -> None:
    # Prepare: the ClientApp packs its reply's arrays into one object (pfednas.packing).
    # Client 1's layout does not add up to its bytes; client 2's moves 8 bytes from one
    # array to the other (the lengths add up); a third reply's array has the wrong shape.
    strategy = fedavg()
    strategy.record(strategy.configure_train(1))
    rules = strategy.gate_rules()

    def packed(cid: int, arrays: list[np.ndarray], lengths: Any = None) -> Message:
        message = reply(strategy, cid, train_metrics(cid), arrays)
        message.content = pack(message.content)
        if lengths is not None:
            layout = message.content[LAYOUT]
            layout["lengths"] = lengths(list(layout["lengths"]))  # type: ignore[index]
        return message

    replies = [packed(0, trained(0.5)),
               packed(1, trained(1.0), lambda n: [n[0] + 8, n[1]]),
               packed(2, trained(1.0), lambda n: [n[0] + 8, n[1] - 8]),
               packed(2, [np.zeros((3, 2), np.float32), WEIGHTS[1]])]

    # Execute
    verdicts = [examine(r, strategy.requests, set(), rules)[2] for r in replies]
    judged = judge(replies, dict(strategy.requests), set(strategy.answered), rules)

    # Assert: the honest one accepted with its arrays as sent; the others refused, saying why
    assert verdicts[0] is None
    assert "unreadable reply (PackingError: the layout's lengths do not add up" \
        in str(verdicts[1])
    assert "bytes after the .npy header" in str(verdicts[2])
    assert "shape" in str(verdicts[3])
    assert [int(m["client_id"]) for m, _ in judged.accepted] == [0]
    for got, sent in zip(judged.accepted[0][1], trained(0.5), strict=True):
        np.testing.assert_array_equal(got, sent)
    assert judged.rejected == 3


def test_array_metadata_is_checked_before_decoding() -> None:
    spec = array_specs(WEIGHTS)
    ok = [ArrayHeader((2, 3), "float32", "numpy.ndarray", 24 + 128),
          ArrayHeader((4,), "float32", "numpy.ndarray", 16 + 128)]

    assert check_array_headers(ok, spec) is None
    assert "expected 2 arrays, got 3" in str(check_array_headers([*ok, ok[1]], spec))
    assert "shape" in str(check_array_headers([ok[1], ok[1]], spec))
    assert "dtype" in str(check_array_headers(
        [ArrayHeader((2, 3), "float64", "numpy.ndarray", 48 + 128), ok[1]], spec))
    assert "bytes" in str(check_array_headers(
        [ArrayHeader((2, 3), "float32", "numpy.ndarray", 10**8), ok[1]], spec))
    assert "serialisation" in str(check_array_headers(
        [ArrayHeader((2, 3), "float32", "torch", 152), ok[1]], spec))


def test_num_examples_bounded_by_partition_or_first_report() -> None:
    assert examples_bound_problem(50, limit=40, reference=None, tolerance=0.5) is not None
    assert examples_bound_problem(40, limit=40, reference=None, tolerance=0.5) is None
    assert examples_bound_problem(160, limit=None, reference=100, tolerance=0.5) is not None
    assert examples_bound_problem(150, limit=None, reference=100, tolerance=0.5) is None
    assert examples_bound_problem(10**6, limit=None, reference=None, tolerance=0.5) is None


# -- through a strategy -------------------------------------------------------------------------
def test_train_reply_without_a_required_metric_is_rejected_not_a_crash() -> None:
    strategy = fedavg()
    strategy.record(strategy.configure_train(1))
    no_loss = {k: v for k, v in train_metrics(0).items() if k != "train_loss"}

    strategy.aggregate_train(1, [reply(strategy, 0, no_loss, trained(9.0)),
                                 reply(strategy, 1, train_metrics(1), trained(1.0))])

    assert strategy.tally.rejected == 1
    np.testing.assert_array_equal(strategy.arrays[0], trained(1.0)[0])


def test_evaluation_reply_without_accuracy_or_loss_is_rejected() -> None:
    strategy = fedavg()
    strategy.record(strategy.configure_evaluate(1))
    good = {"client_id": 0, "num_examples": 5, "accuracy": 0.5, "loss": 0.7}

    result = strategy.aggregate_evaluate(1, [
        reply(strategy, 0, good, kind=MessageType.EVALUATE),
        reply(strategy, 1, {"client_id": 1, "num_examples": 5, "loss": 0.7},
              kind=MessageType.EVALUATE),
        reply(strategy, 2, {"client_id": 2, "num_examples": 5, "accuracy": 0.9},
              kind=MessageType.EVALUATE)])

    assert strategy.tally.rejected == 2
    assert [r["client_id"] for r in result.evaluation] == [0]


def test_extra_arrays_and_wrong_byte_sizes_are_rejected_before_decoding(
        monkeypatch: pytest.MonkeyPatch) -> None:
    strategy = fedavg()
    strategy.record(strategy.configure_train(1))
    decoded: list[tuple[int, ...]] = []
    numpy = Array.numpy

    def counted(self: Array) -> np.ndarray:
        decoded.append(self.shape)
        return numpy(self)

    monkeypatch.setattr(Array, "numpy", counted)
    padded = ArrayRecord(numpy_ndarrays=trained(5.0))
    first = next(iter(padded))
    padded[first] = Array(dtype="float32", shape=(2, 3), stype="numpy.ndarray",
                          data=bytes(10_000))

    strategy.aggregate_train(1, [
        reply(strategy, 0, train_metrics(0), [*trained(7.0), np.zeros(3, np.float32)]),
        reply(strategy, 1, train_metrics(1), padded),
        reply(strategy, 2, train_metrics(2), trained(2.0))])

    assert strategy.tally.rejected == 2
    assert decoded == [(2, 3), (4,)]  # only the good reply's two arrays were decoded
    np.testing.assert_array_equal(strategy.arrays[1], trained(2.0)[1])


def test_huge_num_examples_cannot_dominate_the_average() -> None:
    # Prepare: partition sizes known (simulation); client 0 claims far more than it holds
    strategy = fedavg(partition_sizes=(20, 20, 20))
    strategy.record(strategy.configure_train(1))

    strategy.aggregate_train(1, [reply(strategy, 0, train_metrics(0, n=9_000_000), trained(9.0)),
                                 reply(strategy, 1, train_metrics(1, n=10), trained(1.0)),
                                 reply(strategy, 2, train_metrics(2, n=10), trained(3.0))])

    assert strategy.tally.rejected == 1
    np.testing.assert_allclose(strategy.arrays[0], trained(2.0)[0])


def test_deployment_num_examples_may_not_grow_past_the_tolerance() -> None:
    strategy = fedavg(examples_tolerance=0.5)
    for server_round, n, rejected in ((1, 100, 0), (2, 140, 0), (3, 151, 1)):
        strategy.tally.rejected = 0
        strategy.record(strategy.configure_train(server_round))
        strategy.aggregate_train(server_round, [reply(strategy, 0, train_metrics(0, n=n),
                                                      trained(1.0))])
        assert strategy.tally.rejected == rejected, server_round


def test_uniform_weighting_ignores_sample_counts() -> None:
    strategy = fedavg(weighting="uniform")
    strategy.record(strategy.configure_train(1))

    strategy.aggregate_train(1, [reply(strategy, 0, train_metrics(0, n=90), trained(4.0)),
                                 reply(strategy, 1, train_metrics(1, n=10), trained(0.0))])

    np.testing.assert_allclose(strategy.arrays[0], trained(2.0)[0])


def test_weighting_and_tolerance_are_validated_config() -> None:
    settings = settings_from_cfg(compose(["federation.weighting=uniform"]))
    assert settings.federation.weighting == "uniform"
    with pytest.raises(ConfigError, match="weighting"):
        settings_from_cfg(compose(["federation.weighting=loudest"]))
    with pytest.raises(ConfigError, match="examples_tolerance"):
        settings_from_cfg(compose(["federation.examples_tolerance=-1"]))


# -- SPIDER --------------------------------------------------------------------------------------
def spider() -> SpiderStrategy:
    supernet = DartsS2Space(channels=4, layers=3).build_supernet(
        num_classes=4, in_channels=1, image_size=8)
    strategy = SpiderStrategy(budget=budget(), sgd=SGD, supernet=supernet)
    strategy.node_of = {c: 100 + c for c in range(3)}
    return strategy


def test_spider_rejects_out_of_range_codes_and_foreign_client_ids() -> None:
    strategy = spider()
    strategy.record(strategy.configure_evaluate(1))
    capacity = code_capacity(strategy.space)
    ok = {"num_examples": 5, "accuracy": 0.5, "loss": 0.7}

    evaluate = MessageType.EVALUATE

    result = strategy.aggregate_evaluate(1, [
        reply(strategy, 0, {**ok, "client_id": 0, "arch_code": 3}, kind=evaluate),
        reply(strategy, 1, {**ok, "client_id": 1, "arch_code": capacity}, kind=evaluate),
        # the node of client 2 speaking for client 0; client 2 without its code
        reply(strategy, 0, {**ok, "client_id": 0, "arch_code": 5}, kind=evaluate, node=102),
        reply(strategy, 2, {**ok, "client_id": 2}, kind=evaluate)])

    assert strategy.tally.rejected == 3
    assert [r["client_id"] for r in result.evaluation] == [0]
    assert result.evaluation[0]["arch"] == strategy.arch_string({"arch_code": 3})


# -- payloads that are not what their record says (issue 32, items 1-3) -----------------------
def npy_bytes(array: np.ndarray) -> bytes:
    stream = io.BytesIO()
    np.save(stream, array, allow_pickle=False)
    return stream.getvalue()


def with_payload(arrays: list[np.ndarray], index: int, data: bytes,
                 dtype: str | None = None) -> ArrayRecord:
    """The record of ``arrays`` whose ``index``-th payload is ``data`` (its metadata kept,
    or its dtype string replaced)."""
    record = ArrayRecord(numpy_ndarrays=arrays)
    key = list(record)[index]
    original = record[key]
    record[key] = Array(dtype=dtype or original.dtype, shape=tuple(original.shape),
                        stype=original.stype, data=data)
    return record


def huge_header(array: np.ndarray) -> bytes:
    """``array``'s .npy bytes with a header that declares 2**48 elements, same length."""
    data = npy_bytes(array)
    head_len = 10 + int.from_bytes(data[8:10], "little")
    header = data[10:head_len].decode("latin1")
    fake = header.replace(repr(tuple(array.shape)), "(281474976710656,)")
    fake = fake.rstrip().ljust(len(header) - 1) + "\n"
    assert len(fake) == len(header)
    return data[:10] + fake.encode("latin1") + data[head_len:]


def zipped(array: np.ndarray) -> bytes:
    stream = io.BytesIO()
    np.savez(stream, a=array)
    return stream.getvalue()


@pytest.mark.parametrize(("payload", "dtype", "reason"), [
    (huge_header, None, "header shape"),
    (zipped, None, "zip"),
    (lambda a: npy_bytes(a), "f4(1,", "unknown dtype"),
    (lambda a: npy_bytes(a), "garbage", "unknown dtype"),
    (lambda a: npy_bytes(a.astype(np.float64))[:len(npy_bytes(a))], None, "dtype"),
    (lambda a: b"\x93NUMPY\x01\x00\x10\x00{'descr': <f4\n" + bytes(a.nbytes), None, "header"),
])
def test_payloads_disagreeing_with_their_record_are_rejected_not_a_crash(
        payload: Any, dtype: str | None, reason: str) -> None:
    # Prepare: client 0's first array's payload replaced, its record metadata as sent
    strategy = fedavg()
    strategy.record(strategy.configure_train(1))
    bad = reply(strategy, 0, train_metrics(0),
                with_payload(trained(9.0), 0, payload(trained(9.0)[0]), dtype))

    # Execute
    why = examine(bad, strategy.requests, strategy.answered, strategy.gate_rules())[2]
    strategy.aggregate_train(1, [bad, reply(strategy, 1, train_metrics(1), trained(1.0))])

    # Assert: rejected with the reason, the average is client 1's alone
    assert reason in str(why)
    assert strategy.tally.rejected == 1
    np.testing.assert_array_equal(strategy.arrays[0], trained(1.0)[0])


def test_a_header_within_the_record_size_never_allocates_what_it_declares() -> None:
    spec = ArraySpec((2, 3), np.dtype(np.float32))
    data = huge_header(np.zeros((2, 3), np.float32))

    problem = npy_payload_problem(data, spec)

    assert problem == ".npy header shape (281474976710656,) != expected (2, 3)"
    assert npy_payload_problem(npy_bytes(np.zeros((2, 3), np.float32)), spec) is None
    assert "bytes after" in str(npy_payload_problem(
        npy_bytes(np.zeros((2, 3), np.float32)) + b"\0", spec))
    assert parse_dtype("f4(1,") is None and parse_dtype(7) is None
    assert parse_dtype("<f4") == np.dtype(np.float32)


# -- a reply of another type than its request (item 4) -----------------------------------------
def test_a_train_reply_to_an_evaluation_request_is_rejected() -> None:
    # Prepare: a training round, then an evaluation; client 0 answers it as if it trained
    strategy = fedavg()
    strategy.record(strategy.configure_train(1))
    strategy.aggregate_train(1, [reply(strategy, c, train_metrics(c), trained(1.0))
                                 for c in range(3)])
    strategy.record(strategy.configure_evaluate(1))
    good = {"client_id": 1, "num_examples": 5, "accuracy": 0.5, "loss": 0.7}

    # Execute
    result = strategy.aggregate_evaluate(1, [
        reply(strategy, 0, train_metrics(0), trained(2.0)),
        reply(strategy, 1, good, kind=MessageType.EVALUATE)])

    # Assert
    assert strategy.tally.rejected == 1
    assert [r["client_id"] for r in result.evaluation] == [1]


def test_spider_an_evaluation_reply_in_a_training_round_is_rejected() -> None:
    # Prepare: client 0 was sent an evaluation (round 1), then training (round 2)
    strategy = spider()
    strategy.record(strategy.configure_evaluate(1))
    strategy.record(strategy.configure_train(2))
    before = [a.copy() for a in strategy.arrays]
    evaluation = {"client_id": 0, "num_examples": 5, "accuracy": 0.5, "loss": 0.7,
                  "arch_code": 1}

    # Execute: an evaluation-type reply to the training request, then a second reply
    result = strategy.aggregate_train(2, [reply(strategy, 0, evaluation,
                                                kind=MessageType.EVALUATE)])

    # Assert
    assert strategy.tally.rejected == 1 and result.train == []
    for a, b in zip(before, strategy.arrays, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_second_reply_to_one_request_is_rejected() -> None:
    strategy = fedavg()
    strategy.record(strategy.configure_train(1))

    strategy.aggregate_train(1, [reply(strategy, 0, train_metrics(0), trained(1.0)),
                                 reply(strategy, 0, train_metrics(0), trained(5.0))])

    assert strategy.tally.rejected == 1
    np.testing.assert_array_equal(strategy.arrays[0], trained(1.0)[0])


# -- num_examples in a deployment (item 6) ------------------------------------------------------
def test_deployment_weighs_clients_equally_whatever_their_first_report() -> None:
    # Prepare: a deployment without the operator's bounds; client 0 reports 10,000,000 from
    # its first reply on
    strategy = fedavg(deployment=True)
    strategy.record(strategy.configure_train(1))

    strategy.aggregate_train(1, [
        reply(strategy, 0, train_metrics(0, n=10_000_000), trained(9.0)),
        reply(strategy, 1, train_metrics(1, n=10), trained(0.0)),
        reply(strategy, 2, train_metrics(2, n=10), trained(0.0))])

    # Assert: the plain mean (3.0), not ≈ client 0's update (9.0)
    assert strategy.tally.rejected == 0
    np.testing.assert_allclose(strategy.arrays[0], trained(3.0)[0])


def test_deployment_with_the_operators_bounds_weighs_by_bounded_counts() -> None:
    strategy = fedavg(partition_sizes=(100, 100, 100), deployment=True)  # client_examples=100
    strategy.record(strategy.configure_train(1))

    strategy.aggregate_train(1, [
        reply(strategy, 0, train_metrics(0, n=10_000_000), trained(9.0)),
        reply(strategy, 1, train_metrics(1, n=90), trained(0.0)),
        reply(strategy, 2, train_metrics(2, n=10), trained(5.0))])

    assert strategy.tally.rejected == 1
    np.testing.assert_allclose(strategy.arrays[0], trained(0.5)[0])


def test_nan_tolerance_and_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="examples_tolerance"):
        budget(examples_tolerance=float("nan"))
    with pytest.raises(ValueError, match="update_norm_bound"):
        budget(update_norm_bound=float("inf"))
    with pytest.raises(ConfigError, match="examples_tolerance"):
        settings_from_cfg(compose(["federation.examples_tolerance=nan"]))
    with pytest.raises(ConfigError, match="client_examples"):
        settings_from_cfg(compose(["federation.client_examples=[10,20]"]))
    with pytest.raises(ConfigError, match="update_norm_bound"):
        settings_from_cfg(compose(["federation.update_norm_bound=-1"]))
    settings = settings_from_cfg(compose(["federation.num_clients=3",
                                          "federation.clients_per_round=3",
                                          "federation.client_examples=[10,20,30]"]))
    assert settings.federation.client_examples == [10, 20, 30]


def test_the_server_app_bounds_weights_by_what_the_server_knows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: one config; built as a simulation and as a deployment
    overrides = ["method=fedavg", "federation.num_clients=3", "federation.clients_per_round=3",
                 "federation.client_examples=[40,50,60]"]
    settings = settings_from_cfg(compose(overrides))
    monkeypatch.setenv(SIMULATION_ENV, "1")
    simulated = build_strategy(settings)
    monkeypatch.delenv(SIMULATION_ENV)
    deployed = build_strategy(settings)
    unbounded = build_strategy(settings_from_cfg(compose(overrides[:-1])))

    # Assert: a simulation knows its partitions and leaves updates unbounded (as published);
    # a deployment takes the operator's counts, or weighs equally, and bounds updates
    assert simulated.partition_sizes == [len(p) for p in partition(settings.data)]
    assert not simulated.budget.deployment and simulated.budget.update_norm_bound is None
    assert deployed.partition_sizes == [40, 50, 60]
    assert deployed.budget.deployment and deployed.budget.update_norm_bound == 10.0
    assert unbounded.partition_sizes is None
    assert unbounded.weight({"num_examples": 10_000_000}) == 1.0


# -- edges of every bound, duplicates, late replies (issue 43) ------------------------------------
@pytest.mark.parametrize(("role", "inside", "outside"), [
    ("param", 0.999999 * MAX_PARAM, 1.000001 * MAX_PARAM),
    ("param", -0.999999 * MAX_PARAM, -1.000001 * MAX_PARAM),
    ("running_mean", 0.999999 * MAX_BN_MEAN, 1.000001 * MAX_BN_MEAN),
    ("running_var", 0.0, -1e-6),
    ("running_var", 0.999 * MAX_BN_VAR, 1.001 * MAX_BN_VAR),
    ("num_batches_tracked", MAX_BATCH_COUNT, MAX_BATCH_COUNT + 1)])
def test_values_just_inside_each_bound_pass_and_just_outside_are_refused(
        role: str, inside: float, outside: float) -> None:
    dtype = np.int64 if role == "num_batches_tracked" else np.float64
    spec = [ArraySpec((3,), np.dtype(dtype), role)]

    assert check_arrays([np.array([0, inside, 0], dtype)], spec) is None
    assert check_arrays([np.array([0, outside, 0], dtype)], spec) is not None


def test_a_duplicate_reply_is_refused_and_aggregated_once() -> None:
    strategy = fedavg()
    strategy.record(strategy.configure_train(1))

    result = strategy.aggregate_train(1, [
        reply(strategy, 0, train_metrics(0), trained(4.0)),
        reply(strategy, 0, train_metrics(0), trained(4.0)),  # the same reply again
        reply(strategy, 1, train_metrics(1), trained(0.0))])

    assert strategy.tally.rejected == 1 and len(result.train) == 2
    np.testing.assert_allclose(strategy.arrays[0], trained(2.0)[0])


class LateGrid:
    """A Grid whose replies arrive only after ``delay`` seconds."""

    def __init__(self, answer: Any, delay: float) -> None:
        import time

        self.answer, self.delay, self.clock = answer, delay, time.perf_counter
        self.sent: dict[str, tuple[float, Message]] = {}
        self.pulls = 0  # how often the server asked for replies

    def push_messages(self, messages: list[Message]) -> list[str]:
        ids = []
        for i, msg in enumerate(messages):
            msg.metadata.__dict__["_message_id"] = f"m{len(self.sent) + i}"
            self.sent[msg.metadata.message_id] = (self.clock(), msg)
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, ids: list[str]) -> list[Message]:
        self.pulls += 1
        out = []
        for mid in ids:
            at, msg = self.sent[mid]
            if self.clock() - at >= self.delay:
                answer = self.answer(msg)
                answer.metadata.__dict__["_reply_to_message_id"] = mid
                answer.metadata.__dict__["_src_node_id"] = msg.metadata.dst_node_id
                out.append(answer)
        return out


def test_the_server_polls_fast_at_first_then_a_few_times_a_second() -> None:
    # Prepare: every node answers after 1.2 s; the grid counts the server's pulls
    from pfednas.strategies.base import FIRST_POLL, LAST_POLL, next_poll

    strategy = fedavg(eval_timeout=10)
    messages = strategy.record(strategy.configure_evaluate(1)).messages
    grid = LateGrid(lambda msg: reply(strategy, 0, {"client_id": 0, "num_examples": 5,
                                                    "loss": 0.5, "accuracy": 0.5},
                                      kind=MessageType.EVALUATE), delay=1.2)

    # Execute
    replies = strategy.send_and_collect(grid, messages, evaluation=True)  # type: ignore[arg-type]

    # Assert: the waits grow from FIRST_POLL to LAST_POLL and start again after a reply;
    # every reply came, seen at most LAST_POLL (and the scheduler's slack) after it was there
    waits = [0.0]
    for _ in range(10):
        waits.append(next_poll(waits[-1], got_replies=False))
    assert waits[1] == FIRST_POLL and waits[-1] == LAST_POLL
    assert sorted(waits[1:]) == waits[1:]
    assert next_poll(LAST_POLL, got_replies=True) == FIRST_POLL
    assert len(replies) == 3
    assert all(1.2 <= t < 1.2 + LAST_POLL + 0.5 for t in strategy.reply_seconds.values())
    assert grid.pulls < 20  # 60 at a fixed 20 ms


def test_a_reply_after_the_evaluation_deadline_is_a_failure_not_a_result() -> None:
    # Prepare: evaluations time out after 0.2 s; every node answers after 0.6 s
    strategy = fedavg(eval_timeout=0.2)
    sent = strategy.record(strategy.configure_evaluate(1))
    messages = sent.messages
    grid = LateGrid(lambda msg: reply(strategy, 0, {"client_id": 0, "num_examples": 5,
                                                    "loss": 0.5, "accuracy": 0.5},
                                      kind=MessageType.EVALUATE), delay=0.6)

    # Execute
    replies = strategy.send_and_collect(grid, messages, evaluation=True)  # type: ignore[arg-type]

    # Assert: nothing collected, each missing node counted; the round's record says who
    result = strategy.aggregate_evaluate(1, replies, sent)
    assert replies == [] and strategy.tally.failures == 3
    assert result.evaluation == [] and result.clients_missing == [0, 1, 2]
