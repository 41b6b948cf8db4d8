"""Unequal devices: HeteroFL's and FedRolex's width slices, device levels in the simulated
hardware, the two controls of search, and their bad inputs."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pfednas.config import ConfigError, compose, settings_from_cfg, task_shape
from pfednas.hardware.spread import HETEROFL_RATES, HardwareSpread, draw_hardware, level_counts
from pfednas.methods import client_profiles, seeded_supernet
from pfednas.nas.fitting import largest_in_budgets, random_in_budget
from pfednas.nas.merge import overlap_average
from pfednas.search.width import LEADING, ROLLING, WidthSlicer, scaled_width
from pfednas.seeding import numpy_rng
from tests.conftest import PFEDNAS

# a space that reaches down to HeteroFL's smallest level: elastic stem and head, stage widths
# down to 1/16 (the largest network, the global model, is the default space's)
DEVICES_SPACE = ["search_space.stem_mults=[0.125,0.25,0.5,1.0]",
                 "search_space.head_mults=[0.0625,0.125,0.25,0.5,1.0]",
                 "search_space.width_mults=[0.0625,0.125,0.25,0.5,1.0]"]
LEVELS = ["federation.hardware.memory_distribution=levels"]


def slicer_for(overrides: list[str] | None = None) -> WidthSlicer:
    settings = settings_from_cfg(compose(overrides or []))
    return WidthSlicer(settings.search_space.build(), task_shape(settings))


@pytest.mark.parametrize("rate", HETEROFL_RATES)
def test_heterofl_slices_scale_every_hidden_width_by_its_rule(rate: float) -> None:
    slicer = slicer_for()
    full, sub = dict(slicer.full), dict(slicer.shapes(rate))
    stem_out = full["stem_conv.weight"][0]
    assert sub["stem_conv.weight"][:2] == (scaled_width(rate, stem_out),
                                           full["stem_conv.weight"][1])
    assert sub["classifier.weight"] == (full["classifier.weight"][0],
                                        scaled_width(rate, full["classifier.weight"][1]))
    for key in ("final_conv.weight", "stages.0.0.project_conv.weight"):
        out_c, in_c = full[key][:2]
        assert sub[key][:2] == (scaled_width(rate, out_c), scaled_width(rate, in_c)), key
    # a convolution whose two channel axes are scaled keeps rate² of its weights, where the
    # widths are multiples of 1/rate (the paper's rule); input channels and classes stay
    out_c, in_c, k, _ = full["final_conv.weight"]
    if out_c * rate == int(out_c * rate) and in_c * rate == int(in_c * rate):
        assert math.prod(sub["final_conv.weight"]) == pytest.approx(
            rate ** 2 * out_c * in_c * k * k)
    # every slice sits inside the global model, and runs
    net = slicer.build(rate)
    assert [(k, tuple(v.shape)) for k, v in net.state_dict().items()] == slicer.shapes(rate)
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_the_rate_one_slice_is_the_global_model_and_regions_round_trip() -> None:
    slicer = slicer_for()
    supernet = seeded_supernet(settings_from_cfg(compose([])))
    arrays = supernet.state_arrays()
    assert slicer.shapes(1.0) == slicer.full
    whole = slicer.slice(arrays, 1.0)
    assert all(np.array_equal(a, b) for a, b in zip(whole, arrays, strict=True))
    # a slice written back by the merge changes only its own entries
    regions = slicer.regions(0.25, ROLLING, server_round=7)
    part = [a + 1.0 if a.dtype.kind == "f" else a for a in slicer.slice(arrays, 0.25, ROLLING, 7)]
    merged = overlap_average(arrays, [(regions, part, 1.0)])
    changed = sum(int((m != a).sum()) for m, a in zip(merged, arrays, strict=True))
    assert changed == sum(p.size for p, a in zip(part, slicer.slice(arrays, 0.25), strict=True)
                          if p.dtype.kind == "f")


def test_fedrolex_window_rolls_one_channel_a_round_and_covers_every_channel() -> None:
    slicer = slicer_for()
    key = [k for k, _ in slicer.full].index("final_conv.weight")
    full = slicer.full[key][1][0]
    width = slicer.shapes(0.25)[key][1][0]
    windows = []
    for server_round in range(full):
        (_, where), = [r for r in slicer.regions(0.25, ROLLING, server_round) if r[0] == key]
        rows = where[0].ravel()
        assert list(rows) == [(server_round + j) % full for j in range(width)]
        windows.append(set(rows.tolist()))
    assert set().union(*windows) == set(range(full))
    # HeteroFL's leading slice is the same every round
    lead = [r for r in slicer.regions(0.25, LEADING) if r[0] == key][0][1]
    assert lead[0] == slice(0, width)


def test_levels_give_each_level_its_share_and_its_slice_memory_as_budget() -> None:
    assert level_counts([0.2] * 5, 20) == [4] * 5
    assert sum(level_counts([0.5, 0.3, 0.2], 7)) == 7
    settings = settings_from_cfg(compose([*DEVICES_SPACE, *LEVELS,
                                          "federation.hardware.speed_follows_memory=true"]))
    profiles = client_profiles(settings)
    slicer = slicer_for(DEVICES_SPACE)
    assert slicer.full == slicer_for().full  # the same global model as the default space
    by_level: dict[float, list] = {}
    for profile in profiles.values():
        by_level.setdefault(profile.level, []).append(profile)
    assert sorted(by_level) == sorted(HETEROFL_RATES)
    assert all(len(group) == 4 for group in by_level.values())
    batch = settings.federation.batch_size
    for rate, group in by_level.items():
        assert {p.memory_bytes for p in group} == {slicer.cost(rate, batch).memory_bytes}
    # a small device is a slow one: slowdown from speed_low (level 1) to speed_high (1/16)
    spread = settings.federation.hardware
    assert by_level[1.0][0].speed_factor == pytest.approx(spread.speed_low)
    assert by_level[0.0625][0].speed_factor == pytest.approx(spread.speed_high)
    order = sorted(profiles.values(), key=lambda p: p.memory_bytes)
    assert all(a.speed_factor >= b.speed_factor for a, b in zip(order, order[1:], strict=False))


def test_uniform_draws_are_unchanged_and_log_uniform_stays_in_its_bounds() -> None:
    spread = HardwareSpread()
    drawn = draw_hardware(50, spread, 100.0, numpy_rng(3, 5))
    rng = numpy_rng(3, 5)  # the draws of every earlier version
    speed, bw = rng.uniform(1.0, 4.0, 50), rng.uniform(100.0, 100.0, 50)
    mem = rng.uniform(0.25, 1.0, 50) * 100.0
    assert [h.memory_bytes for h in drawn] == mem.tolist()
    assert [h.speed_factor for h in drawn] == speed.tolist()
    assert all(h.level is None for h in drawn) and bw.size == 50
    log_spread = HardwareSpread(memory_distribution="log_uniform", memory_low=1 / 16)
    budgets = [h.memory_bytes for h in draw_hardware(400, log_spread, 1.0, numpy_rng(0, 5))]
    assert min(budgets) >= 1 / 16 and max(budgets) <= 1.0
    below_quarter = sum(b < 0.25 for b in budgets) / len(budgets)
    assert 0.4 < below_quarter < 0.6  # log-uniform: half the mass below the geometric middle


@pytest.mark.parametrize(("override", "message"), [
    ("federation.hardware.memory_level_shares=[0.5,0.2,0.1,0.1,0.05]", "must sum to 1"),
    ("federation.hardware.memory_levels=[1,0.5,0]", "each rate must be in (0, 1]"),
    ("federation.hardware.memory_levels=[1.5,0.5]", "each rate must be in (0, 1]"),
    ("federation.num_clients=4", "5 levels need at least 5 clients"),
    ("federation.hardware.memory_distribution=normal", "memory_distribution must be"),
])
def test_bad_level_settings_are_refused_naming_the_key(override: str, message: str) -> None:
    overrides = ["federation.hardware.memory_distribution=levels", "federation.clients_per_round=2",
                 override]
    with pytest.raises(ConfigError, match="federation.hardware.memory_") as err:
        settings_from_cfg(compose(overrides))
    assert message in str(err.value)


def test_width_methods_refuse_a_space_they_cannot_scale_and_levels_no_subnet_fits() -> None:
    with pytest.raises(ConfigError, match="supports search_space=mobilenetv3"):
        settings_from_cfg(compose(["method=heterofl", "search_space=vit"]))
    with pytest.raises(ConfigError, match="rates must be"):
        settings_from_cfg(compose(["method=fedrolex", "method.rates=[1,0]"]))
    # the default space's smallest subnet needs more than the 1/16 slice
    with pytest.raises(ValueError, match=r"smallest level \(rate 0.0625.*its smallest needs"):
        client_profiles(settings_from_cfg(compose(LEVELS)))
    with pytest.raises(ValueError, match="needs a search space that can be width-scaled"):
        client_profiles(settings_from_cfg(compose(["search_space=vit", *LEVELS])))


def test_controls_stay_in_budget_and_largest_has_no_larger_neighbour_that_fits() -> None:
    settings = settings_from_cfg(compose([]))
    supernet = seeded_supernet(settings)
    space, batch = supernet.space, settings.federation.batch_size
    profiles = client_profiles(settings)

    def memory(arch):  # noqa: ANN001, ANN202
        return supernet.cost(arch, batch_size=batch).memory_bytes

    budgets = {cid: p.memory_bytes for cid, p in profiles.items()}
    largest = largest_in_budgets(space, memory, lambda a: supernet.cost(a).params, budgets, 0,
                                 samples=300)
    rng = np.random.default_rng(1)
    others = [space.sample(rng) for _ in range(300)]
    for cid, arch in largest.items():
        assert memory(arch) <= budgets[cid]
        for d, n in enumerate(len(dim.choices) for dim in space.dimensions):
            if arch.indices[d] + 1 < n:
                step = list(arch.indices)
                step[d] += 1
                bigger = space.arch_from_indices(step)
                assert memory(bigger) > budgets[cid] or memory(bigger) <= memory(arch)
        assert not any(memory(a) <= budgets[cid] and memory(a) > memory(arch) * 1.25
                       for a in others)
    for cid, budget in list(budgets.items())[:5]:
        draws = [random_in_budget(space, lambda a, b=budget: memory(a) <= b,
                                  numpy_rng(0, 4, 98, cid)) for _ in range(2)]
        assert draws[0] == draws[1] and memory(draws[0]) <= budget


TINY = ["federation.num_clients=5", "federation.clients_per_round=3", "federation.num_rounds=2",
        "federation.eval_every=2", "method.finetune_epochs=1", *DEVICES_SPACE, *LEVELS]
NEW_METHODS = ("heterofl", "fedrolex", "largest_in_budget", "random_in_budget")


def check_device_summary(summary: dict, method: str) -> None:
    assert summary["method"] == method and summary["num_clients_evaluated"] == 5
    assert summary["within_budget_share"] == 1.0
    assert summary["personalized_acc_mean"] > 0.2  # chance is 0.1
    assert "personalized_acc_no_ft_mean" in summary
    tiers = summary["accuracy_by_tier"]
    assert sum(t["clients"] for t in tiers) == 5
    assert {p["level"] for p in summary["profiles"]} == set(HETEROFL_RATES)


@pytest.fixture(scope="module")
def inprocess_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, Path]]:
    """Each new method's run of :data:`TINY` by the in-process runner and the folder it
    wrote: the budget checks read its records, the report and end-to-end test its folder."""
    from pfednas.run.inprocess import run_inprocess

    base = tmp_path_factory.mktemp("devices")
    return {m: (run_inprocess([f"method={m}", *TINY, "progress=false"], base / m), base / m)
            for m in NEW_METHODS}


@pytest.mark.parametrize("method", NEW_METHODS)
@pytest.mark.slow
def test_new_methods_run_in_process_within_every_budget(
        method: str, inprocess_runs: dict[str, tuple[Any, Path]]) -> None:
    run, _ = inprocess_runs[method]
    check_device_summary(run.summary, method)
    rows = [r for r in run.records if r.evaluation][-1].evaluation
    profiles = {p["client_id"]: p for p in run.summary["profiles"]}
    for row in rows:
        assert row["within_budget"] and row["level"] == profiles[row["client_id"]]["level"]
        if method in ("heterofl", "fedrolex"):  # each client trains its own level's slice
            assert row["width_rate"] == row["level"]


@pytest.mark.slow
def test_new_methods_end_to_end_through_flower_and_ray_and_their_models_export(
        tmp_path: Path, inprocess_runs: dict[str, tuple[Any, Path]]) -> None:
    from tests.conftest import run_pfednas

    # HeteroFL's width slices through Flower and Ray (FedRolex's travel alike; the two
    # controls' subnets are PerFedRLNAS's, whose own end-to-end test sends them), the other
    # three run folders from the in-process runner, which writes the same files
    runs = [tmp_path / "heterofl", *(inprocess_runs[m][1] for m in NEW_METHODS[1:])]
    done = run_pfednas(["method=heterofl", *TINY], runs[0])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for out in runs:
        summary = json.loads((out / "summary.json").read_text())
        check_device_summary(summary, out.name)
    # their report: accuracy by tier for all four; an architecture heatmap for the subnets of
    # the space, none for the width slices (which are not its architectures)
    from pfednas.report.cli import build_report

    build_report(runs, tmp_path / "report")
    assert (tmp_path / "report" / "acc_by_tier.png").is_file()
    heatmaps = {p.name.split("_fashion")[0].split("_digits")[0]
                for p in (tmp_path / "report" / "archs").glob("*.png")}
    assert heatmaps == {"largest_in_budget", "random_in_budget"}
    # a kept HeteroFL slice of the smallest level exports and reproduces its figure
    out = tmp_path / "heterofl"
    summary = json.loads((out / "summary.json").read_text())
    client = next(p["client_id"] for p in summary["profiles"] if p["level"] == 0.0625)
    exported = subprocess.run([str(PFEDNAS), "export", str(out), "--client", str(client),
                               "--format", "onnx", "--no-measure"], capture_output=True,
                              text=True, check=False)
    assert exported.returncode == 0, exported.stderr[-2000:]
    predicted = subprocess.run([str(PFEDNAS), "predict", str(out / "export" /
                                                             f"client_{client}.onnx"),
                                "--run", str(out), "--client", str(client)],
                               capture_output=True, text=True, check=False)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    spec = json.loads((out / "models" / f"client_{client}" / "spec.json").read_text())
    assert spec["search_space"]["divisor"] == 1  # the scaled space the slice belongs to
    reported = spec["models"][spec["reported"]]["accuracy"]
    assert f"accuracy {reported}" in predicted.stdout


def test_split_hashes_name_each_clients_rows_and_the_report_refuses_unequal_ones() -> None:
    from pfednas.data import partition_record
    from pfednas.report.bench_results import unequal_partitions
    from pfednas.report.collect import Run

    def hashes(overrides: list[str]) -> list[str]:
        record = partition_record(settings_from_cfg(compose(overrides)).data)
        return record["partition"]["client_splits_sha256"]  # type: ignore[index]

    same = hashes(["method=fedavg"])
    assert same == hashes(["method=heterofl"]) and len(same) == 20
    assert hashes(["seed=1"]) != same and hashes(["dataset.alpha=0.1"]) != same

    def run(method: str, splits: list[str] | None) -> Run:
        partition = {} if splits is None else {"client_splits_sha256": splits}
        return Run(Path(method), {"method": method, "seed": 0, "partition": partition}, [],
                   {"dataset": {"alpha": 0.3}})

    assert unequal_partitions([run("fedavg", same), run("heterofl", same),
                               run("local", None)]) == []
    problems = unequal_partitions([run("fedavg", same), run("heterofl", same[::-1])])
    assert problems == ["α=0.3 seed=0: the clients' data differ between fedavg and heterofl"]


def test_a_personal_head_nests_where_the_head_width_is_elastic() -> None:
    # a client keeps the widest head it trained; a narrower subnet takes its prefix, a wider
    # one the received columns beyond it (the supernet's nesting), and the reply carries the
    # head as it came
    from flwr.app import RecordDict

    from pfednas.body_head import StateSplit, take
    from pfednas.clients import SubnetClient
    from pfednas.clients.subnet import HEAD_KEY, overlay_head
    from tests.test_baselines import ENV

    settings = settings_from_cfg(compose(DEVICES_SPACE))
    supernet = seeded_supernet(settings)
    space = supernet.space
    wide = space.max_arch()
    narrow = space.arch_from_indices([0 if d.name == "head_width" else i
                                      for d, i in zip(space.dimensions, wide.indices,
                                                      strict=True)])
    state = RecordDict()
    client = SubnetClient(ENV, space, task_shape(settings), bn_recalibrate=False,
                          personal_head=True, state=state)
    config = {"arch": wide.to_str(), "local_epochs": 1, "server_round": 1, "lr": 0.1,
              "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 16}
    sent = supernet.slice(wide)
    reply, _, _ = client.fit(sent, config)
    split = StateSplit.of(supernet.extract(wide))
    assert all(np.array_equal(a, b) for a, b in zip(take(reply, split.head),
                                                    take(sent, split.head), strict=True))
    kept = client.stored_head()
    assert kept[0].shape == (10, 256)
    # a narrow subnet trains the kept head's first columns; the columns beyond stay stored
    keys = supernet.state_keys()
    narrow_width = next(a.shape[1] for (i, _), a in zip(supernet.regions(narrow),
                                                        supernet.slice(narrow), strict=True)
                        if keys[i] == "classifier.weight")
    assert narrow_width < 256
    client.fit(supernet.slice(narrow), {**config, "arch": narrow.to_str(), "server_round": 2})
    after = client.stored_head()
    assert after[0].shape == (10, 256) and state[HEAD_KEY] is not None
    assert np.array_equal(after[0][:, narrow_width:], kept[0][:, narrow_width:])
    assert not np.array_equal(after[0][:, :narrow_width], kept[0][:, :narrow_width])
    # overlay: the client's part over the received, any rank mismatch refused
    onto = [np.zeros((2, 4)), np.zeros(2)]
    merged = overlay_head([np.ones((2, 2)), np.ones(2)], onto, "a")
    assert merged[0].tolist() == [[1, 1, 0, 0], [1, 1, 0, 0]] and merged[1].tolist() == [1, 1]
    with pytest.raises(ValueError, match="do not match"):
        overlay_head([np.ones(2)], [np.ones((2, 2))], "a")
