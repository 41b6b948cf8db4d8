"""Property-based fuzzing of the reply gate (issue 32, Tests).

Every generated reply is a valid reply of a sampled client, then changed: its node,
its message type (any text), its metrics (any names, ints / floats / lists, NaN,
±Inf, huge), its array record (arrays dropped or added, any dtype string, any shape,
any serialisation tag) and each payload (the right ``.npy``, another array's, one
whose header lies about its shape, dtype, order or version, a ``.npz`` / zip,
random or cut bytes, extreme values, negative variances). Whatever it holds,
aggregation must not raise, a rejected reply must leave the server's state as it
was, and the state stays finite. Examples are derandomised (reproducible in CI);
the module generates 2,000 whole replies (FedAvg+FT and PerFedRLNAS, training and
evaluation) and 300 payloads for the pure checks, in about 20 s on one core.
"""

from __future__ import annotations

import functools
import io
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pfednas.records import StageResult
from pfednas.strategies import Budget, FedAvgFTStrategy, PerFedRLNASStrategy
from pfednas.strategies.base import PersonalizedStrategy
from pfednas.strategies.budget import Roster
from pfednas.strategies.gate import RoundState, RoundTally
from pfednas.wire.validation import (
    KNOWN_METRICS,
    MAX_PARAM,
    NPY_STYPE,
    ArrayHeader,
    ArraySpec,
    array_specs,
    check_array_headers,
    check_arrays,
    npy_payload_problem,
)
from tests.conftest import SGD, flower_task_identity
from tests.test_reply_buffers import perfedrlnas

FUZZ = settings(deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
WEIGHTS: list[np.ndarray] = [np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3),
                             np.zeros(3, np.float32), np.ones(3, np.float32),
                             np.array(4, np.int64)]
ROLES = ["param", "running_mean", "running_var", "num_batches_tracked"]
DTYPE_TEXTS = ["f4(1,", "(2,)f4", "O", "|O", "V8", "<f8", "float32", "<f4", ">f4", "int64",
               "f4,i4", "garbage", "U3", "M8", "c8", "f2", "b1", "S0", "", "<f4\x00"]
METRIC_NAMES = [*KNOWN_METRICS, "acc_0", "update_scale", "x"]


@pytest.fixture(autouse=True, scope="module")
def run_id() -> Iterator[None]:
    with flower_task_identity():  # once per module: hypothesis reruns a test body in place
        yield


# -- what a reply may hold -------------------------------------------------------------------------
def npy(array: np.ndarray) -> bytes:
    stream = io.BytesIO()
    np.save(stream, array, allow_pickle=False)
    return stream.getvalue()


def lying_header(array: np.ndarray, descr: str, shape: str, fortran: str, version: int) -> bytes:
    """``array``'s raw bytes after a hand-written ``.npy`` header."""
    text = f"{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape}, }}"
    text += " " * (-(len(text) + 11 + 2 * (version > 1)) % 64) + "\n"
    length = len(text).to_bytes(2 if version == 1 else 4, "little")
    return b"\x93NUMPY" + bytes([version, 0]) + length + text.encode("latin1") + array.tobytes()


def zipped(array: np.ndarray) -> bytes:
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w") as archive:
        archive.writestr("a.npy", npy(array))
    return stream.getvalue()


finite_or_not = st.floats(allow_nan=True, allow_infinity=True, width=32)
values = st.sampled_from([0.0, -1.0, 1e30, -1e30, 3e38, np.nan, np.inf, -np.inf, 1e7, 0.5])


@st.composite
def payloads(draw: st.DrawFn, sent: np.ndarray) -> bytes:
    """The serialised bytes of one array of the reply."""
    kind = draw(st.sampled_from(["same", "values", "values", "values", "other", "huge",
                                 "header", "header", "zip", "bytes", "cut", "longer"]))
    if kind == "same":
        return npy(sent)
    if kind == "huge":  # the record's size, a header declaring 2**48 elements
        return lying_header(sent, repr(sent.dtype.str), "(281474976710656,)", "False", 1)
    if kind == "values":  # the right layout, extreme or hostile values
        array = sent.copy()
        if array.dtype.kind == "f" and array.size:
            array.flat[draw(st.integers(0, array.size - 1))] = draw(values | finite_or_not)
        elif array.size:
            array.flat[0] = draw(st.integers(-2**63, 2**63 - 1))
        return npy(array)
    if kind == "other":
        other = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
        return npy(np.zeros(other, draw(st.sampled_from(["<f4", "<f8", "<i8", "|u1", "<f2"]))))
    if kind == "header":
        descr = draw(st.sampled_from(["'<f4'", "'<f8'", "'<i8'", "'|O'", "'<f4(2,)'",
                                      "[('a', '<f4')]", "'f4(1,'", "1", "'<U3'"]))
        shape = draw(st.sampled_from([repr(tuple(sent.shape)), "(281474976710656,)",
                                      "(2**48,)", "(-1,)", "()", "(1, 2, 3, 4)", "'x'"]))
        fortran = draw(st.sampled_from(["False", "True", "1", "None"]))
        return lying_header(sent, descr, shape, fortran, draw(st.sampled_from([1, 2, 3])))
    if kind == "zip":
        return zipped(sent)
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    data = npy(sent)
    if kind == "cut":
        return data[:draw(st.integers(0, len(data) - 1))]
    return data + draw(st.binary(min_size=1, max_size=20))


def rarely(draw: st.DrawFn) -> bool:
    """True about one time in ten: a reply keeps most of what makes it valid."""
    return draw(st.integers(0, 9)) == 9


@st.composite
def array_lists(draw: st.DrawFn, sent: list[np.ndarray]) -> ArrayRecord | None:
    """The reply's array record: none, or the sent arrays' records with 0-2 of them changed
    or dropped (and maybe one more)."""
    if sent and rarely(draw):
        return None
    changed = set(draw(st.lists(st.integers(0, max(len(sent) - 1, 0)), max_size=2))
                  if sent else [])
    items: list[Array] = []
    for i, array in enumerate(sent):
        dtype, shape, stype = str(array.dtype), tuple(array.shape), NPY_STYPE
        change = draw(st.sampled_from(["drop", "payload", "payload", "payload", "dtype",
                                       "shape", "stype"])) if i in changed else "none"
        if change == "drop":
            continue
        data = draw(payloads(array)) if change == "payload" else npy(array)
        if change == "dtype":
            dtype = draw(st.sampled_from(DTYPE_TEXTS) | st.text(max_size=12))
        if change == "shape":
            shape = tuple(draw(st.lists(st.integers(-2, 2**40), max_size=4)))
        if change == "stype":
            stype = draw(st.sampled_from(["torch", "", "numpy.ndarray "]) | st.text(max_size=8))
        items.append(Array(dtype=dtype, shape=shape, stype=stype, data=data))
    if rarely(draw):
        items.append(Array(np.zeros(draw(st.integers(0, 3)), np.float32)))  # one too many
    record = ArrayRecord()
    for i, item in enumerate(items):
        record[f"{i}"] = item
    return record


metric_values = (st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=True, allow_infinity=True)
                 | st.sampled_from([0, 1, -1, 10**7, 10**12, 0.5, 1.5, -0.0])
                 | st.lists(st.integers(-5, 5), max_size=3)
                 | st.lists(st.floats(allow_nan=True), max_size=3))


@st.composite
def metric_dicts(draw: st.DrawFn, valid: dict[str, Any]) -> dict[str, Any]:
    metrics = dict(valid)
    for _ in range(draw(st.integers(0, 2)) if rarely(draw) else 0):
        name = draw(st.sampled_from(METRIC_NAMES) | st.text(min_size=1, max_size=8))
        if draw(st.booleans()) and name in metrics:
            del metrics[name]
        else:
            metrics[name] = draw(metric_values)
    return metrics


@dataclass
class Template:
    """A valid reply of one stage: whom it answers, with what."""

    nodes: dict[int, int]
    kind: str
    metrics: Callable[[int], dict[str, Any]]
    arrays: Callable[[int], list[np.ndarray]]


@st.composite
def replies(draw: st.DrawFn, template: Template) -> Message:
    cid = draw(st.sampled_from(sorted(template.nodes)))
    node = template.nodes[cid]
    if rarely(draw):
        node = draw(st.sampled_from([*template.nodes.values(), 7]))
    kind = template.kind
    if rarely(draw):
        kind = draw(st.sampled_from(["train", "evaluate", "query", "train.x", "system"])
                    | st.text(max_size=10))
    content = RecordDict({"metrics": MetricRecord(draw(metric_dicts(template.metrics(cid))))})
    record = draw(array_lists(template.arrays(cid)))
    if record is not None:
        content["arrays"] = record
    TaskIdentity.node_id = node
    message = Message(content, dst_node_id=0, message_type=MessageType.TRAIN)
    message.metadata.__dict__["_message_type"] = kind  # as the wire may deliver it
    return message


# -- the server's state ----------------------------------------------------------------------------
def snapshot(strategy: PersonalizedStrategy) -> dict[str, np.ndarray]:
    state = {k: np.array(v, copy=True) for k, v in strategy.state().items()}
    state["first_examples"] = np.array(sorted(strategy.first_examples.items()), dtype=object)
    return state


def same_state(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(
        np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f") if a[k].dtype != object
        else a[k].tolist() == b[k].tolist() for k in a)


def finite(state: dict[str, np.ndarray]) -> bool:
    return all(np.isfinite(v).all() for k, v in state.items()
               if v.dtype.kind == "f" and k != "acc_history")


def check_one(strategy: PersonalizedStrategy, message: Message,
              aggregate: Callable[[], StageResult]) -> tuple[bool, StageResult]:
    """Aggregate one reply; whether it was accepted, and what the aggregation returned.
    Raises on a broken property."""
    before = snapshot(strategy)
    rejected = strategy.tally.rejected
    result = aggregate()  # must not raise, whatever the reply holds
    after = snapshot(strategy)
    if strategy.tally.rejected > rejected:
        assert same_state(before, after), "a rejected reply changed the server's state"
    assert finite(after), "the server's state holds NaN or Inf"
    return strategy.tally.rejected == rejected, result


# -- FedAvg + FT -----------------------------------------------------------------------------------
def fedavg() -> FedAvgFTStrategy:
    strategy = FedAvgFTStrategy(
        budget=Budget(num_clients=3, clients_per_round=3, num_rounds=2, local_epochs=1,
                      eval_every=1, round_timeout=60.0, seed=0),
        sgd=SGD, initial_arrays=WEIGHTS, finetune_epochs=0, array_roles=ROLES,
        roster=Roster(partition_sizes=(50, 50, 50)))
    strategy.node_of = {c: 100 + c for c in range(3)}
    return strategy


FEDAVG_TRAIN = Template(
    nodes={c: 100 + c for c in range(3)}, kind="train",
    metrics=lambda c: {"client_id": c, "num_examples": 10, "train_loss": 0.5},
    arrays=lambda c: WEIGHTS)
FEDAVG_EVALUATE = Template(
    nodes={c: 100 + c for c in range(3)}, kind="evaluate",
    metrics=lambda c: {"client_id": c, "num_examples": 10, "accuracy": 0.5, "loss": 0.7},
    arrays=lambda c: [])


@settings(FUZZ, max_examples=900)
@given(message=replies(FEDAVG_TRAIN))
def test_fedavg_training_survives_any_reply(message: Message) -> None:
    strategy = fedavg()
    strategy.record(strategy.configure_train(1))

    accepted, result = check_one(strategy, message,
                                 lambda: strategy.aggregate_train(1, [message]))

    assert accepted == bool(result.train)


@settings(FUZZ, max_examples=300)
@given(message=replies(FEDAVG_EVALUATE))
def test_fedavg_evaluation_survives_any_reply(message: Message) -> None:
    strategy = fedavg()
    strategy.record(strategy.configure_evaluate(1))

    accepted, result = check_one(strategy, message,
                                 lambda: strategy.aggregate_evaluate(1, [message]))

    assert accepted == bool(result.evaluation)


# -- PerFedRLNAS: one strategy, restored after every accepted reply ------------------------------
@dataclass
class Server:
    strategy: PerFedRLNASStrategy
    state: dict[str, np.ndarray]
    requests: dict[int, Any]
    sent: Any  # what configure_* sent, handed to aggregate_*


@functools.cache
def stage(kind: str) -> Server:
    """The strategy after sending round 1's ``kind`` messages (built once, then restored)."""
    strategy = perfedrlnas()
    configure = strategy.configure_train if kind == "train" else strategy.configure_evaluate
    sent = strategy.record(configure(1))
    return Server(strategy, strategy.state(), dict(strategy.requests), sent)


def reset(server: Server) -> PerFedRLNASStrategy:
    strategy = server.strategy
    strategy.load_state(server.state)
    strategy.current = RoundState(RoundTally(round=1), requests=dict(server.requests))
    strategy.first_examples = {}
    return strategy


def subnet_metrics(c: int) -> dict[str, Any]:
    return {"client_id": c, "num_examples": 10, "train_loss": 0.5, "val_accuracy": 0.5,
            "accuracy": 0.5, "train_seconds": 0.1}


PERFEDRLNAS_TRAIN = Template(nodes={c: 100 + c for c in range(3)}, kind="train",
                             metrics=subnet_metrics,
                             arrays=lambda c: stage("train").requests[c].sent)
PERFEDRLNAS_EVALUATE = Template(
    nodes={c: 100 + c for c in range(3)}, kind="evaluate",
    metrics=lambda c: {"client_id": c, "num_examples": 10, "accuracy": 0.5, "loss": 0.7},
    arrays=lambda c: [])


@settings(FUZZ, max_examples=600)
@given(message=replies(PERFEDRLNAS_TRAIN))
@pytest.mark.slow
def test_perfedrlnas_training_survives_any_reply(message: Message) -> None:
    strategy = reset(stage("train"))

    accepted, result = check_one(strategy, message,
                                 lambda: strategy.aggregate_train(1, [message],
                                                                  stage("train").sent))

    replied = [row for row in result.train if "failed" not in row]
    assert accepted == bool(replied)


@settings(FUZZ, max_examples=200)
@given(message=replies(PERFEDRLNAS_EVALUATE))
def test_perfedrlnas_evaluation_survives_any_reply(message: Message) -> None:
    strategy = reset(stage("evaluate"))

    accepted, result = check_one(strategy, message,
                                 lambda: strategy.aggregate_evaluate(1, [message]))

    assert accepted == bool(result.evaluation)


# -- the pure checks, on anything at all ---------------------------------------------------------
SPEC = array_specs(WEIGHTS, ROLES)


@settings(FUZZ, max_examples=300)
@given(data=st.binary(max_size=400) | payloads(WEIGHTS[0]),
       dtype=st.sampled_from(DTYPE_TEXTS) | st.text(max_size=12),
       shape=st.lists(st.integers(-3, 2**50), max_size=4),
       size=st.integers(-5, 10**9))
def test_the_pure_checks_return_a_reason_and_never_raise(data: bytes, dtype: str,
                                                         shape: list[int], size: int) -> None:
    header = ArrayHeader(tuple(shape), dtype, NPY_STYPE, size)

    problems = [npy_payload_problem(data, SPEC[0]), check_array_headers([header], SPEC[:1])]

    assert all(p is None or isinstance(p, str) for p in problems)
    if problems[0] is None:  # a payload the gate decodes is exactly the expected array
        decoded = np.load(io.BytesIO(data), allow_pickle=False)
        assert decoded.shape == SPEC[0].shape and decoded.dtype == SPEC[0].dtype
        assert check_arrays([decoded], [ArraySpec(SPEC[0].shape, SPEC[0].dtype)]) in (
            None, "array 0 (param): contains NaN or Inf",
            f"array 0 (param): a parameter outside [-{MAX_PARAM:g}, {MAX_PARAM:g}]")
