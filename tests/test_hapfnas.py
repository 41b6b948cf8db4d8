"""HAPFNAS: distillation, predictor, evolution, heteroFedAvg, phases and resume (no Ray).

The last tests drive the strategy through an in-process grid that answers every
message with the real ClientApp handlers, so the three phases and a resume at
the phase-1 → phase-2 boundary run in seconds.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from pfednas.app import client_app
from pfednas.config import SIMULATION_ENV, ConfigError, compose, settings_from_cfg
from pfednas.methods import unheld_indices
from pfednas.methods.build import build_strategy
from pfednas.nas.distill import (
    DistillOptions,
    TransferSet,
    calibrated_subnet,
    distill_supernet,
    ensemble_probs,
    mean_kl,
    synthetic_inputs,
)
from pfednas.nas.evolution import EvolutionOptions, evolve
from pfednas.nas.fedavg import weighted_average
from pfednas.nas.models import SmallCNN
from pfednas.nas.phases import Phase, PhasePlan
from pfednas.nas.predictor import cross_validated_report
from pfednas.records import RoundRecord
from pfednas.search import Supernet, get_space
from pfednas.strategies import Budget
from pfednas.strategies.budget import Roster
from pfednas.strategies.hapfnas import HAPFNASOptions, HAPFNASStrategy
from pfednas.strategies.hapfnas_search import SearchState, search_client
from tests.conftest import SGD, spread


def small_supernet(seed: int = 0) -> Supernet:
    space = get_space("mobilenetv3", base_widths=[8, 16], width_mults=[0.5, 1.0], depths=[1, 2],
                      kernels=[3, 5], expand_ratios=[2, 3], resolution_scales=[1.0],
                      stem_width=8, head_width=32, stem_stride=1, stage_strides=[1, 2],
                      stage_se=[False, True], stage_acts=["relu", "hswish"])
    torch.manual_seed(seed)
    return space.build_supernet(num_classes=10, in_channels=1, image_size=8)


def confident_teacher(seed: int) -> SmallCNN:
    torch.manual_seed(seed)
    model = SmallCNN(in_channels=1, image_size=8, num_classes=10, width=4)
    with torch.no_grad():
        model.head.weight.mul_(20.0)
    return model.eval()


# -- phase 1: distillation ---------------------------------------------------------------------
def test_distillation_lowers_kl_to_a_fixed_ensemble_on_held_out_transfer_inputs() -> None:
    # Prepare
    supernet = small_supernet()
    x_all = torch.as_tensor(synthetic_inputs(320, (1, 8, 8), np.random.default_rng(0)))
    x, held = x_all[:256], x_all[256:]
    teachers = [(confident_teacher(1), 2.0), (confident_teacher(2), 1.0)]
    temperature = 2.0
    probs, held_probs = (ensemble_probs(teachers, v, temperature) for v in (x, held))
    archs = [supernet.space.max_arch(), supernet.space.min_arch()]

    def kls() -> list[float]:
        return [mean_kl(calibrated_subnet(supernet, a, x), held, held_probs, temperature)
                for a in archs]

    before = kls()

    # Execute
    distill_supernet(supernet, x, probs,
                     options=DistillOptions(temperature=temperature, steps=15, batch_size=32,
                                            lr=0.05, random_subnets=1),
                     rng=np.random.default_rng(0), generator=torch.Generator().manual_seed(0))

    # Assert: both ends of the sandwich moved towards the ensemble on unseen inputs
    after = kls()
    assert all(a < 0.6 * b for a, b in zip(after, before, strict=True)), (before, after)


def test_ensemble_is_the_weighted_mean_of_softened_probabilities() -> None:
    x = torch.randn(5, 1, 8, 8)
    a, b = confident_teacher(1), confident_teacher(2)

    probs = ensemble_probs([(a, 3.0), (b, 1.0)], x, temperature=2.0)

    expected = (0.75 * torch.softmax(a(x) / 2.0, 1) + 0.25 * torch.softmax(b(x) / 2.0, 1))
    torch.testing.assert_close(probs, expected.detach())


def test_synthetic_inputs_are_seeded_and_standardised() -> None:
    first = synthetic_inputs(16, (1, 8, 8), np.random.default_rng(3))
    again = synthetic_inputs(16, (1, 8, 8), np.random.default_rng(3))

    np.testing.assert_array_equal(first, again)
    assert first.dtype == np.float32 and first.shape == (16, 1, 8, 8)
    np.testing.assert_allclose(first.std(axis=(1, 2, 3)), 1.0, atol=1e-4)


# -- phase 2: predictor and evolution ----------------------------------------------------------
def test_random_forest_beats_the_mean_predictor_in_rank_correlation() -> None:
    # Prepare: a smooth non-linear "accuracy" of six encoding features, with noise
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (120, 6))
    y = 0.5 + 0.2 * np.sin(3 * x[:, 0]) + 0.15 * x[:, 1] ** 2 - 0.1 * x[:, 2] * x[:, 3]
    y += rng.normal(0, 0.01, len(y))

    # Execute
    report = cross_validated_report(x, y, trees=50, folds=5, seed=0)

    # Assert
    assert report.pairs == 120
    assert report.spearman_rf > 0.7
    assert report.spearman_rf > report.spearman_mean + 0.5
    assert report.mae_rf < 0.7 * report.mae_mean


def test_evolution_finds_the_optimum_of_a_known_objective_under_a_budget() -> None:
    # Prepare: 4^7 genomes, weighted distance to an over-budget target, budget on the sum
    sizes = [4] * 7
    weights = np.random.default_rng(1).uniform(0.5, 2.0, len(sizes))
    target = np.array([3, 3, 2, 3, 1, 3, 3])

    def score(genomes: list[tuple[int, ...]]) -> np.ndarray:
        return -(((np.array(genomes) - target) ** 2) * weights).sum(axis=1)

    def feasible(g: tuple[int, ...]) -> bool:
        return sum(g) <= 12

    every = [g for g in itertools.product(range(4), repeat=len(sizes)) if feasible(g)]
    optimum = every[int(np.argmax(score(every)))]

    # Execute
    result = evolve(sizes, score, feasible, rng=np.random.default_rng(0),
                    options=EvolutionOptions(population=30, generations=40, parents=8))

    # Assert
    assert result.best == optimum
    assert result.evaluated < len(every) // 4  # it searched, it did not enumerate


def test_evolution_never_returns_an_over_budget_architecture() -> None:
    supernet = small_supernet()
    space = supernet.space
    sizes = [len(d.choices) for d in space.dimensions]
    largest = supernet.cost(space.max_arch(), batch_size=32).memory_bytes
    smallest = supernet.cost(space.min_arch(), batch_size=32).memory_bytes

    def memory(g: tuple[int, ...]) -> int:
        return supernet.cost(space.arch_from_indices(g), batch_size=32).memory_bytes

    def bigger_is_better(genomes: list[tuple[int, ...]]) -> np.ndarray:
        return np.array([float(memory(g)) for g in genomes])

    for seed, fraction in enumerate(np.linspace(smallest / largest, 1.0, 8)):
        budget = fraction * largest
        result = evolve(sizes, bigger_is_better, lambda g, b=budget: memory(g) <= b,
                        rng=np.random.default_rng(seed),
                        options=EvolutionOptions(population=12, generations=6, parents=4))
        assert memory(result.best) <= budget
        assert memory(result.best) >= 0.7 * budget or result.best == space.min_arch().indices

    with pytest.raises(ValueError, match="no architecture"):
        evolve(sizes, bigger_is_better, lambda g: memory(g) < smallest,
               rng=np.random.default_rng(0), options=EvolutionOptions(population=4, parents=2))


# -- phase 3 and the phase machine ---------------------------------------------------------------
def make_strategy(**options: Any) -> HAPFNASStrategy:
    budget = Budget(num_clients=3, clients_per_round=2, num_rounds=5, local_epochs=1,
                    eval_every=5, round_timeout=30, seed=0)
    opts = HAPFNASOptions.from_config({"distill_rounds": 2, "search_rounds": 1, **options})
    x = synthetic_inputs(40, (1, 8, 8), np.random.default_rng(0))
    supernet = small_supernet()
    return HAPFNASStrategy(budget=budget, sgd=SGD,
                           supernet=supernet, options=opts,
                           roster=Roster(profiles=spread(supernet, 3, memory_low=0.6)),
                           transfer=TransferSet(distill=x[:32], heldout=x[32:]),
                           knowledge_fn=lambda: SmallCNN(in_channels=1, image_size=8,
                                                         num_classes=10, width=4))


def test_search_follows_the_forest_and_without_measurements_takes_the_largest_that_fits(
        ) -> None:
    # Prepare: measurements whose accuracy falls with size, for client 0 with 24 pairs
    strategy = make_strategy(evolution={"population": 24, "generations": 12, "parents": 6})
    space, supernet = strategy.space, strategy.supernet
    every = [space.arch_from_indices(g) for g in
             itertools.product(*(range(len(d.choices)) for d in space.dimensions))]
    params = {a.to_str(): supernet.cost(a).params for a in every}
    pairs = [(a, 1.0 - params[a.to_str()] / max(params.values()))
             for a in every[::max(1, len(every) // 24)]]

    def search(own: list[Any], pooled: list[Any]) -> Any:
        return search_client(supernet, 0, own, pooled, cost_of=strategy.cost_of,
                             budget=strategy.client_budgets[0], options=strategy.options, seed=0)

    # Execute: the client's own pairs; too few own pairs (the pooled ones); none at all
    by_forest, pooled, unmeasured = search(pairs, []), search(pairs[:2], pairs), search([], [])

    # Assert: the (size-averse) forest prefers a subnet smaller than the largest that fits;
    # with too few own pairs the pooled ones fit it; with none, the brute-force largest
    # fitting subnet, by parameters, and no forecast
    fitting = [a for a in every if strategy.fits(0, a)]
    largest = max(params[a.to_str()] for a in fitting)
    row = by_forest.row
    assert row["search_objective"] == "predictor" and params[row["arch"]] < largest
    assert row["cost"] <= row["budget"] == strategy.client_budgets[0] and row["pooled"] == 0
    assert 0.0 <= by_forest.predicted <= 1.0 and by_forest.report is not None
    assert pooled.row["pooled"] == 1 and pooled.row["pairs"] == 2
    assert pooled.report is not None and pooled.report.pairs == len(pairs)
    assert unmeasured.row["search_objective"] == "params" and unmeasured.report is None
    assert params[unmeasured.row["arch"]] == largest
    assert unmeasured.row["predicted_accuracy"] is None and np.isnan(unmeasured.predicted)
    with pytest.raises(ValueError, match="finetune_scope"):
        HAPFNASOptions.from_config({"finetune_scope": "body"})


@pytest.mark.parametrize("control", [{"search_objective": "params"}, {"train_scope": "body"},
                                     {"predictor": {"measure": "probe"}}])
def test_the_diagnostic_controls_left_the_method(control: dict[str, Any]) -> None:
    # the controls of docs/notes/2026-11-24-one-knob-diagnostics.md (at commit ea544f9)
    with pytest.raises(TypeError, match="unexpected keyword"):
        HAPFNASOptions.from_config(control)


def test_search_state_round_trips_through_its_checkpoint_arrays() -> None:
    # Prepare: two clients' pairs, one searched client with its forest's report
    space = small_supernet().space
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(3)]
    state = SearchState(pairs={2: [(archs[0], 0.5), (archs[1], 0.25)], 0: [(archs[2], 0.75)]},
                        personal={2: archs[1]}, predicted={2: 0.4})
    state.reports[2] = cross_validated_report(rng.uniform(size=(6, 2)), rng.uniform(size=6),
                                              trees=5, folds=2, seed=0)

    # Execute
    arrays = state.to_arrays(num_clients=3, dims=len(space.dimensions))
    loaded = SearchState.from_arrays(arrays, space)

    # Assert: the same state, the pairs in client order; unsearched clients marked -1 / NaN
    assert loaded.pairs == {0: [(archs[2], 0.75)], 2: [(archs[0], 0.5), (archs[1], 0.25)]}
    assert loaded.personal == {2: archs[1]} and loaded.predicted == {2: 0.4}
    assert loaded.reports == state.reports
    assert arrays["personal_indices"][0].tolist() == [-1] * len(space.dimensions)
    assert np.isnan(arrays["predicted_accuracy"][1])


def test_hetero_fedavg_over_identical_architectures_equals_fedavg() -> None:
    # Prepare: three clients, one architecture, different weights and sample counts
    strategy = make_strategy()
    arch = strategy.space.sample(np.random.default_rng(5))
    before = strategy.supernet.state_arrays()
    rng = np.random.default_rng(0)
    updates = [(arch, [(a + rng.normal(0, 1, a.shape)).astype(a.dtype)
                       if a.dtype.kind == "f" else a.copy() for a in strategy.supernet.slice(arch)],
                n) for n in (10.0, 30.0, 60.0)]

    # Execute
    strategy.merge_subnets(updates)

    # Assert: the architecture's region holds FedAvg's result, the rest is untouched
    fedavg = weighted_average([(arrays, n) for _, arrays, n in updates])
    for got, want in zip(strategy.supernet.slice(arch), fedavg, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    covered = [np.zeros(a.shape, bool) for a in before]
    for i, where in strategy.supernet.regions(arch):
        covered[i][where] = True
    for a, b, c in zip(before, strategy.supernet.state_arrays(), covered, strict=True):
        np.testing.assert_array_equal(a[~c], b[~c])


def test_phase_plan_cuts_the_rounds_into_three_phases() -> None:
    plan = HAPFNASOptions(distill_rounds=2, search_rounds=2).plan(7)

    assert plan == PhasePlan(2, 2, 3)
    assert [plan.phase_of(r) for r in range(1, 8)] == [Phase.DISTILL] * 2 + [Phase.SEARCH] * 2 \
        + [Phase.HETERO] * 3
    assert [plan.is_last_of_phase(r) for r in range(1, 8)] == [False, True, False, True,
                                                               False, False, True]
    assert PhasePlan(0, 1, 1).phase_of(1) == Phase.SEARCH
    with pytest.raises(ValueError, match="must equal federation.num_rounds"):
        HAPFNASOptions(distill_rounds=2, search_rounds=1, hetero_rounds=5).plan(7)
    with pytest.raises(ValueError, match=r"heteroFedAvg rounds \(0: .*num_rounds >= 8"):
        HAPFNASOptions(distill_rounds=5, search_rounds=2).plan(7)


def test_invalid_options_and_data_are_config_errors() -> None:
    base = ["method=hapfnas", "federation.num_clients=4", "federation.clients_per_round=2",
            "dataset.max_samples_per_client=100", "method.transfer.size=300",
            "method.transfer.source=holdout"]
    settings_from_cfg(compose(base))  # valid

    cases = {"federation.num_rounds=3": "federation.num_rounds >= 7",
             "method.budget_metric=watts": "budget_metric",
             "method.transfer.size=1500": "leaves 1397 unheld",
             "dataset.max_samples_per_client=null": "leaves 0 unheld",
             "dataset.val_fraction=0.0": "val_fraction must be > 0"}
    for override, message in cases.items():
        extra = ["dataset.train_fraction=0.8"] if "val_fraction" in override else []
        with pytest.raises(ConfigError, match=message):
            settings_from_cfg(compose([*base, override, *extra]))


def test_transfer_holdout_uses_only_samples_no_client_holds() -> None:
    settings = settings_from_cfg(compose(["method=hapfnas", "federation.num_clients=4",
                                          "federation.clients_per_round=2",
                                          "dataset.max_samples_per_client=100"]))
    from pfednas.data import partition

    held = set(np.concatenate(partition(settings.data)).tolist())
    free = unheld_indices(settings.data)

    assert len(free) == 1797 - 400 and not held & set(free.tolist())


# -- the three phases through an in-process grid, and resume at a phase boundary --------------
ARGS = ["method=hapfnas", "federation.num_clients=3", "federation.clients_per_round=2",
        "federation.num_rounds=5", "federation.local_epochs=1", "federation.eval_every=5",
        "dataset.max_samples_per_client=120", "method.distill_rounds=2",
        "method.search_rounds=1", "method.knowledge_width=4", "method.transfer.size=200",
        "method.finetune_epochs=0",  # evaluation rows without fine-tuning seconds: comparable
        "method.distill.steps=5", "method.distill.batch_size=32",
        "method.predictor.archs_per_client=8", "method.predictor.trees=10",
        "method.predictor.folds=3", "method.evolution.population=8",
        "method.evolution.generations=3", "method.evolution.parents=3",
        "search_space.base_widths=[8,16]", "search_space.depths=[1,2]",
        "search_space.kernels=[3,5]", "search_space.expand_ratios=[2,3]",
        "search_space.stage_strides=[1,2]", "search_space.stage_se=[false,true]",
        "search_space.stage_acts=[relu,hswish]", "search_space.head_width=32",
        "~search_space.per_dataset"]  # this tiny space as given, not sized for digits


class InProcessGrid:
    """A Grid whose nodes are the real ClientApp handlers, called in this process."""

    def __init__(self, overrides: list[str], num_clients: int) -> None:
        run_config = {"overrides": json.dumps(overrides)}
        self.contexts = {100 + c: Context(run_id=1, node_id=100 + c,
                                          node_config={"partition-id": c,
                                                       "num-partitions": num_clients},
                                          state=RecordDict(), run_config=run_config)
                         for c in range(num_clients)}
        self.replies: dict[str, Message] = {}

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for i, msg in enumerate(messages):
            msg.metadata.__dict__["_message_id"] = f"{len(self.replies)}-{i}"
            handler = {"query": client_app.query, "train": client_app.train,
                       "evaluate": client_app.evaluate}[msg.metadata.message_type]
            self.replies[msg.metadata.message_id] = handler(
                msg, self.contexts[msg.metadata.dst_node_id])
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, ids: Iterable[str]) -> list[Message]:
        return [self.replies.pop(i) for i in ids]


def run_rounds(strategy: HAPFNASStrategy, settings: Any, start: int, stop: int,
               overrides: list[str] = ARGS) -> list[RoundRecord]:
    """Rounds ``start..stop`` of ``strategy`` (whose plan stays that of all the rounds)."""
    strategy.budget = replace(strategy.budget, num_rounds=stop)
    grid = InProcessGrid(overrides, settings.federation.num_clients)
    strategy.connect(grid)  # type: ignore[arg-type]
    return strategy.run(grid, lambda r: None, start_round=start)  # type: ignore[arg-type]


def test_three_phases_run_and_resume_across_the_phase_boundary(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("_run_id", "_node_id", "_task_id"):  # what a SuperExec would set
        monkeypatch.setattr(TaskIdentity, key, 1)
    # a simulation: the seeded budgets (a deployment's nodes would measure theirs anew)
    monkeypatch.setenv(SIMULATION_ENV, "1")
    settings = settings_from_cfg(compose(ARGS))
    full, resumed = build_strategy(settings), build_strategy(settings)
    assert isinstance(full, HAPFNASStrategy) and isinstance(resumed, HAPFNASStrategy)

    # Execute: phase 1 (rounds 1-2), a checkpoint, then rounds 3-5 uninterrupted and
    # rounds 3-5 of a fresh strategy that loaded the checkpoint
    records = run_rounds(full, settings, 1, 2)
    state = {k: v.copy() for k, v in full.state().items()}
    assert full.knowledge and not full.search.personal
    records += run_rounds(full, settings, 3, 5)
    resumed.load_state(state)
    tail = run_rounds(resumed, settings, 3, 5)

    # Assert: phase records
    assert [r.server.get("phase") for r in records] == [1, 1, 2, None, None]
    assert all(r.server["kl_max"] >= 0 and 0 <= r.server["acc_max"] <= 1 for r in records[:2])
    assert [len(r.train) for r in records] == [2, 2, 3, 2, 2]
    search = records[2].train
    assert all(row["cost"] <= row["budget"] for row in search)
    assert records[2].server["budget_violations"] == 0
    final = records[-1].evaluation
    assert [row["client_id"] for row in final] == [0, 1, 2]
    assert all(row["over_budget"] == 0 and row["num_params"] > 0 for row in final)
    assert np.mean([row["accuracy"] for row in final]) > 0.15  # chance is 0.1

    # Assert: resuming after phase 1 reproduces the uninterrupted run exactly
    assert resumed.search.personal == full.search.personal
    assert [r.evaluation for r in tail] == [r.evaluation for r in records[2:]]
    want, got = full.state(), resumed.state()
    assert list(want) == list(got)
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
    extra = full.summary_extra(records)["hapfnas"]
    assert extra["phase_rounds"] == {"distill": 2, "search": 1, "hetero": 2}
    assert extra["budget_violations"] == 0 and extra["spearman_rf"] is not None
