"""BatchNorm buffers in replies are checked for their meaning, in every method (issue 32, 5).

The server knows which array it sent is a running mean, a running variance or a batch
counter (``pfednas.wire.roles``); a reply whose statistics are not statistics (a
variance below 0, values beyond any activation's) is rejected like NaN would be.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from pfednas.config import SIMULATION_ENV, compose, settings_from_cfg
from pfednas.methods.build import build_strategy
from pfednas.nas.distill import TransferSet, synthetic_inputs
from pfednas.nas.models import SmallCNN
from pfednas.search import get_space
from pfednas.strategies import Budget, PerFedRLNASOptions, PerFedRLNASStrategy
from pfednas.strategies.base import PersonalizedStrategy
from pfednas.strategies.budget import Roster
from pfednas.strategies.hapfnas import HAPFNASOptions, HAPFNASStrategy
from pfednas.wire.roles import state_roles
from pfednas.wire.validation import (
    BATCH_COUNT,
    PARAM,
    RUNNING_MEAN,
    RUNNING_VAR,
    array_specs,
    check_arrays,
)
from tests.conftest import SGD, spread

METRICS = {"num_examples": 1, "train_loss": 1.0, "train_seconds": 0.1, "val_accuracy": 0.5,
           "accuracy": 0.5, "arch_code": 0}


# Messages need the task identity Flower sets inside a run (conftest.run_id).
pytestmark = pytest.mark.usefixtures("run_id")


def train_reply(strategy: PersonalizedStrategy, cid: int, arrays: list[np.ndarray]) -> Message:
    TaskIdentity.node_id = strategy.node_of[cid]
    content = RecordDict({"arrays": ArrayRecord(numpy_ndarrays=arrays),
                          "metrics": MetricRecord({"client_id": cid, **METRICS})})
    return Message(content, dst_node_id=0, message_type=MessageType.TRAIN)


def sent_and_roles(strategy: PersonalizedStrategy, cid: int) -> tuple[list[np.ndarray], list[str]]:
    request = strategy.requests[cid]
    return [a.copy() for a in request.sent], [spec.role for spec in request.specs]


def with_negative_variance(arrays: list[np.ndarray], roles: list[str]) -> list[np.ndarray]:
    out = [a.copy() for a in arrays]
    out[roles.index(RUNNING_VAR)][:] = -1.0
    return out


# -- the checks, as pure functions ----------------------------------------------------------------
@pytest.mark.parametrize(("role", "values", "reason"), [
    (RUNNING_VAR, [1.0, -1.0], "variance"),
    (RUNNING_VAR, [1.0, 1e13], "variance"),
    (RUNNING_MEAN, [0.0, -2e6], "mean"),
    (BATCH_COUNT, [-3.0], "count"),
    (BATCH_COUNT, [2.5], "count"),
    (PARAM, [np.nan], "NaN"),
])
def test_statistics_that_are_not_statistics_are_named(role: str, values: list[float],
                                                      reason: str) -> None:
    array = np.array(values, np.float32)
    spec = array_specs([array], [role])

    problem = check_arrays([array], spec)

    assert problem is not None and reason in problem and role in problem


def test_real_statistics_and_parameters_within_the_magnitude_limit_pass() -> None:
    # parameters up to 1e6 in magnitude (issue 43: a 1e30 one overflowed distillation)
    arrays = [np.array([0.0, 3.0], np.float32), np.array([-5.0, 2.0], np.float32),
              np.array(7, np.int64), np.array([-1e5], np.float32)]
    roles = [RUNNING_VAR, RUNNING_MEAN, BATCH_COUNT, PARAM]

    assert check_arrays(arrays, array_specs(arrays, roles)) is None
    far = [*arrays[:3], np.array([-1e20], np.float32)]
    assert "a parameter outside" in str(check_arrays(far, array_specs(far, roles)))


def test_roles_follow_the_batchnorm_modules_of_the_state_dict() -> None:
    model = SmallCNN(in_channels=1, image_size=8, num_classes=10, width=4)

    roles = dict(zip(model.state_dict(), state_roles(model), strict=True))

    assert roles["body.1.running_var"] == RUNNING_VAR
    assert roles["body.1.running_mean"] == RUNNING_MEAN
    assert roles["body.5.num_batches_tracked"] == BATCH_COUNT
    assert roles["body.1.weight"] == roles["head.bias"] == PARAM


# -- HAPFNAS: a knowledge model with running_var = -1 ---------------------------------------------
def hapfnas() -> HAPFNASStrategy:
    space = get_space("mobilenetv3", base_widths=[8, 16], width_mults=[0.5, 1.0], depths=[1, 2],
                      kernels=[3, 5], expand_ratios=[2, 3], resolution_scales=[1.0],
                      stem_width=8, head_width=32, stem_stride=1, stage_strides=[1, 2],
                      stage_se=[False, True], stage_acts=["relu", "hswish"])
    torch.manual_seed(0)
    supernet = space.build_supernet(num_classes=10, in_channels=1, image_size=8)
    budget = Budget(num_clients=3, clients_per_round=2, num_rounds=5, local_epochs=1,
                    eval_every=5, round_timeout=30, seed=0)
    options = HAPFNASOptions.from_config({"distill_rounds": 2, "search_rounds": 1,
                                          "distill": {"steps": 3, "batch_size": 8}})
    x = synthetic_inputs(40, (1, 8, 8), np.random.default_rng(0))
    strategy = HAPFNASStrategy(budget=budget, sgd=SGD, supernet=supernet,
                               options=options,
                               roster=Roster(profiles=spread(supernet, 3, memory_low=0.6)),
                               transfer=TransferSet(distill=x[:32],
                                                                     heldout=x[32:]),
                               knowledge_fn=lambda: SmallCNN(in_channels=1, image_size=8,
                                                             num_classes=10, width=4))
    strategy.node_of = {c: 100 + c for c in range(3)}
    return strategy


def test_hapfnas_knowledge_model_with_negative_variance_cannot_turn_the_supernet_nan() -> None:
    # Prepare: round 1 (distillation); one sampled client honest, the other's BatchNorm
    # variances all -1 (finite: the old gate let it through)
    strategy = hapfnas()
    strategy.record(strategy.configure_train(1))
    honest, hostile = strategy.train_clients(1)
    sent, roles = sent_and_roles(strategy, honest)
    rng = np.random.default_rng(1)
    trained = [a + rng.normal(0, 0.1, a.shape).astype(a.dtype) if role == PARAM else a
               for a, role in zip(sent, roles, strict=True)]

    # Execute
    strategy.aggregate_train(1, [train_reply(strategy, honest, trained),
                                 train_reply(strategy, hostile,
                                             with_negative_variance(sent, roles))])

    # Assert: the hostile model never became a teacher; the supernet stays finite
    assert strategy.tally.rejected == 1 and set(strategy.knowledge) == {honest}
    assert all(np.isfinite(a).all() for a in strategy.supernet.state_arrays()
               if a.dtype.kind == "f")


# -- PerFedRLNAS: a subnet with negative variances ------------------------------------------------
def perfedrlnas() -> PerFedRLNASStrategy:
    space = get_space("mobilenetv3", base_widths=[8, 16], width_mults=[0.5, 1.0], depths=[1, 2],
                      kernels=[3, 5], expand_ratios=[2, 3], resolution_scales=[1.0],
                      stem_width=8, head_width=32, stem_stride=1, stage_strides=[1, 2],
                      stage_se=[False, True], stage_acts=["relu", "hswish"])
    supernet = space.build_supernet(num_classes=10, in_channels=1, image_size=8)
    budget = Budget(num_clients=3, clients_per_round=3, num_rounds=2, local_epochs=1,
                    eval_every=1, round_timeout=10, seed=0)
    strategy = PerFedRLNASStrategy(budget=budget, sgd=SGD,
                                   supernet=supernet, options=PerFedRLNASOptions(),
                                   roster=Roster(profiles=spread(supernet, 3, memory_low=1.0)))
    strategy.node_of = {c: 100 + c for c in range(3)}
    return strategy


def test_perfedrlnas_never_merges_negative_variances() -> None:
    # Prepare: every client sent its subnet; client 0 returns variances of -1
    strategy = perfedrlnas()
    sent_out = strategy.record(strategy.configure_train(1))
    variances = [i for i, role in enumerate(strategy.roles) if role == RUNNING_VAR]
    replies = []
    for cid in sorted(sent_out.plan.subnets):  # type: ignore[union-attr]
        sent, roles = sent_and_roles(strategy, cid)
        replies.append(train_reply(strategy, cid, with_negative_variance(sent, roles)
                                   if cid == 0 else sent))

    # Execute
    strategy.aggregate_train(1, replies, sent_out)

    # Assert
    state = strategy.supernet.state_arrays()
    assert strategy.tally.rejected == 1
    assert variances and all(state[i].min() >= 0 for i in variances)


# -- every FedAvg-family method built from its config --------------------------------------------
@pytest.mark.parametrize("overrides", [
    ["method=fedavg", "method.arch=min"],
    ["method=fedrep", "method.arch=min"],
    ["method=fedbabu", "method.arch=min"],
    ["method=spider", "search_space.channels=4", "search_space.layers=3"],
    ["method=ditto", "search_space.channels=4", "search_space.layers=3"],
    ["method=fednas", "search_space.channels=4", "search_space.layers=3"],
])
def test_every_method_checks_the_statistics_it_sent(overrides: list[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: the method's strategy as the ServerApp builds it; two clients trained
    monkeypatch.setenv(SIMULATION_ENV, "1")
    settings = settings_from_cfg(compose([*overrides, "federation.num_clients=3",
                                          "federation.clients_per_round=2"]))
    strategy = build_strategy(settings)
    strategy.node_of = {c: 100 + c for c in range(3)}
    sent_out = strategy.record(strategy.configure_train(1))
    first, second = strategy.train_clients(1)[:2]  # SPIDER, Ditto: all 3 are sent
    sent, roles = sent_and_roles(strategy, first)
    replies: list[Any] = [train_reply(strategy, first, with_negative_variance(sent, roles)),
                          train_reply(strategy, second, sent_and_roles(strategy, second)[0])]

    # Execute
    result = strategy.aggregate_train(1, replies, sent_out)  # type: ignore[arg-type]

    # Assert: the honest reply counted, the one with variances of -1 rejected
    assert strategy.tally.rejected == 1
    assert [row["client_id"] for row in result.train] == [second]
