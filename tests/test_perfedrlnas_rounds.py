"""PerFedRLNAS rounds through a fake Grid: eq. 9 penalties, failures, the merge, round
times from the server's cost model, and the new-client search mode."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

from pfednas.nas.policy import log_probability, probabilities
from pfednas.nas.reward import simulated_round_time, training_seconds
from pfednas.records import StageResult
from pfednas.search import get_space
from pfednas.strategies import Budget, PerFedRLNASOptions, PerFedRLNASStrategy
from pfednas.strategies.budget import Roster
from pfednas.strategies.perfedrlnas import TrainPlan
from tests.conftest import SGD, AnsweringGrid, arrays_of, spread

Answer = Callable[[Message], RecordDict | None]


# Messages need the task identity Flower sets inside a run (conftest.run_id).
pytestmark = pytest.mark.usefixtures("run_id")


def make_strategy(*, clients: int = 3, per_round: int = 2, min_replies: int = 1,
                  round_timeout: float = 30.0, **options: Any) -> PerFedRLNASStrategy:
    space = get_space("vit", stem_width=8, conv_widths=[[8, 12], [12, 16]], conv_depths=[1, 2],
                      conv_kernels=[3, 5], transformer_widths=[[16, 24], [24, 32]],
                      transformer_depths=[1, 2], heads=[1, 2], head_dim=8, mlp_ratios=[2, 3])
    budget = Budget(num_clients=clients, clients_per_round=per_round, num_rounds=1,
                    local_epochs=2, eval_every=1, round_timeout=round_timeout, seed=0,
                    min_replies=min_replies)
    supernet = space.build_supernet(num_classes=10, in_channels=1, image_size=8)
    strategy = PerFedRLNASStrategy(
        budget=budget, sgd=SGD, supernet=supernet,
        options=PerFedRLNASOptions(**options), roster=Roster(profiles=spread(supernet, clients)))
    strategy.node_of = {c: 100 + c for c in range(clients)}
    return strategy


def set_memory(strategy: PerFedRLNASStrategy, budgets: dict[int, float]) -> None:
    for cid, memory in budgets.items():
        strategy.profiles[cid] = replace(strategy.profiles[cid], memory_bytes=memory)


def train_answer(value: float = 0.5, seconds: float = 0.1, accuracy: float = 0.6) -> Answer:
    """A client that returns the subnet it got with every float entry set to ``value``."""
    def answer(msg: Message) -> RecordDict:
        arrays = arrays_of(msg)
        out = [np.full_like(a, value) if a.dtype.kind == "f" else a for a in arrays]
        cid = msg.metadata.dst_node_id - 100
        return RecordDict({"arrays": ArrayRecord(numpy_ndarrays=out), "metrics": MetricRecord(
            {"client_id": cid, "num_examples": 40, "train_loss": 1.0, "train_seconds": seconds,
             "val_accuracy": accuracy, "accuracy": accuracy})})
    return answer


def train_round(strategy: PerFedRLNASStrategy, grid: AnsweringGrid, server_round: int = 1
                ) -> StageResult:
    """One training half-round as ``base.play_round`` drives it: clients are sampled every
    round, so it is aggregated, also when nothing was sent. What was sent: ``SENT[-1]``."""
    sent = strategy.record(strategy.configure_train(server_round))
    SENT.append(sent.plan)  # type: ignore[arg-type]
    replies = (strategy.send_and_collect(grid, sent.messages)  # type: ignore[arg-type]
               if sent.messages else [])
    return strategy.aggregate_train(server_round, replies, sent)


SENT: list[TrainPlan] = []  # each train_round's plan: each client's subnet and its bytes


def logits(strategy: PerFedRLNASStrategy) -> list[np.ndarray]:
    return [p.logits.copy() for p in strategy.policies]


# -- eq. 9: over-budget clients are penalised in every round --------------------------------
def test_all_sampled_over_budget_still_penalised_although_nothing_is_sent() -> None:
    strategy = make_strategy()
    set_memory(strategy, {c: 0.0 for c in range(3)})
    before = logits(strategy)
    grid = AnsweringGrid(train_answer())

    # Execute: the round loop's own round (its evaluation is sent, its replies rejected)
    record = strategy.play_round(grid, 1)  # type: ignore[arg-type]

    # Assert: no training message, yet every sampled client's row and penalty
    sampled = strategy.sample_clients(1, population=strategy.trainable)
    assert [m.metadata.message_type for m in grid.pushed] == ["evaluate"] * 3
    assert record.sampled == sampled
    assert [row["client_id"] for row in record.train] == sampled
    assert all(row["over_budget"] == 1 and row["reward"] == pytest.approx(-1.0)
               for row in record.train)  # φ = 1, Acc = 0, empty history
    for cid in range(3):
        assert (np.array_equal(before[cid], strategy.policies[cid].logits)) == (cid not in sampled)


def test_over_budget_penalised_when_too_few_replies_arrive() -> None:
    # Prepare: two sampled clients, one over budget; min_replies = 2 cannot be met
    strategy = make_strategy(min_replies=2)
    over, fits = strategy.sample_clients(1, population=strategy.trainable)
    set_memory(strategy, {over: 0.0, fits: float("inf")})
    before, supernet = logits(strategy), strategy.supernet.state_arrays()

    result = train_round(strategy, AnsweringGrid(train_answer()))

    # Assert: only the over-budget client's policy moved; supernet and history unchanged
    assert not np.array_equal(before[over], strategy.policies[over].logits)
    np.testing.assert_array_equal(before[fits], strategy.policies[fits].logits)
    assert strategy.history == {}
    for a, b in zip(supernet, strategy.supernet.state_arrays(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert [(r["client_id"], r.get("over_budget")) for r in result.train] == [(over, 1)]


def test_over_budget_reward_with_a_measured_client() -> None:
    strategy = make_strategy()
    over, fits = strategy.sample_clients(1, population=strategy.trainable)
    set_memory(strategy, {over: 0.0, fits: float("inf")})

    result = train_round(strategy, AnsweringGrid(train_answer(accuracy=0.6)))

    rows = {r["client_id"]: r for r in result.train}
    # baseline = mean history = 0.6; one measured round time: slowest - fastest = 0
    assert rows[over]["reward"] == pytest.approx(0.0 - 0.6 - 1.0)
    assert rows[fits]["reward"] == pytest.approx(0.0)
    assert strategy.history == {fits: pytest.approx(0.6)}


def test_failure_reward_moves_the_policy_of_a_silent_client() -> None:
    # the grid answers at once: the silent client's round waits out only the timeout
    strategy = make_strategy(failure_reward=-0.5, round_timeout=1.0)
    set_memory(strategy, {c: float("inf") for c in range(3)})
    silent, speaks = strategy.sample_clients(1, population=strategy.trainable)
    answer = train_answer()
    before = logits(strategy)

    result = train_round(strategy, AnsweringGrid(
        lambda m: None if m.metadata.dst_node_id == 100 + silent else answer(m)))

    rows = {r["client_id"]: r for r in result.train}
    assert rows[silent]["failed"] == 1 and rows[silent]["reward"] == -0.5
    assert strategy.tally.failures == 1
    arch = strategy.sample_arch(silent, 1)
    # REINFORCE with a negative reward lowers the log-probability of the sent subnet
    assert log_probability(strategy.policies[silent].logits, strategy.sizes, arch.indices) \
        < log_probability(before[silent], strategy.sizes, arch.indices)
    assert speaks in rows and "failed" not in rows[speaks]


def test_merge_of_one_reply_writes_its_region_and_leaves_the_rest() -> None:
    strategy = make_strategy(clients=2, per_round=1)
    set_memory(strategy, {0: float("inf"), 1: float("inf")})
    before = strategy.supernet.state_arrays()

    train_round(strategy, AnsweringGrid(train_answer(value=0.25)))

    (cid,) = SENT[-1].subnets
    arch = SENT[-1].subnets[cid][0]
    for got in strategy.supernet.slice(arch):
        if got.dtype.kind == "f":
            np.testing.assert_allclose(got, 0.25)
    covered = [np.zeros(a.shape, bool) for a in before]
    for i, where in strategy.supernet.regions(arch):
        covered[i][where] = True
    for a, b, c in zip(before, strategy.supernet.state_arrays(), covered, strict=True):
        np.testing.assert_array_equal(a[~c], b[~c])


# -- exploitation: the last rounds train the personalized architecture -----------------------
def test_exploit_rounds_train_the_personalized_arch_and_leave_the_policies() -> None:
    # Prepare: 3 rounds, the last one exploiting; every subnet fits
    strategy = make_strategy(per_round=3, exploit_rounds=1)
    strategy.budget = replace(strategy.budget, num_rounds=3)
    set_memory(strategy, {c: float("inf") for c in range(3)})
    grid = AnsweringGrid(train_answer())

    # Execute: a search round, then the exploiting round
    train_round(strategy, grid, server_round=1)
    searched, after_search = dict(SENT[-1].subnets), logits(strategy)
    personal = {cid: strategy.personalized_arch(cid) for cid in range(3)}
    train_round(strategy, grid, server_round=3)

    # Assert: round 1 sampled and updated the policies; round 3 sent each client its argmax
    # slice and updated nothing
    assert any(a[0] != personal[c] for c, a in searched.items())
    assert not all(np.array_equal(p.logits, 0 * p.logits) for p in strategy.policies)
    assert {cid: arch for cid, (arch, _) in SENT[-1].subnets.items()} == personal
    for got, want in zip(logits(strategy), after_search, strict=True):
        np.testing.assert_array_equal(got, want)
    assert strategy.searching(1) and not strategy.searching(3)
    with pytest.raises(ValueError, match="exceeds num_rounds"):
        make_strategy(exploit_rounds=2)


# -- round time from the server's cost model --------------------------------------------------
def test_simulated_round_time_ignores_the_clients_seconds() -> None:
    times = []
    for seconds in (0.01, 0.25):  # the client cannot train longer than round_timeout
        strategy = make_strategy()
        set_memory(strategy, {c: float("inf") for c in range(3)})
        result = train_round(strategy, AnsweringGrid(train_answer(seconds=seconds)))
        times.append({r["client_id"]: r["round_time"] for r in result.train})

    assert times[0] == times[1]
    cid, rt = next(iter(times[0].items()))
    arch, bytes_down = SENT[-1].subnets[cid]
    hw = strategy.profiles[cid]
    compute = training_seconds(forward_macs_per_sample=strategy.supernet.cost(arch).flops,
                               samples=40, epochs=2, macs_per_second=1e9)
    assert rt == pytest.approx(simulated_round_time(
        compute_seconds=compute, speed_factor=hw.speed_factor, bytes_moved=2 * bytes_down,
        bandwidth_bps=hw.bandwidth_bps))


# -- new clients: search-only rounds, then searched vs random vs largest ---------------------
def test_new_client_search_learns_from_evaluations_and_reports() -> None:
    # Prepare: client 2 is new; its validation accuracy is high only for index 0 of the
    # first search dimension
    strategy = make_strategy(new_clients=1, new_client_rounds=4, policy_optimizer="adam",
                             policy_lr=0.5)
    set_memory(strategy, {c: float("inf") for c in range(3)})
    splits: list[str] = []

    def answer(msg: Message) -> RecordDict:
        config = msg.content["config"]
        splits.append(str(config["split"]))
        arch = strategy.space.arch_from_str(str(config["arch"]))
        accuracy = 0.9 if arch.indices[0] == 0 else 0.1
        return RecordDict({"metrics": MetricRecord(
            {"client_id": msg.metadata.dst_node_id - 100, "num_examples": 20,
             "accuracy": accuracy, "loss": 1.0})})
    strategy.history = {0: 0.5, 1: 0.5}  # what training left: the reward's baseline
    before = strategy.policies[2].logits.copy()

    # Execute
    strategy.finish_round(AnsweringGrid(answer), 1)  # type: ignore[arg-type]

    # Assert: 4 search rounds on val, then 3 candidate evaluations on test
    assert splits == ["val"] * 4 + ["test"] * 3
    n0 = strategy.sizes[0]
    p_before = probabilities(before, strategy.sizes)[0][0]
    p_after = probabilities(strategy.policies[2].logits, strategy.sizes)[0][0]
    assert p_after > p_before and p_before == pytest.approx(1 / n0)
    report = strategy.new_client_report
    assert report["clients"] == [2] and report["search_rounds"] == 4
    assert report["searched_acc_mean"] == pytest.approx(
        0.9 if strategy.personalized_arch(2).indices[0] == 0 else 0.1)
    assert report["largest_acc_mean"] == pytest.approx(
        0.9 if strategy.space.max_arch().indices[0] == 0 else 0.1)
    for cid in (0, 1):  # training clients are untouched by the search
        np.testing.assert_array_equal(strategy.policies[cid].logits, 0.0)
    # the report reaches summary.json through the strategy's own summary entries
    assert strategy.summary_extra([])["new_clients"] == report
    assert "new_clients" not in make_strategy().summary_extra([])


def test_new_client_evaluation_ignores_malformed_replies() -> None:
    strategy = make_strategy(new_clients=1, new_client_rounds=1)
    set_memory(strategy, {c: float("inf") for c in range(3)})

    def answer(msg: Message) -> RecordDict:
        return RecordDict({"metrics": MetricRecord(
            {"client_id": 2, "num_examples": 20, "accuracy": 3.0, "loss": 1.0})})

    report = strategy.evaluate_new_clients(AnsweringGrid(answer), [2], 1)  # type: ignore[arg-type]

    assert np.isnan(report["searched_acc_mean"]) and strategy.tally.rejected == 3
