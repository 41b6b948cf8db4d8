"""The benchmark's time axis: client compute counted by the cost model, each client's
traffic, the round's simulated time (its slowest client) and the report's curves, targets,
budgets and heavy-tailed spread of devices."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, Message, MessageType, MetricRecord, RecordDict

from pfednas.app.results import format_table
from pfednas.body_head import StateSplit, train_part, train_scope
from pfednas.clients.common import work_metrics
from pfednas.config import SIMULATION_ENV, compose, settings_from_cfg
from pfednas.data import ArrayDataset
from pfednas.hardware.profile import ClientProfile, simulated_profiles
from pfednas.hardware.simulated_time import (
    HEAVY_TAILED,
    LogNormalSlowdown,
    round_seconds,
    timed_eval_row,
    timed_train_row,
)
from pfednas.hardware.spread import HardwareSpread
from pfednas.nas.darts_search import ArchHyper, search_epochs
from pfednas.nas.spider import PairHyper, train_pair
from pfednas.records import RoundRecord
from pfednas.report.collect import Run
from pfednas.report.table import run_rows
from pfednas.report.time_table import row_figures
from pfednas.report.timeaxis import (
    CurvePoint,
    accuracy_curve,
    accuracy_within,
    compare_time_to_target,
    compare_within,
    run_seconds,
    time_to,
    total_seconds,
)
from pfednas.search import DartsS2Space, TaskShape, get_space
from pfednas.search.cost_model import traced_cost_terms
from pfednas.search.darts_mixed import DartsMixedNet
from pfednas.seeding import STREAMS
from pfednas.strategies import Budget, FedAvgFTStrategy
from pfednas.strategies.budget import Roster
from pfednas.train import Hyper, train_epochs
from tests.conftest import SGD, AnsweringGrid

# Messages need the task identity Flower sets inside a run (conftest.run_id).
pytestmark = pytest.mark.usefixtures("run_id")

TASK = TaskShape(num_classes=10, in_channels=1, image_size=8)
HYPER = Hyper(lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=4)
WEIGHTS = [np.zeros((2, 3), np.float32), np.zeros(4, np.float32)]
SENT = sum(a.nbytes for a in WEIGHTS)


def data(n: int = 10, seed: int = 0) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    return ArrayDataset(x=rng.standard_normal((n, 1, 8, 8)).astype(np.float32),
                        y=rng.integers(0, 10, n))


def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


# -- 1. client compute, counted ------------------------------------------------------------------
@pytest.mark.parametrize("which", ["min", "max"])
def test_train_macs_are_the_cost_models_for_a_mobilenetv3_subnet(which: str) -> None:
    # Prepare: the smallest (resolution 0.75: the input is resized) and the largest subnet
    space = get_space("mobilenetv3")
    supernet = space.build_supernet(num_classes=10, in_channels=1, image_size=8)
    arch = space.min_arch() if which == "min" else space.max_arch()
    net = supernet.extract(arch)

    # Execute: two epochs of 10 samples in batches of 4, 4, 2
    stats = train_epochs(net, data(), epochs=2, hyper=HYPER, generator=generator(),
                         device=torch.device("cpu"))

    # Assert
    assert stats.samples == 20
    assert stats.macs == supernet.cost(arch).flops * 3 * 20
    assert work_metrics(stats, None, stats)["train_macs"] == 2.0 * stats.macs


def test_a_frozen_body_counts_its_forward_only_and_a_frozen_head_passes_the_gradient() -> None:
    # Prepare: the largest subnet; the MACs of its head (the modules owning head weights)
    space = get_space("mobilenetv3")
    supernet = space.build_supernet(num_classes=10, in_channels=1, image_size=8)
    arch = space.max_arch()
    net = supernet.extract(arch)
    split = StateSplit.of(net)
    head = {key.rsplit(".", 1)[0] for key in split.head_keys()}
    head_macs = sum(macs for name, macs, _ in traced_cost_terms(copy.deepcopy(net).to("meta"),
                                                                   TASK) if name in head)
    forward_macs = supernet.cost(arch).flops

    # Execute: FedRep's head epochs (the body frozen), FedBABU's body (the head frozen)
    head_only = train_scope(net, "head", data(), epochs=1, hyper=HYPER, generator=generator(),
                            device=torch.device("cpu"))
    body_only = train_part(net, split.body_keys(), data(), epochs=1, hyper=HYPER,
                           generator=generator(), device=torch.device("cpu"))

    # Assert: the body only forward, the head forward + backward; a frozen head still
    # passes the body's gradient back (its input carries one)
    assert 0 < head_macs < forward_macs
    assert head_only.macs == (forward_macs + 2 * head_macs) * head_only.samples
    assert body_only.macs == 3 * forward_macs * body_only.samples


def test_the_darts_search_and_the_spider_pair_count_every_network_they_train() -> None:
    # Prepare: FedNAS's mixed supernet; SPIDER's global supernet and a smaller local model
    space = DartsS2Space(channels=4, layers=3, steps=2, multiplier=2)
    mixed = DartsMixedNet(space, TASK)
    mixed_macs = sum(t[1] for t in traced_cost_terms(copy.deepcopy(mixed).to("meta"), TASK))
    supernet = space.build_supernet(num_classes=10, in_channels=1, image_size=8)
    local_arch = space.sample(np.random.default_rng(1))
    local = supernet.extract(local_arch)

    # Execute
    searched = search_epochs(mixed, data(), data(6, seed=1), epochs=1, hyper=HYPER,
                             arch=ArchHyper(), generator=generator(), device=torch.device("cpu"))
    pair = train_pair(supernet.net, local, data(), epochs=1,
                      pair=PairHyper(hyper=HYPER, lam=0.1, grad_clip=5.0),
                      generator=generator(), device=torch.device("cpu"))

    # Assert: weight and α steps both pass through the mixed net; the pair trains two nets
    assert searched.samples == 10 + 10  # 3 weight batches, each with a validation batch
    assert searched.macs == 3 * mixed_macs * searched.samples > 0
    assert pair.macs == 3 * (supernet.cost(space.max_arch()).flops
                             + supernet.cost(local_arch).flops) * pair.samples
    assert supernet.cost(local_arch).flops < supernet.cost(space.max_arch()).flops


# -- 2./3. the round loop: traffic per client, the slowest client's time ----------------------
def profile(slowdown: float, mbps: float = 100.0) -> ClientProfile:
    return ClientProfile(memory_bytes=math.inf, macs_per_second=1e9,
                         bandwidth_bps=mbps * 1e6, speed_factor=slowdown)


def test_a_round_takes_its_slowest_training_client_plus_its_slowest_evaluation() -> None:
    # Prepare: client 0 computes more, client 1 is slower and on a slow link
    profiles = {0: profile(1.0), 1: profile(4.0, mbps=8.0)}
    rows = [{"client_id": 0, "train_macs": 6e9}, {"client_id": 1, "train_macs": 1e9}]
    evaluation = [{"client_id": 0, "train_macs": 2e9, "accuracy_no_ft": 0.5},
                  {"client_id": 1, "accuracy": 0.5}]

    # Execute
    train = [timed_train_row(rows[0], profiles[0], bytes_down=10**6, bytes_up=10**6),
             timed_train_row(rows[1], profiles[1], bytes_down=10**6, bytes_up=10**6)]
    timed_eval = [timed_eval_row(row, profiles[int(row["client_id"])]) for row in evaluation]

    # Assert: 6 s + 0.16 s against 4 s + 2 s; fine-tuning 2 s; nobody trained: 0
    assert [r["simulated_seconds"] for r in train] == pytest.approx([6.16, 6.0])
    assert round_seconds(train, timed_eval) == pytest.approx(6.16 + 2.0)
    assert round_seconds(train, timed_eval, finetuning=False) == pytest.approx(6.16)
    assert "simulated_seconds" not in timed_eval[1]
    assert round_seconds([], []) == 0.0


# the default spread's draw for seed 4 (speeds and links; memory plays no part here)
PROFILES = simulated_profiles(3, HardwareSpread(), 1.0, seed=4)


def fedavg(clients: int = 3) -> FedAvgFTStrategy:
    budget = Budget(num_clients=clients, clients_per_round=2, num_rounds=1, local_epochs=1,
                    eval_every=1, round_timeout=0.2, eval_timeout=0.2, seed=4)
    strategy = FedAvgFTStrategy(budget=budget, sgd=SGD, initial_arrays=WEIGHTS,
                                finetune_epochs=0, roster=Roster(profiles=PROFILES))
    strategy.node_of = {c: 100 + c for c in range(clients)}
    return strategy


def client(macs: Callable[[int], float]) -> Callable[[Message], RecordDict]:
    """Client c trains ``macs(c)`` MACs and replies with the arrays it got; its evaluation
    trains a tenth of that first."""
    def answer(msg: Message) -> RecordDict:
        cid = msg.metadata.dst_node_id - 100
        if msg.metadata.message_type == MessageType.TRAIN:
            return RecordDict({"arrays": ArrayRecord(numpy_ndarrays=WEIGHTS),
                               "metrics": MetricRecord({"client_id": cid, "num_examples": 10,
                                                        "train_loss": 0.5,
                                                        "train_macs": macs(cid)})})
        return RecordDict({"metrics": MetricRecord({"client_id": cid, "num_examples": 5,
                                                    "accuracy": 0.5, "loss": 0.7,
                                                    "train_macs": 1e8})})
    return answer


def test_the_loop_records_each_clients_traffic_and_the_rounds_simulated_time() -> None:
    # Prepare: the baseline's devices, the default spread's draw for its seed
    strategy = fedavg()
    sampled = strategy.train_clients(1)
    speeds = {c: p.speed for c, p in PROFILES.items()}

    # Execute
    record = strategy.play_round(AnsweringGrid(client(lambda c: (c + 1) * 1e9)), 1)  # type: ignore[arg-type]

    # Assert
    assert [(r["bytes_down"], r["bytes_up"]) for r in record.train] == [(SENT, SENT)] * 2
    expected = {c: (c + 1) * 1e9 / speeds[c] + 8 * 2 * SENT / 100e6 for c in sampled}
    assert [r["simulated_seconds"] for r in record.train] == pytest.approx(
        [expected[c] for c in sampled])
    slowest_eval = max(1e8 / speeds[c] for c in range(3))
    assert record.simulated_seconds == pytest.approx(max(expected.values()) + slowest_eval)
    assert RoundRecord.from_json(record.to_json()).simulated_seconds == record.simulated_seconds


@pytest.mark.parametrize("bad", [-1.0, math.inf, math.nan])
def test_a_reply_with_a_bad_train_macs_is_rejected(bad: float) -> None:
    # Prepare: client 1 reports a negative or non-finite count
    strategy = fedavg(clients=2)

    # Execute
    record = strategy.play_round(AnsweringGrid(client(lambda c: bad if c == 1 else 1e9)), 1)  # type: ignore[arg-type]

    # Assert: its training counts neither as accepted nor in the time
    assert record.rejected == 1
    assert [r["client_id"] for r in record.train] == [0]


def test_baselines_and_nas_methods_of_one_seed_run_on_the_same_devices(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: a simulation's strategies, as the ServerApp builds them
    from pfednas.methods.build import build_strategy

    monkeypatch.setenv(SIMULATION_ENV, "1")

    def devices(method: str) -> list[tuple[float, float]]:
        settings = settings_from_cfg(compose([f"method={method}", "federation.num_clients=6",
                                              "federation.clients_per_round=3", "seed=3"]))
        profiles = build_strategy(settings).profiles
        return [(profiles[c].speed, profiles[c].bandwidth_bps) for c in range(6)]

    # Execute
    found = {m: devices(m) for m in ("fedavg", "perfedrlnas", "hapfnas", "spider")}

    # Assert: one seed, one set of devices, spread over U(1, 4)
    assert found["fedavg"] == found["perfedrlnas"] == found["hapfnas"] == found["spider"]
    speeds = [s for s, _ in found["fedavg"]]
    assert all(0.25e9 <= s <= 1e9 for s in speeds) and len(set(speeds)) == 6


# -- 4. the report: curves, targets, budgets, the heavy-tailed spread -----------------------------
def evaluated_round(round_: int, seconds: float, accs: list[float], **row: Any) -> dict[str, Any]:
    return {"round": round_, "simulated_seconds": seconds,
            "train": [{"client_id": 0, "train_macs": 1e9, "bytes_down": 0, "bytes_up": 0,
                       "simulated_seconds": seconds}],
            "evaluation": [{"client_id": i, "accuracy": a, **row} for i, a in enumerate(accs)]}


def test_the_curve_its_time_to_a_target_and_its_accuracy_within_a_budget() -> None:
    # Prepare: evaluations after rounds 2 and 4 of 10 s each
    rounds = [{"round": 1, "simulated_seconds": 10.0, "train": [], "evaluation": []},
              evaluated_round(2, 10.0, [0.4, 0.6]), evaluated_round(3, 10.0, []),
              evaluated_round(4, 10.0, [0.7, 0.9])]

    # Execute
    curve = accuracy_curve(rounds)

    # Assert
    assert curve is not None and curve[0] == CurvePoint(2, 20.0, 0.5)
    assert (curve[1].round, curve[1].seconds, curve[1].accuracy) == (4, 40.0, pytest.approx(0.8))
    assert time_to(curve, 0.5) == curve[0] and time_to(curve, 0.75) == curve[1]
    assert time_to(curve, 0.81) is None  # not reached
    assert accuracy_within(curve, 39.9) == curve[0] and accuracy_within(curve, 40.0) == curve[1]
    assert accuracy_within(curve, 19.0) is None
    assert total_seconds(rounds) == 40.0


def test_time_columns_compare_evaluations_of_one_kind() -> None:
    # Prepare: a method whose quick evaluation (no fine-tuning) at round 2 is above the
    # baseline's fine-tuned target, and whose fine-tuned one comes at round 4; the baseline's
    # global model (as published) and its fine-tuned models, evaluated at rounds 2 and 4
    def run(rounds: list[dict[str, Any]]) -> Run:
        return Run(path=Path("x"), summary={"seed": 0}, rounds=rounds,
                   config={"federation": {"num_clients": 2}})

    def quick(round_: int, accs: list[float]) -> dict[str, Any]:
        return {**evaluated_round(round_, 10.0, accs), "eval_kind": "quick"}

    def final(round_: int, accs: list[float], as_published: list[float]) -> dict[str, Any]:
        out = {**evaluated_round(round_, 10.0, accs), "eval_kind": "final"}
        for row, a in zip(out["evaluation"], as_published, strict=True):
            row["accuracy_no_ft"] = a
        return out

    method = run([quick(2, [0.95, 0.95]), final(4, [0.85, 0.85], [0.6, 0.6])])
    baseline = run([quick(2, [0.3, 0.3]), final(4, [0.9, 0.9], [0.5, 0.5])])

    # Execute
    finetuned = row_figures([method], {0: baseline}, {0: baseline}, published=False,
                            heavy_tailed=False)
    published = row_figures([method], {0: baseline}, {0: baseline}, published=True,
                            heavy_tailed=False)

    # Assert: the fine-tuned figure never reached the fine-tuned target 0.9 (its quick 0.95 is
    # not a fine-tuned evaluation), and within the baseline's 20 s its fine-tuned figure is
    # its last; as published it reached the baseline's as-published 0.5 at round 2 (its quick
    # 0.95 counts there), half the baseline's own time to it (round 4)
    assert (finetuned.reached, finetuned.to_target) == (0, None)
    assert finetuned.within == pytest.approx(0.85)
    assert (published.reached, published.to_target) == (1, pytest.approx(0.5))
    assert published.within == pytest.approx(0.6)


def test_a_finetuned_figure_counts_its_own_finetuning_not_the_measurements_before_it() -> None:
    # Prepare: 4 rounds of 10 s training (100 sample-passes, 1e9 MACs); the evaluations after
    # rounds 2 and 4 fine-tune (4 s, 50 sample-passes, 5e8 MACs), as in a cell that fine-tunes
    # and tests every client at every evaluation; and the same rounds as Local writes them:
    # its evaluation's training is its training (no figure without it)
    def one(n: int, evaluated: bool, *, finetuned: bool = True) -> dict[str, Any]:
        train = [{"client_id": 0, "train_macs": 1e9, "sample_passes": 100,
                  "simulated_seconds": 10.0}]
        evaluation = [{"client_id": 0, "accuracy": 0.5 + n / 10, "sample_passes": 50,
                       "train_macs": 5e8, "simulated_seconds": 4.0,
                       **({"accuracy_no_ft": 0.4 + n / 10} if finetuned else {})}]
        return {"round": n, "simulated_seconds": 14.0 if evaluated else 10.0, "train": train,
                "evaluation": evaluation if evaluated else []}

    rounds = [one(1, False), one(2, True), one(3, False), one(4, True)]
    local = [one(n, n % 2 == 0, finetuned=False) for n in (1, 2, 3, 4)]
    client = {"client_id": 0, "accuracy": 0.9, "accuracy_no_ft": 0.8, "num_params": 10}
    summary = {"method": "perfedrlnas", "dataset": "digits", "seed": 0, "per_client": [client],
               "personalized_acc_mean": 0.9, "personalized_acc_std": 0.0,
               "personalized_acc_no_ft_mean": 0.8, "personalized_acc_no_ft_std": 0.0,
               "personalized_acc_no_ft_p10": 0.8, "wall_seconds": 1.0, "bytes_up": 0,
               "bytes_down": 0, "client_sample_passes": 4 * 100 + 2 * 50}
    config = {"federation": {"num_clients": 1, "clients_per_round": 1, "num_rounds": 4,
                             "local_epochs": 1},
              "dataset": {"alpha": 0.5}, "search_space": {"name": "mobilenetv3"},
              "method": {"finetune_epochs": 1}}

    # Execute
    finetuned, published = accuracy_curve(rounds), accuracy_curve(rounds, published=True)
    published_row, finetuned_row = run_rows(Run(path=Path("x"), summary=summary,
                                                rounds=rounds, config=config))

    # Assert: round 4's fine-tuned figure took its 40 s of training and its own 4 s of
    # fine-tuning; round 2's fine-tuning only measured, in time and in compute
    assert finetuned == [CurvePoint(2, 24.0, pytest.approx(0.7)),
                         CurvePoint(4, 44.0, pytest.approx(0.9))]
    assert published == [CurvePoint(2, 20.0, pytest.approx(0.6)),
                         CurvePoint(4, 40.0, pytest.approx(0.8))]
    assert total_seconds(rounds) == 44.0 and total_seconds(rounds, finetuning=False) == 40.0
    assert (finetuned_row.simulated_seconds, published_row.simulated_seconds) == (44.0, 40.0)
    assert (finetuned_row.sample_passes, published_row.sample_passes) == (450, 400)
    assert (finetuned_row.client_macs, published_row.client_macs) == (4.5e9, 4e9)
    # Local trains in its evaluations: all of it counts
    assert [p.seconds for p in accuracy_curve(local) or []] == [24.0, 48.0]
    assert total_seconds(local) == 48.0


def test_the_heavy_tailed_spread_is_seeded_stated_and_its_own_stream() -> None:
    # Prepare
    spread = HEAVY_TAILED

    # Execute
    drawn = spread.profiles(2000, seed=0)
    slowdowns = np.array([p.speed_factor for p in drawn.values()])

    # Assert: the stated spread, the same draw per (seed, client), another seed another draw
    assert spread == LogNormalSlowdown(median=2.0, sigma=1.0, low=1.0, high=64.0)
    assert spread.describe() == ("log-normal slowdown (median 2, σ 1, clipped to [1, 64]), "
                                 "100 Mbit/s")
    assert slowdowns.min() >= 1.0 and slowdowns.max() <= 64.0
    assert 1.85 < float(np.median(slowdowns)) < 2.15 and 0.2 < np.mean(slowdowns == 1.0) < 0.3
    assert spread.profiles(5, seed=0) == {c: drawn[c] for c in range(5)}
    assert spread.profiles(5, seed=1) != spread.profiles(5, seed=0)
    assert all(p.bandwidth_bps == 100e6 for p in drawn.values())
    assert STREAMS["heavy_tailed_hardware"] == (5, 607)


def test_records_from_before_the_time_axis_have_no_simulated_time() -> None:
    # Prepare: a round as an older run wrote it
    old = {"round": 1, "sampled_clients": [0], "train": [], "evaluation": [], "failures": 0,
           "bytes_up": 0, "bytes_down": 0, "wall_seconds": 1.0}

    # Execute
    read = RoundRecord.from_json(old)

    # Assert
    assert read.simulated_seconds == 0.0
    assert total_seconds([old]) is None and accuracy_curve([old]) is None


# -- 5. one short real run -----------------------------------------------------------------------
def test_a_short_run_records_its_simulated_time_and_the_report_reads_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: PerFedRLNAS in a simulation: 3 clients, 2 train, one round, F = 1
    from pfednas.methods.fixed import seeded_supernet
    from pfednas.run.inprocess import run_inprocess

    monkeypatch.setenv(SIMULATION_ENV, "1")
    overrides = ["method=perfedrlnas", "federation.num_clients=3",
                 "federation.clients_per_round=2", "federation.num_rounds=1",
                 "federation.eval_every=1", "federation.local_epochs=1",
                 "method.finetune_epochs=1"]

    # Execute
    run = run_inprocess(overrides)

    # Assert: the rows' MACs are the cost model's; each trained row's time is the
    # cost model's RT_i PerFedRLNAS computes for its reward (here the same formula)
    supernet = seeded_supernet(run.settings)
    (only,) = run.records
    trained = [r for r in only.train if "train_macs" in r]
    assert trained
    for row in trained:
        arch = supernet.space.arch_from_str(row["arch"])
        assert row["train_macs"] == 3 * supernet.cost(arch).flops * row["sample_passes"]
        if row["sample_passes"] == row["num_examples"]:
            assert row["simulated_seconds"] == pytest.approx(row["round_time"])
    assert all(r["train_macs"] > 0 and "simulated_seconds" in r for r in only.evaluation)
    assert only.simulated_seconds == pytest.approx(
        max(r["simulated_seconds"] for r in trained)
        + max(r["simulated_seconds"] for r in only.evaluation))
    assert run.summary["simulated_seconds"] == only.simulated_seconds > 0
    assert "simulated time (s)" in format_table(run.summary)

    # Execute: the report, from what the run wrote
    config = {"federation": {"num_clients": 3, "clients_per_round": 2, "num_rounds": 1,
                             "local_epochs": 1},
              "dataset": {"alpha": 0.5}, "search_space": {"name": "mobilenetv3"},
              "method": {"finetune_epochs": 1}}
    written = Run(path=Path("run"), summary=run.summary,
                  rounds=[r.to_json() for r in run.records], config=config)
    published, tuned = run_rows(written)
    heavy = run_seconds(written, heavy_tailed=True)
    versus_itself = compare_time_to_target(written, written)
    within = compare_within(written, written, seconds=0.0)

    # Assert
    assert tuned.simulated_seconds == run.summary["simulated_seconds"]
    assert published.simulated_seconds == pytest.approx(
        max(r["simulated_seconds"] for r in trained))
    assert heavy is not None and heavy > 0 and heavy != tuned.simulated_seconds
    assert tuned.simulated_seconds_heavy == heavy
    assert versus_itself.ratio == 1.0 and versus_itself.target == run.summary[
        "personalized_acc_mean"]
    assert within.method is None and within.reference is None
