"""The benchmark protocol (../shared/BENCHMARK.md) in the code: measured client compute,
one fine-tuning setting F, +FT rows beside the as-published ones, the baselines' largest
architecture that fits every budget, and HAPFNAS's search traffic.

The runs here use the in-process runner (``pfednas.run.inprocess``): the real strategies and
ClientApp handlers, without Flower's transport, so each takes seconds.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from pfednas.bench.cli import (
    BenchError,
    BenchPreset,
    cell_record,
    cells,
    compose_preset,
    tuning_cells,
)
from pfednas.config import ConfigError, compose, conf_dir, settings_from_cfg
from pfednas.hardware.spread import draw_hardware
from pfednas.methods import METHODS, client_profiles, fits_all_arch, seeded_supernet
from pfednas.nas.covering import covering_arch
from pfednas.node.data import node_client_data
from pfednas.report.cli import build_report
from pfednas.report.collect import find_run_dirs, load_run
from pfednas.report.table import aggregate, run_rows
from pfednas.run.inprocess import run_inprocess
from pfednas.search import get_space
from pfednas.seeding import HARDWARE, numpy_rng

TINY = ["federation.num_clients=4", "federation.clients_per_round=2", "federation.num_rounds=2",
        "federation.local_epochs=1", "federation.eval_every=1", "checkpoint_every=0",
        "progress=false", "search_space.base_widths=[8,16]", "search_space.depths=[1,2]",
        "search_space.kernels=[3,5]", "search_space.expand_ratios=[2,3]",
        "search_space.stage_strides=[1,2]", "search_space.stage_se=[false,true]",
        "search_space.stage_acts=[relu,hswish]", "search_space.head_width=32"]


def passes_per_epoch(n: int, batch_size: int) -> int:
    """Samples a training epoch puts through forward + backward (a last batch of one is
    skipped: BatchNorm cannot train on it)."""
    return n - 1 if n % batch_size == 1 and n >= 2 else n


def train_sizes(overrides: list[str]) -> dict[int, int]:
    settings = settings_from_cfg(compose(overrides))

    class Node:  # what node_client_data reads of a Context
        def __init__(self, cid: int) -> None:
            self.node_config = {"partition-id": cid,
                                "num-partitions": settings.federation.num_clients}

    return {cid: len(node_client_data(Node(cid), settings).train.y)  # type: ignore[arg-type]
            for cid in range(settings.federation.num_clients)}


def test_fedavg_sample_passes_are_exactly_training_plus_finetuning() -> None:
    # Prepare
    args = ["method=fedavg", "method.arch=min", "method.finetune_epochs=2", *TINY]
    n, batch = train_sizes(args), 32

    # Execute
    run = run_inprocess(args)

    # Assert: N clients x E epochs each round, plus F epochs of every client at the final
    # evaluation (intermediate evaluations are quick: not fine-tuned)
    expected = sum(passes_per_epoch(n[c], batch) for r in run.records for c in r.sampled)
    expected += sum(2 * passes_per_epoch(n[c], batch) for c in n)
    assert run.summary["client_sample_passes"] == expected
    quick, final = run.records[0].evaluation, run.records[-1].evaluation
    assert [row["sample_passes"] for row in quick] == [0] * len(n)
    assert [row["sample_passes"] for row in final] == [2 * passes_per_epoch(n[r["client_id"]],
                                                                            batch) for r in final]


@pytest.mark.parametrize("method", ["fedrep", "fedbabu"])
def test_personalized_baselines_finetune_exactly_f_epochs(method: str) -> None:
    args = [f"method={method}", "method.arch=min", "method.finetune_epochs=3", *TINY]
    n = train_sizes(args)

    run = run_inprocess(args)

    final = run.records[-1].evaluation
    assert [row["sample_passes"] for row in final] == [3 * passes_per_epoch(n[r["client_id"]], 32)
                                                       for r in final]


def test_perfedrlnas_ft_reports_both_figures_and_f_leaves_the_published_one_unchanged() -> None:
    # Prepare
    args = ["method=perfedrlnas", "method.lambda_time=0", *TINY]
    n = train_sizes(args)

    # Execute
    published = run_inprocess([*args, "method.finetune_epochs=0"])
    tuned = run_inprocess([*args, "method.finetune_epochs=2"])

    # Assert: the as-published accuracy is the F=0 run's, client by client
    plain, both = published.records[-1].evaluation, tuned.records[-1].evaluation
    assert [r["accuracy"] for r in plain] == [r["accuracy_no_ft"] for r in both]
    assert tuned.summary["personalized_acc_no_ft_mean"] == published.summary[
        "personalized_acc_mean"]
    assert [r["sample_passes"] for r in both] == [2 * passes_per_epoch(n[r["client_id"]], 32)
                                                  for r in both]
    assert all(r["sample_passes"] == 0 for r in plain)
    assert "personalized_acc_no_ft_mean" not in published.summary


@pytest.mark.slow
def test_report_shows_a_finetuned_nas_run_as_two_rows_with_ratios(tmp_path: Path) -> None:
    # Prepare: fine-tuned PerFedRLNAS and FedAvg+FT runs of the same cells, seeds 0 and 1
    args = [*TINY, "method.finetune_epochs=1"]
    for seed in (0, 1):
        for method, own in (("perfedrlnas", ["method.lambda_time=0"]), ("fedavg", [])):
            run_inprocess([f"method={method}", f"seed={seed}", *args, *own],
                          tmp_path / method / f"seed={seed}")

    # Execute
    runs = [load_run(path) for path in find_run_dirs([tmp_path])]
    rows = [row for run in runs for row in run_rows(run)]
    groups = {g.method: g for g in aggregate(rows, list(METHODS))}
    build_report(find_run_dirs([tmp_path]), tmp_path / "report")
    with (tmp_path / "report" / "table.csv").open() as f:
        table = list(csv.DictReader(f))

    # Assert: one row per method x alpha over both seeds, with the protocol's columns
    # both methods fine-tune, so both report the pair: as published and +ft
    assert sorted(r["method"] for r in table) == ["fedavg", "fedavg+ft", "perfedrlnas",
                                                  "perfedrlnas+ft"]
    assert all(r["seeds"] == "0 1" and r["acc_std_seeds"] != "" for r in table)
    by_name = {r["method"]: r for r in table}
    assert by_name["fedavg+ft"]["err_ratio_fedavg_ft"] == ""
    assert float(by_name["perfedrlnas+ft"]["err_ratio_best_baseline"]) > 0
    assert int(by_name["perfedrlnas"]["finetune_epochs"]) == 0
    assert int(by_name["fedavg"]["finetune_epochs"]) == 0
    assert float(by_name["fedavg+ft"]["client_sample_passes"]) > 0
    assert set(groups) == {"perfedrlnas", "perfedrlnas+ft", "fedavg", "fedavg+ft"}
    published, tuned = groups["perfedrlnas"], groups["perfedrlnas+ft"]
    fedavg, fedavg_ft = groups["fedavg"], groups["fedavg+ft"]
    assert published.finetune_epochs == 0 and tuned.finetune_epochs == 1
    assert published.sample_passes < tuned.sample_passes
    assert fedavg.sample_passes < fedavg_ft.sample_passes
    assert fedavg_ft.err_ratio_fedavg_ft is None
    assert tuned.err_ratio_fedavg_ft == pytest.approx((1 - tuned.acc_mean)
                                                      / (1 - fedavg_ft.acc_mean))
    best = max(fedavg.acc_mean, fedavg_ft.acc_mean)
    assert published.err_ratio_best_baseline == pytest.approx((1 - published.acc_mean)
                                                              / (1 - best))
    assert fedavg_ft.compute_ratio_fedavg_ft == pytest.approx(1.0)
    # like for like: a figure as published against FedAvg's as published (training alone)
    assert tuned.compute_ratio_fedavg_ft == pytest.approx(tuned.sample_passes
                                                          / fedavg_ft.sample_passes)
    assert published.compute_ratio_fedavg_ft == pytest.approx(published.sample_passes
                                                              / fedavg.sample_passes)
    assert published.macs_ratio_fedavg_ft == pytest.approx(published.client_macs
                                                           / fedavg.client_macs)


def test_fits_all_is_the_largest_architecture_within_every_clients_budget() -> None:
    settings = settings_from_cfg(compose(["method=fedavg", "method.arch=fits_all",
                                          "federation.num_clients=4",
                                          "federation.clients_per_round=2"]))
    supernet = seeded_supernet(settings)

    arch = fits_all_arch(supernet, client_profiles(settings), settings.seed, 32)

    def memory(a):  # type: ignore[no-untyped-def]
        return supernet.cost(a, batch_size=32).memory_bytes
    budgets = draw_hardware(4, settings.federation.hardware,
                            memory(supernet.space.max_arch()), numpy_rng(settings.seed, HARDWARE))
    tightest = min(b.memory_bytes for b in budgets)
    assert memory(arch) <= tightest
    rng = np.random.default_rng(0)
    fitting = [a for a in (supernet.space.sample(rng) for _ in range(300)) if memory(a) <= tightest]
    assert all(supernet.cost(a).params <= supernet.cost(arch).params for a in fitting)
    assert supernet.cost(arch).params > supernet.cost(supernet.space.min_arch()).params


def test_hapfnas_search_sends_only_the_subnet_covering_the_sampled_ones() -> None:
    space = get_space("mobilenetv3", base_widths=[8, 16], depths=[1, 2], kernels=[3, 5],
                      expand_ratios=[2, 3], stage_strides=[1, 2], stage_se=[False, True],
                      stage_acts=["relu", "hswish"], head_width=32)
    supernet = space.build_supernet(num_classes=10, in_channels=1, image_size=8)
    rng = np.random.default_rng(1)
    small = [a for a in (space.sample(rng) for _ in range(200))
             if space.values(a)["s0_depth"] == 1 and space.values(a)["s1_width"] == 8][:5]

    cover = covering_arch(supernet, small)

    full = sum(a.nbytes for a in supernet.state_arrays())
    assert sum(a.nbytes for a in supernet.slice(cover)) < full
    for arch in small:  # every sampled subnet is cut, unchanged, from what was sent
        receiver = space.build_supernet(num_classes=10, in_channels=1, image_size=8)
        receiver.scatter(cover, supernet.slice(cover))
        for a, b in zip(receiver.slice(arch), supernet.slice(arch), strict=True):
            np.testing.assert_array_equal(a, b)


def test_digits_builds_no_resolution_scaled_subnets() -> None:
    settings = settings_from_cfg(compose([]))
    space = settings.search_space.build()
    assert [d.choices for d in space.dimensions if d.name == "resolution"] in ([], [(1.0,)])
    fashion = settings_from_cfg(compose(["dataset=fashion_mnist"]))
    assert fashion.search_space != settings.search_space


def _preset(**changes: object) -> BenchPreset:
    cfg = {"name": "t", "dataset": "digits", "search_space": "mobilenetv3",
           "methods": ["fedavg", "local", "perfedrlnas"], "alphas": [0.5], "seeds": [0, 1],
           "overrides": [], "method_overrides": {}, "out": "/tmp/t", "finetune_epochs": 7,
           "tuning_seed": 100, "tuning": {"fedavg": [["federation.lr=0.1"]],
                                          "local": [["federation.lr=0.1"]],
                                          "perfedrlnas": [["method.policy_lr=1"]]}}
    cfg.update(changes)
    return BenchPreset.from_config(cfg, METHODS)


def test_bench_applies_f_to_methods_that_finetune_and_tunes_on_an_unreported_seed() -> None:
    preset = _preset()
    spaces = {m: METHODS[m].spaces for m in preset.methods}

    by_method = {c.method: c.overrides for c in cells(preset, [], spaces) if c.seed == 0}
    tuning = tuning_cells(preset, [], spaces)

    assert "method.finetune_epochs=7" in by_method["fedavg"]
    assert "method.finetune_epochs=7" in by_method["perfedrlnas"]
    assert not any(o.startswith("method.finetune_epochs") for o in by_method["local"])
    assert {c.seed for c in tuning} == {100}
    assert all("eval_split=val" in c.overrides for c in tuning)
    # a tuning run fine-tunes at its end only, whatever the preset's reported runs do
    along_the_way = _preset(overrides=["federation.eval_finetune=all"])
    for cell in tuning_cells(along_the_way, [], spaces):
        assert compose(list(cell.overrides)).federation.eval_finetune == "final"
    with pytest.raises(BenchError, match="never reported"):
        _preset(tuning_seed=1)
    with pytest.raises(BenchError, match="same number"):
        _preset(tuning={"fedavg": [["a=1"], ["a=2"]], "local": [["a=1"]]})


def test_a_variant_runs_its_method_with_the_chosen_values_and_its_own_and_is_not_tuned() -> None:
    variants = {"perfedrlnas_ph": {"method": "perfedrlnas",
                                   "overrides": ["method.personal_head=true"]}}
    preset = _preset(methods=["fedavg", "perfedrlnas", "perfedrlnas_ph"], variants=variants,
                     method_overrides={"perfedrlnas": ["method.policy_lr=0.5"]})
    spaces = {m: METHODS[m].spaces for m in ("fedavg", "perfedrlnas")}

    todo = [c for c in cells(preset, ["federation.num_rounds=3"], spaces) if c.seed == 0]
    tuning = tuning_cells(preset, [], spaces)

    base, variant = (next(c for c in todo if c.method == m)
                     for m in ("perfedrlnas", "perfedrlnas_ph"))
    assert variant.overrides[0] == "method=perfedrlnas"
    assert variant.path == preset.out / "perfedrlnas_ph" / "alpha=0.5" / "seed=0"
    # the method's cell, then the variant's options and label, the command line last
    assert variant.overrides == (*base.overrides[:-1], "method.personal_head=true",
                                 "label=perfedrlnas_ph", "federation.num_rounds=3")
    assert "method.finetune_epochs=7" in variant.overrides
    assert {c.method for c in tuning} == {"fedavg", "perfedrlnas"}
    for bad, message in (({"fedavg": {"method": "fedavg"}}, "new lower-case name"),
                         ({"x": {"method": "nope"}}, "needs method"),
                         ({"Bad-Name": {"method": "fedavg"}}, "new lower-case name")):
        with pytest.raises(BenchError, match=message):
            _preset(variants=bad)
    with pytest.raises(BenchError, match="unknown method"):
        _preset(methods=["fedavg", "perfedrlnas_ph"])


def test_a_labelled_run_is_reported_under_its_label(tmp_path: Path) -> None:
    run_inprocess(["method=perfedrlnas", "label=perfedrlnas_ph", "method.personal_head=true",
                   "method.finetune_epochs=1", *TINY], tmp_path / "run")

    run = load_run(tmp_path / "run")
    assert run.summary["method"] == "perfedrlnas" and run.method == "perfedrlnas_ph"
    assert [r.method for r in run_rows(run)] == ["perfedrlnas_ph", "perfedrlnas_ph+ft"]
    with pytest.raises(ConfigError, match="label must be"):
        settings_from_cfg(compose(["label=' '"]))


@pytest.mark.slow
def test_ditto_and_spider_see_the_same_samples_in_the_same_rounds() -> None:
    # Prepare: a small DARTS space (5 edges per cell type): SPIDER's search ends in round 6;
    # 60 samples per client (about 36 train, 12 val) keep the 3 x 6 rounds at seconds
    args = ["search_space=darts_s2", "search_space.channels=4", "search_space.layers=3",
            "search_space.steps=2", "search_space.multiplier=2", "federation.num_clients=3",
            "federation.clients_per_round=3", "dataset.max_samples_per_client=60",
            "federation.num_rounds=6", "federation.local_epochs=1", "federation.eval_every=6",
            "checkpoint_every=0", "progress=false"]

    # Execute: with the paper's phase 3 (train + val once final), and by default
    ask = "method.train_on_val_when_final=true"
    spider, ditto = (run_inprocess([f"method={m}", *args, ask]) for m in ("spider", "ditto"))
    by_default = run_inprocess(["method=spider", *args])

    # Assert: per round and client the same samples (train, then train + val once final)
    def seen(run):  # type: ignore[no-untyped-def]
        return [[(row["client_id"], row["num_examples"], row["sample_passes"])
                 for row in r.train] for r in run.records]
    assert seen(spider) == seen(ditto)
    examples = [sorted({row["num_examples"] for row in r.train}) for r in spider.records]
    assert examples[0] != examples[-1]  # val joined the training data in the final phase
    # by default the train split only, in every round, as every other method
    examples = [sorted({row["num_examples"] for row in r.train}) for r in by_default.records]
    assert examples[0] == examples[-1]


def test_a_tuning_client_is_scored_on_validation_samples_it_never_selected_on() -> None:
    # Prepare: client 1 as a reported run and as a tuning run build it
    from pfednas.app import client_app
    from tests.test_hapfnas import InProcessGrid

    args = ["federation.num_clients=3", "federation.clients_per_round=3",
            "dataset.max_samples_per_client=120"]

    def env(split: str, method: str = "perfedrlnas"):  # type: ignore[no-untyped-def]
        overrides = [f"method={method}", *args, f"eval_split={split}"]
        return client_app.client_env(InProcessGrid(overrides, 3).contexts[101],
                                     settings_from_cfg(compose(overrides)))

    # Execute
    reported, tuning, baseline = env("test"), env("val"), env("val", "fedbabu")

    # Assert: the tuning run's val (PerFedRLNAS's reward) and test (its score) are disjoint
    # halves of the reported run's val; the reported run's test split is not read
    rows = lambda d: {r.tobytes() for r in d.x}  # noqa: E731
    assert np.array_equal(tuning.data.train.x, reported.data.train.x)
    assert not rows(tuning.data.val) & rows(tuning.data.test)
    assert rows(tuning.data.val) | rows(tuning.data.test) == rows(reported.data.val)
    assert min(len(tuning.data.val), len(tuning.data.test)) >= len(reported.data.val) // 2
    # Assert: a method that never reads val (FedBABU) is scored on all of it
    assert np.array_equal(baseline.data.test.x, reported.data.val.x)
    assert all(spec.selects_on_val == (name in {"perfedrlnas", "hapfnas", "fednas", "spider"})
               for name, spec in METHODS.items())


def test_spider_and_ditto_train_on_the_train_split_only_unless_asked_and_never_when_tuning(
) -> None:
    # Prepare: the same SPIDER / Ditto settings, reported (test) and tuning (val, val_half)
    from pfednas.config import ConfigError, compose, settings_from_cfg
    from pfednas.methods.darts import spider_options

    def options(method: str, split: str, *extra: str):  # type: ignore[no-untyped-def]
        return spider_options(settings_from_cfg(compose([f"method={method}",
                                                           f"eval_split={split}", *extra])))

    ask = "method.train_on_val_when_final=true"
    for method in ("spider", "ditto"):
        # Execute / Assert: by default no final phase trains on val (every method of a
        # comparison sees the same samples); asked for, the paper's phase 3 does, where val
        # is not the score; a tuning run that asks is refused in one line naming the key
        assert not options(method, "test").train_on_val_when_final
        assert not options(method, "val_half").train_on_val_when_final
        assert options(method, "test", ask).train_on_val_when_final
        for split in ("val", "val_half"):
            with pytest.raises(ConfigError, match="train_on_val_when_final"):
                options(method, split, ask)


def test_tuning_cells_do_not_depend_on_the_values_the_tuning_chose() -> None:
    # Prepare: the same grid, before and after a choice was written into method_overrides
    grid = {"fedavg": [["federation.lr=0.1"], ["federation.lr=0.05"]],
            "local": [["federation.lr=0.1"], ["federation.lr=0.05"]],
            "perfedrlnas": [["method.policy_lr=1"], ["method.policy_lr=0.5"]]}
    before = _preset(tuning=grid, method_overrides={"fedavg": ["method.arch=fits_all"]})
    after = _preset(tuning=grid, method_overrides={
        "fedavg": ["method.arch=fits_all", "federation.lr=0.05"]})
    spaces = {m: METHODS[m].spaces for m in before.methods}

    # Execute
    runs_before, runs_after = (tuning_cells(p, [], spaces) for p in (before, after))
    reported = {c.method: c.overrides for c in cells(after, [], spaces) if c.seed == 0}

    # Assert: a tuning cell runs what its grid says, whatever was chosen; reported cells the choice
    assert [c.overrides for c in runs_before] == [c.overrides for c in runs_after]
    fedavg = [c.overrides for c in runs_after if c.method == "fedavg"]
    assert [[o for o in ov if o.startswith("federation.lr")] for ov in fedavg] == [
        ["federation.lr=0.1"], ["federation.lr=0.05"]]
    assert all("method.arch=fits_all" in ov for ov in fedavg)
    assert "federation.lr=0.05" in reported["fedavg"]


@pytest.mark.parametrize("preset", sorted(p.stem for p in (conf_dir() / "bench").glob("*.yaml")))
def test_every_bench_preset_composes_into_cells(preset: str) -> None:
    # Execute
    bench = BenchPreset.from_config(compose_preset(preset, []), METHODS)
    spaces = {m: METHODS[m].spaces for m in map(bench.base_of, bench.methods)}
    todo = cells(bench, [], spaces)

    # Assert: every method × α × seed, each with the bench's selections first
    assert len(todo) == len(bench.methods) * len(bench.alphas) * len(bench.seeds)
    assert all(c.overrides[0] == f"method={bench.base_of(c.method)}" for c in todo)
    assert (conf_dir() / "bench" / f"{preset}.yaml").stat().st_size < 20_000


def test_cell_record_keeps_the_commit_and_the_mean_load_it_ran_at() -> None:
    record = cell_record("abc123+dirty", [1.0, 2.0, float("nan"), 3.0], 12.345, 0)

    assert record["commit"] == "abc123+dirty" and record["returncode"] == 0
    assert (record["load_mean"], record["load_max"], record["load_samples"]) == (2.0, 3.0, 3)
    assert record["wall_seconds"] == 12.3
    assert cell_record("", [], 1.0, 1)["load_mean"] is None
    # the instruction set PyTorch's kernels use: cells agree bit for bit only where it does
    assert record["cpu_capability"] == torch.backends.cpu.get_cpu_capability() != ""
