"""The cost model against PyTorch's own counts: FLOPs and training memory, per search space.

    .venv/bin/python benchmarks/bench_cost_model.py [--samples 20] [--out docs/bench/cost_model]
    .venv/bin/python benchmarks/bench_cost_model.py --table   # the tables from the committed JSON

For each search space as a dataset config sizes it (``mobilenetv3`` on digits 8×8 and
on Fashion-MNIST 28×28, ``darts_s2`` and ``vit`` on Fashion-MNIST), the smallest, the
largest and ``--samples`` seeded uniform architectures, at the run's batch size:

* **FLOPs.** ``Supernet.cost(arch).flops`` counts multiply-accumulates (MACs) of one
  forward pass. ``torch.utils.flop_counter.FlopCounterMode`` counts FLOPs = 2 × MACs of
  convolutions and matrix products (no bias, normalisation or activation, like the cost
  model), so the comparison is ``cost.flops`` against the counter's total / 2, on the
  extracted subnet's forward pass with attention run by PyTorch's math backend (the
  counter has no formula for the fused CPU attention kernel of PyTorch 2.14 and would
  skip it). Backward FLOPs are not compared: the counter's formula for a convolution's
  weight gradient ignores groups (a depthwise conv's is counted channels × too high).
* **Training memory.** Each architecture is measured in a fresh interpreter (a
  deployed ClientApp is a fresh process per message): after importing PyTorch and
  pfednas and making two batches of data, the process's peak resident set (``VmHWM``)
  is reset to its current size (``/proc/self/clear_refs``, after ``malloc_trim``); then
  the subnet is built and trained two steps with ``pfednas.train.train_epochs`` (SGD
  with momentum, one torch thread); the measured peak is ``VmHWM`` minus the resident
  size at the reset. That is what a container's memory limit sees of the training,
  code pages first touched included (``rss_file_bytes``: how much of the growth is
  file-backed). Noise: the smallest, the largest and the median architecture are
  measured twice more, each in its own process. The same process then trains a fresh
  copy under ``torch.profiler`` (``profile_memory``) for the peak of live tensor bytes
  (``tensor_peak_bytes``: the tensors the estimate counts, without the runtime around
  them; no noise).
* **The bound.** :func:`pfednas.search.memory_bound.derive_calibration` per space over
  all memory measurements (batch sizes 8 and 64 too), printed as the values
  ``CALIBRATION`` holds.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

GROUPS = (("mobilenetv3", "digits"), ("mobilenetv3", "fashion_mnist"),
          ("darts_s2", "fashion_mnist"), ("vit", "fashion_mnist"))
EXTRA_BATCHES = (8, 64)
REPEATS = 2  # extra fresh-process measurements of the min, median and max architectures
STEPS = 2
THREADS = 1
OUT = Path("docs/bench/cost_model")
MIB = 2**20


# -- one measurement, in a fresh interpreter ------------------------------------------------------
def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {key}")


def measure_one(job: dict[str, Any]) -> dict[str, int]:
    """Peak RSS growth (and live-tensor peak) of building ``job['arch']`` and training it."""
    import numpy as np
    import torch

    from pfednas.data.arrays import ArrayDataset
    from pfednas.search import TaskShape, get_space
    from pfednas.train import Hyper, train_epochs

    torch.set_num_threads(int(job["threads"]))
    space, task = get_space(**job["space"]), TaskShape(*job["task"])
    config = space.net_config(space.arch_from_str(job["arch"]), task)
    batch = int(job["batch_size"])
    rng = np.random.default_rng(0)
    data = ArrayDataset(
        rng.standard_normal((STEPS * batch, task.in_channels, task.image_size, task.image_size)
                            ).astype(np.float32),
        rng.integers(0, task.num_classes, STEPS * batch))
    hyper = Hyper(lr=0.1, momentum=0.9, weight_decay=5e-4, batch_size=batch)

    def train() -> None:
        net = space.build_net(config, task)
        train_epochs(net, data, epochs=1, hyper=hyper, generator=torch.Generator().manual_seed(0),
                     device=torch.device("cpu"))

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident size
    base, file_base = _status_bytes("VmRSS"), _status_bytes("RssFile")
    train()
    out = {"rss_peak_bytes": _status_bytes("VmHWM") - base,
           "rss_file_bytes": _status_bytes("RssFile") - file_base}
    if job.get("tensor_peak"):
        out["tensor_peak_bytes"] = _tensor_peak(train)
    return out


def _tensor_peak(fn: Any) -> int:
    """Peak of live bytes allocated by PyTorch's CPU allocator while ``fn`` runs (profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def measure(job: dict[str, Any]) -> dict[str, int]:
    """:func:`measure_one` in a fresh interpreter."""
    done = subprocess.run([sys.executable, __file__, "--measure-one", json.dumps(job)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# -- FLOPs, in this process -----------------------------------------------------------------------
def counted_flops(net: Any, x: Any) -> int:
    """FlopCounterMode's FLOPs (2 × MACs) of one forward pass, attention by the math backend."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with sdpa_kernel(SDPBackend.MATH), torch.no_grad(), FlopCounterMode(display=False) as counter:
        net.eval()(x)
    return int(counter.get_total_flops())


# -- one space ------------------------------------------------------------------------------------
def space_setup(space_name: str, dataset: str) -> tuple[dict[str, Any], tuple[int, int, int], int]:
    """The space's config as the dataset sizes it, the task shape and the run's batch size."""
    from omegaconf import OmegaConf

    from pfednas.config import compose, space_for_dataset
    from pfednas.data import dataset_info

    cfg = compose((f"search_space={space_name}", f"dataset={dataset}"))
    space = OmegaConf.to_container(cfg.search_space, resolve=True)
    assert isinstance(space, dict)
    info = dataset_info(dataset)
    return (space_for_dataset({str(k): v for k, v in space.items()}, dataset),
            (info.num_classes, info.in_channels, info.image_size), int(cfg.federation.batch_size))


def run_group(space_name: str, dataset: str, samples: int, log: Any) -> dict[str, Any]:
    import numpy as np
    import torch

    from pfednas.search import get_space

    space_cfg, task, batch = space_setup(space_name, dataset)
    space = get_space(**space_cfg)
    torch.manual_seed(0)
    supernet = space.build_supernet(num_classes=task[0], in_channels=task[1], image_size=task[2])
    rng = np.random.default_rng(0)
    archs = [("min", space.min_arch()), ("max", space.max_arch())]
    archs += [("random", space.sample(rng)) for _ in range(samples)]
    job = {"space": space_cfg, "task": task, "threads": THREADS}
    x = torch.randn(batch, task[1], task[2], task[2], generator=torch.Generator().manual_seed(0))
    records: list[dict[str, Any]] = []
    for kind, arch in archs:
        cost = supernet.cost(arch, batch_size=batch)
        forward = counted_flops(supernet.extract(arch), x)
        measured = measure({**job, "arch": arch.to_str(), "batch_size": batch, "tensor_peak": True})
        records.append({"kind": kind, "arch": arch.to_str(), "params": cost.params,
                        "flops": cost.flops, "activation_bytes": cost.activation_bytes,
                        "memory_bytes": cost.memory_bytes, "counter_flops": forward, **measured})
        print(f"  {space_name}/{dataset} {kind:6s} est {cost.memory_bytes / MIB:7.1f} MiB  "
              f"measured {measured['rss_peak_bytes'] / MIB:7.1f} MiB  "
              f"MACs {cost.flops} vs {forward / 2:.0f}", file=log, flush=True)
    by_estimate = sorted(records, key=lambda r: r["memory_bytes"])
    repeated = [by_estimate[0], by_estimate[len(by_estimate) // 2], by_estimate[-1]]
    repeats = [{"arch": r["arch"], "rss_peak_bytes": [r["rss_peak_bytes"]] + [
        measure({**job, "arch": r["arch"], "batch_size": batch})["rss_peak_bytes"]
        for _ in range(REPEATS)]} for r in repeated]
    batches = []
    for b in EXTRA_BATCHES:
        for kind, arch in archs[:2]:
            batches.append({"kind": kind, "arch": arch.to_str(), "batch_size": b,
                            "memory_bytes": supernet.cost(arch, batch_size=b).memory_bytes,
                            **measure({**job, "arch": arch.to_str(), "batch_size": b})})
    return {"space": space_name, "dataset": dataset, "batch_size": batch, "task": list(task),
            "records": records, "repeats": repeats, "batches": batches}


# -- summaries (pure) -----------------------------------------------------------------------------
def noise_sd(group: dict[str, Any]) -> float:
    """Largest standard deviation of a repeated architecture's measured peaks, in bytes."""
    return max(statistics.stdev(r["rss_peak_bytes"]) for r in group["repeats"])


def memory_samples(groups: list[dict[str, Any]]) -> list[Any]:
    from pfednas.search.memory_bound import MemorySample

    return [MemorySample(r["memory_bytes"], r["rss_peak_bytes"])
            for g in groups for r in (*g["records"], *g["batches"])]


def calibrations(results: dict[str, Any]) -> dict[str, Any]:
    """:func:`derive_calibration` per space, over every group of that space."""
    from pfednas.search.memory_bound import derive_calibration

    spaces = sorted({g["space"] for g in results["groups"]})
    out = {}
    for name in spaces:
        groups = [g for g in results["groups"] if g["space"] == name]
        out[name] = derive_calibration(memory_samples(groups), max(map(noise_sd, groups)))
    return out


def _median_range(values: list[float], digits: int = 2) -> str:
    return (f"{statistics.median(values):.{digits}f} "
            f"({min(values):.{digits}f}–{max(values):.{digits}f})")


def render_tables(results: dict[str, Any]) -> str:
    """The results page's two tables (``--table``), from the benchmark's JSON."""
    from pfednas.search.memory_bound import CALIBRATION, training_memory_upper_bound

    lines = [
        "| space (dataset, batch) | archs | MACs model / counter | estimate, MiB "
        "| measured, MiB | of it code pages, MiB | estimate / measured | estimate / tensor peak "
        "| noise sd, MiB | bound / measured |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for g in results["groups"]:
        recs = g["records"]
        macs = [r["flops"] / (r["counter_flops"] / 2) for r in recs]
        bound = [training_memory_upper_bound(_cost(r), g["space"]) / r["rss_peak_bytes"]
                 for r in (*recs, *g["batches"])]
        lines.append(
            f"| {g['space']} ({g['dataset']}, {g['batch_size']}) | {len(recs)} "
            f"| {min(macs):.4f}–{max(macs):.4f} "
            f"| {_median_range([r['memory_bytes'] / MIB for r in recs], 1)} "
            f"| {_median_range([r['rss_peak_bytes'] / MIB for r in recs], 1)} "
            f"| {statistics.median(r['rss_file_bytes'] / MIB for r in recs):.1f} "
            f"| {_median_range([r['memory_bytes'] / r['rss_peak_bytes'] for r in recs])} "
            f"| {_median_range([r['memory_bytes'] / r['tensor_peak_bytes'] for r in recs])} "
            f"| {noise_sd(g) / MIB:.2f} | {_median_range(bound)} |")
    lines += ["", "| space | factor | constant, MiB | `CALIBRATION` holds these |",
              "|---|---|---|---|"]
    for name, cal in calibrations(results).items():
        same = "yes" if CALIBRATION.get(name) == cal else f"no: {CALIBRATION.get(name)}"
        lines.append(f"| {name} | {cal.factor:.2f} | {cal.constant_bytes // MIB} | {same} |")
    return "\n".join(lines) + "\n"


def _cost(record: dict[str, Any]) -> Any:
    """A :class:`Cost` carrying a record's memory estimate (all the bound reads)."""
    from pfednas.search.arch import Cost

    return Cost(params=record.get("params", 0), flops=record.get("flops", 0),
                activation_bytes=record.get("activation_bytes", 0),
                memory_bytes=record["memory_bytes"], payload_bytes=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20, help="random archs per space")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--table", action="store_true", help="print the tables from --out")
    parser.add_argument("--measure-one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_one:
        print(json.dumps(measure_one(json.loads(args.measure_one))))
        return
    path = args.out / "results.json"
    if args.table:
        print(render_tables(json.loads(path.read_text())), end="")
        return
    import torch

    torch.set_num_threads(THREADS)
    start, load = time.time(), os.getloadavg()
    groups = [run_group(s, d, args.samples, sys.stderr) for s, d in GROUPS]
    results = {
        "command": "benchmarks/bench_cost_model.py " + " ".join(sys.argv[1:]),
        "date": datetime.date.today().isoformat(), "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpus": os.cpu_count(),
        "threads": THREADS, "steps": STEPS, "load_before": list(load),
        "load_after": list(os.getloadavg()), "seconds": round(time.time() - start, 1),
        "groups": groups,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(render_tables(results), end="")
    for name, cal in calibrations(results).items():
        print(f'    "{name}": MemoryCalibration(factor={cal.factor}, '
              f"constant_bytes={cal.constant_bytes // MIB} * MIB),")


if __name__ == "__main__":
    main()
