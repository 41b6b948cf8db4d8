"""Client ids belong to one node for the whole run (issue 32, item 8)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.proto.node_pb2 import NodeInfo
from flwr.supercore.task_identity import TaskIdentity

from pfednas.config import SIMULATION_ENV, ConfigError, compose, settings_from_cfg
from pfednas.deploy.certs import write_node_keys
from pfednas.methods.build import build_strategy
from pfednas.strategies import Budget, FedAvgFTStrategy
from pfednas.strategies.budget import Roster
from pfednas.strategies.identity import NODE_KEYS_ENV, claim_problem, pinned_keys
from tests.conftest import SGD

WEIGHTS = [np.zeros(3, np.float32)]


# Messages need the task identity Flower sets inside a run (conftest.run_id).
pytestmark = pytest.mark.usefixtures("run_id")


class ClaimGrid:
    """Nodes that answer the id query with the id each claims, in push order.

    ``arrivals[i]``: the nodes connected at the i-th ``get_node_ids`` call (the last
    list stays); ``keys``: each node's registered public key.
    """

    def __init__(self, claims: dict[int, Any], arrivals: list[list[int]],
                 keys: dict[int, bytes] | None = None) -> None:
        self.claims, self.arrivals, self.keys = claims, arrivals, keys or {}
        self.replies: dict[str, Message] = {}
        self.asked: list[int] = []

    def get_node_ids(self) -> list[int]:
        return self.arrivals.pop(0) if len(self.arrivals) > 1 else self.arrivals[0]

    def get_nodes(self) -> Iterable[NodeInfo]:
        return [NodeInfo(node_id=n, public_key=self.keys.get(n, b"")) for n in self.arrivals[0]]

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for message in messages:
            node = message.metadata.dst_node_id
            self.asked.append(node)
            TaskIdentity.node_id = node
            mid = f"{len(self.asked)}"
            message.metadata.__dict__["_message_id"] = mid  # what a Grid's push sets
            self.replies[mid] = Message(RecordDict({"metrics": MetricRecord(
                {"client_id": self.claims[node]})}), reply_to=message)
            ids.append(mid)
        return ids

    def pull_messages(self, ids: Iterable[str]) -> list[Message]:
        wanted = set(ids)  # in the order the nodes were asked: the first answers first
        return [self.replies.pop(i) for i in list(self.replies) if i in wanted]


def strategy(num_clients: int = 3, pins: dict[int, bytes] | None = None) -> FedAvgFTStrategy:
    return FedAvgFTStrategy(
        budget=Budget(num_clients=num_clients, clients_per_round=num_clients, num_rounds=1,
                      local_epochs=1, eval_every=1, round_timeout=1.0, seed=0),
        sgd=SGD, initial_arrays=WEIGHTS, finetune_epochs=0, roster=Roster(pins=pins))


# -- claims, as a pure function --------------------------------------------------------------------
def test_a_bound_id_is_refused_to_a_second_node_naming_both() -> None:
    node_of = {0: 101}

    problem = claim_problem(999, 0, num_clients=3, node_of=node_of)

    assert problem is not None and "node 999" in problem and "node 101 keeps it" in problem
    assert claim_problem(101, 0, num_clients=3, node_of=node_of) is None  # its own again
    assert "holds client id 0" in str(claim_problem(101, 1, num_clients=3, node_of=node_of))
    assert "not an id" in str(claim_problem(5, 3, num_clients=3, node_of={}))
    assert "not an id" in str(claim_problem(5, True, num_clients=3, node_of={}))
    assert "pinned" in str(claim_problem(5, 1, num_clients=3, node_of={}, node_key=b"x",
                                         pins={0: b"a", 1: b"b", 2: b"c"}))
    assert claim_problem(5, 1, num_clients=3, node_of={}, node_key=b"b",
                         pins={0: b"a", 1: b"b", 2: b"c"}) is None


# -- connect --------------------------------------------------------------------------------------
def test_one_node_too_many_cannot_leave_a_rightful_node_without_its_id(
        caplog: pytest.LogCaptureFixture) -> None:
    # Prepare: K=3; an extra node 999 among the first three to connect claims client 0
    # after node 101 did; node 103 (client 2) connects only later
    grid = ClaimGrid({101: 0, 999: 0, 102: 1, 103: 2},
                     arrivals=[[101, 999, 102], [101, 999, 102], [101, 999, 102, 103]])
    server = strategy()

    # Execute
    with caplog.at_level(logging.WARNING):
        server.connect(grid, poll_seconds=0.0)  # type: ignore[arg-type]

    # Assert: every rightful node has its id; the second claim is named with both nodes
    assert server.node_of == {0: 101, 1: 102, 2: 103}
    assert grid.asked.count(103) == 1 and grid.asked.count(999) == 1
    assert "node 999 claims client id 0, bound to node 101" in caplog.text


def test_pinned_ids_go_to_the_pinned_nodes_whoever_answers_first() -> None:
    # Prepare: the rogue node 999 answers first, claiming client 0
    keys = {101: b"key-0", 102: b"key-1", 103: b"key-2", 999: b"rogue"}
    grid = ClaimGrid({999: 0, 101: 0, 102: 1, 103: 2}, arrivals=[[999, 101, 102, 103]],
                     keys=keys)
    server = strategy(pins={0: b"key-0", 1: b"key-1", 2: b"key-2"})

    server.connect(grid, poll_seconds=0.0)  # type: ignore[arg-type]

    assert server.node_of == {0: 101, 1: 102, 2: 103}


def test_no_rightful_node_in_time_is_an_error_naming_the_ids() -> None:
    grid = ClaimGrid({101: 0, 102: 1, 999: 1}, arrivals=[[101, 102, 999]])
    server = strategy()

    with pytest.raises(RuntimeError, match=r"client ids \[2\]"):
        server.connect(grid, poll_seconds=0.01)  # type: ignore[arg-type]


def test_a_node_stays_on_its_id_for_the_whole_run() -> None:
    # Prepare: bound ids; node 101 (client 0) later sends a reply as client 1
    server = strategy()
    server.node_of = {0: 101, 1: 102, 2: 103}
    server.record(server.configure_train(1))
    TaskIdentity.node_id = 101
    content = RecordDict({"arrays": ArrayRecord(numpy_ndarrays=WEIGHTS), "metrics": MetricRecord(
        {"client_id": 1, "num_examples": 5, "train_loss": 1.0})})
    as_other = Message(content, dst_node_id=0, message_type=MessageType.TRAIN)

    result = server.aggregate_train(1, [as_other])

    assert server.tally.rejected == 1 and result.train == []


# -- the operator's pins ---------------------------------------------------------------------------
def test_pins_are_the_registered_keys_as_flower_reports_them(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from flwr.cli.supernode.register import try_load_public_key

    write_node_keys(tmp_path, 2)

    pins = pinned_keys(tmp_path, 2)

    # what `flwr supernode register` stores, and NodeInfo.public_key carries
    assert pins == {i: try_load_public_key(tmp_path / f"node-{i}.pub") for i in range(2)}
    assert serialization.load_pem_public_key(pins[0]) is not None
    with pytest.raises(ValueError, match="node-2.pub"):
        pinned_keys(tmp_path, 3)


def test_a_deployment_takes_its_pins_from_the_operators_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from_cfg(compose(["method=fedavg", "federation.num_clients=2",
                                          "federation.clients_per_round=2"]))
    write_node_keys(tmp_path, 2)
    monkeypatch.delenv(SIMULATION_ENV, raising=False)
    monkeypatch.setenv(NODE_KEYS_ENV, str(tmp_path))

    assert build_strategy(settings).pins == pinned_keys(tmp_path, 2)
    monkeypatch.setenv(NODE_KEYS_ENV, str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=NODE_KEYS_ENV):
        build_strategy(settings)
    monkeypatch.delenv(NODE_KEYS_ENV)
    assert build_strategy(settings).pins is None
