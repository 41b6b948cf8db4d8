"""The cost model against PyTorch's own counts (benchmarks/bench_cost_model.py).

FLOPs: ``Supernet.cost(arch).flops`` (multiply-accumulates) equals
``FlopCounterMode``'s FLOPs / 2 on the extracted subnet. Memory: the simulation's
estimate stays as it is (its ratios decide every simulated fit); the deployment's
upper bound covers every committed measurement, a live one, and is what the
committed measurements derive.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from pfednas.config import compose, space_for_dataset
from pfednas.data import dataset_info
from pfednas.search import SPACES, Arch, Cost, Supernet, get_space
from pfednas.search.memory_bound import (
    CALIBRATION,
    MIB,
    MemoryCalibration,
    MemorySample,
    derive_calibration,
    training_memory_upper_bound,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "bench" / "cost_model" / "results.json"
GROUPS = (("mobilenetv3", "digits"), ("mobilenetv3", "fashion_mnist"),
          ("darts_s2", "fashion_mnist"), ("vit", "fashion_mnist"))


def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_cost_model", ROOT / "benchmarks" / "bench_cost_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def space_values(space_name: str, dataset: str) -> dict[str, Any]:
    """The space's config as the dataset's run sizes it."""
    cfg = compose((f"search_space={space_name}", f"dataset={dataset}"))
    values = OmegaConf.to_container(cfg.search_space, resolve=True)
    assert isinstance(values, dict)
    return space_for_dataset({str(k): v for k, v in values.items()}, dataset)


@functools.cache
def supernet_for(space_name: str, dataset: str) -> Supernet:
    info = dataset_info(dataset)
    torch.manual_seed(0)
    return get_space(**space_values(space_name, dataset)).build_supernet(
        num_classes=info.num_classes, in_channels=info.in_channels, image_size=info.image_size)


def some_archs(supernet: Supernet) -> list[Arch]:
    space, rng = supernet.space, np.random.default_rng(7)
    return [space.min_arch(), space.max_arch(), space.sample(rng), space.sample(rng)]


def results() -> dict[str, Any]:
    return json.loads(RESULTS.read_text())  # type: ignore[no-any-return]


def as_cost(memory_bytes: int) -> Cost:
    return Cost(params=0, flops=0, activation_bytes=0, memory_bytes=memory_bytes,
                payload_bytes=0)


# -- FLOPs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("space_name", "dataset"), GROUPS)
def test_cost_model_macs_are_the_flop_counters_flops_halved(space_name: str, dataset: str) -> None:
    # Prepare
    supernet, batch = supernet_for(space_name, dataset), 2
    t = supernet.task
    x = torch.randn(batch, t.in_channels, t.image_size, t.image_size)
    for arch in some_archs(supernet):
        net = supernet.extract(arch).eval()
        # Execute: attention by the math backend, whose matmuls the counter sees
        with sdpa_kernel(SDPBackend.MATH), torch.no_grad(), FlopCounterMode(
                display=False) as counter:
            net(x)
        # Assert: FLOPs = 2 x MACs of convolutions and matrix products, within 1 %
        macs = supernet.cost(arch, batch_size=batch).flops
        assert macs == pytest.approx(counter.get_total_flops() / 2, rel=0.01), arch.to_str()


def test_the_committed_flop_comparison_agrees_for_every_sampled_arch() -> None:
    for group in results()["groups"]:
        for record in group["records"]:
            assert record["flops"] == pytest.approx(record["counter_flops"] / 2, rel=0.01)


# -- the simulation's estimate is not touched ---------------------------------------------------
MAX_ARCH_MEMORY_AT_32 = {("mobilenetv3", "digits"): 21420296,
                         ("mobilenetv3", "fashion_mnist"): 13435832,
                         ("darts_s2", "fashion_mnist"): 528492248,
                         ("vit", "fashion_mnist"): 62753080}


@pytest.mark.parametrize(("space_name", "dataset"), GROUPS)
def test_the_simulations_memory_estimate_is_unchanged(space_name: str, dataset: str) -> None:
    # Simulated budgets are fractions of this figure: it must not move with the bound.
    supernet = supernet_for(space_name, dataset)
    cost = supernet.cost(supernet.space.max_arch(), batch_size=32)
    assert cost.memory_bytes == MAX_ARCH_MEMORY_AT_32[(space_name, dataset)]


# -- the deployment's upper bound -----------------------------------------------------------------
def test_every_registered_space_has_a_calibration() -> None:
    assert set(CALIBRATION) == set(SPACES)


def test_an_unknown_space_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="no memory calibration for search space 'nope'"):
        training_memory_upper_bound(as_cost(1), "nope")


def test_the_estimate_undercounts_what_training_really_takes() -> None:
    # The finding behind the bound: in real bytes every sampled subnet needs more than
    # cost.memory_bytes, the smallest ones several times more.
    records = [(g["space"], r) for g in results()["groups"] for r in g["records"]]
    assert len(records) >= 80
    assert all(r["rss_peak_bytes"] > r["memory_bytes"] for _, r in records)
    assert min(r["memory_bytes"] / r["rss_peak_bytes"] for _, r in records) < 0.2


def test_the_bound_covers_every_committed_measurement() -> None:
    for group in results()["groups"]:
        for record in (*group["records"], *group["batches"]):
            bound = training_memory_upper_bound(as_cost(record["memory_bytes"]), group["space"])
            assert bound >= record["rss_peak_bytes"], (group["space"], record["arch"])
            assert bound >= record["memory_bytes"]


def test_the_shipped_calibration_is_what_the_committed_measurements_derive() -> None:
    assert bench().calibrations(results()) == dict(CALIBRATION)


def test_the_results_page_shows_the_benchmarks_tables() -> None:
    page = (ROOT / "docs" / "MEASUREMENTS.md").read_text()
    block = re.search(r"<!-- rendered by benchmarks/bench_cost_model.py --table -->\n(.*?)"
                      r"<!-- end of the rendered tables -->", page, re.S)
    assert block is not None
    assert block.group(1) == bench().render_tables(results())


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK),
                    reason="needs Linux's /proc/self/clear_refs to reset the peak RSS")
def test_a_fresh_process_trains_the_smallest_subnet_within_its_bound() -> None:
    # Prepare: the space's smallest subnet, dominated by the bound's constant
    supernet = supernet_for("mobilenetv3", "digits")
    arch = supernet.space.min_arch()
    cost = supernet.cost(arch, batch_size=32)
    job = {"space": space_values("mobilenetv3", "digits"), "task": [10, 1, 8], "threads": 1,
           "arch": arch.to_str(), "batch_size": 32}
    # Execute
    measured = bench().measure(job)["rss_peak_bytes"]
    # Assert
    assert cost.memory_bytes < measured <= training_memory_upper_bound(cost, "mobilenetv3")


def test_derive_calibration_fits_a_line_and_adds_its_margins() -> None:
    # Prepare: measured = 2 x estimate + 10 MiB exactly
    samples = [MemorySample(e * MIB, (2 * e + 10) * MIB) for e in (10, 20, 40)]
    # Execute
    quiet, noisy = derive_calibration(samples, 0.0), derive_calibration(samples, 1.0 * MIB)
    # Assert: factor 2 x 1.1 = 2.2; constant max(30 - 22, 50 - 44, 90 - 88) = 8 MiB (+ 3 sd)
    assert quiet == MemoryCalibration(factor=2.2, constant_bytes=8 * MIB)
    assert noisy == MemoryCalibration(factor=2.2, constant_bytes=11 * MIB)
    assert all(noisy.bound(s.estimate_bytes) >= s.measured_bytes + 3 * MIB for s in samples)


def test_derive_calibration_never_scales_the_estimate_down() -> None:
    samples = [MemorySample(e * MIB, math.ceil(0.5 * e + 30) * MIB) for e in (10, 20, 40)]
    assert derive_calibration(samples, 0.0).factor == 1.1
