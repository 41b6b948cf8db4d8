"""PerFedRLNAS benchmark: server overhead, downlink ratio, scale, and accuracy vs baselines.

    .venv/bin/python benchmarks/bench_perfedrlnas.py overhead  # K=100: server time, downlink
    .venv/bin/python benchmarks/bench_perfedrlnas.py scale     # K=1000, 5 % participation
    .venv/bin/python benchmarks/bench_perfedrlnas.py accuracy [--rounds R] [--alphas 0.1,0.3]
        # Fashion-MNIST K=50 N=5: PerFedRLNAS vs FedAvg+FT vs Local

Every figure comes from a real `pfednas` run's metrics.jsonl / summary.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pfednas.config import compose, settings_from_cfg, task_shape

REPO = Path(__file__).resolve().parents[1]
PFEDNAS = Path(sys.executable).parent / "pfednas"


def run(args: list[str], out: Path) -> tuple[dict, list[dict], float]:
    start = time.perf_counter()
    subprocess.run([str(PFEDNAS), *args, f"hydra.run.dir={out}"], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    summary = json.loads((out / "summary.json").read_text())
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return summary, records, wall


def supernet_bytes(args: list[str]) -> int:
    settings = settings_from_cfg(compose([a for a in args if not a.startswith("hydra")]))
    task = task_shape(settings)
    supernet = settings.search_space.build().build_supernet(
        num_classes=task.num_classes, in_channels=task.in_channels, image_size=task.image_size)
    return sum(a.nbytes for a in supernet.state_arrays())


def overhead(work: Path) -> None:
    args = ["method=perfedrlnas", "dataset=synthetic", "dataset.synthetic_samples=6000",
            "federation.num_clients=100", "federation.clients_per_round=5",
            "federation.num_rounds=6", "federation.eval_every=6"]
    summary, records, wall = run(args, work / "overhead")
    train_rounds = [r for r in records[1:] if not r["evaluation"]]  # round 1: Ray start-up
    server = sum(r["server_seconds"] for r in train_rounds)
    round_wall = sum(r["wall_seconds"] for r in train_rounds)
    sent = sum(1 for r in train_rounds for row in r["train"] if not row.get("over_budget"))
    down = sum(r["bytes_down"] for r in train_rounds)
    full = supernet_bytes(args)
    print(f"K=100 N=5, {len(train_rounds)} training rounds: server time {server:.2f}s of "
          f"{round_wall:.2f}s round wall = {100 * server / round_wall:.1f} %")
    print(f"downlink per client per round {down / max(sent, 1) / 2**20:.3f} MiB, full supernet "
          f"{full / 2**20:.3f} MiB, ratio {down / max(sent, 1) / full:.3f}")
    print(f"whole command {wall:.0f}s, "
          f"server peak memory {summary['server_peak_memory_mb']:.0f} MB")


def scale(work: Path) -> None:
    args = ["method=perfedrlnas", "dataset=synthetic", "dataset.synthetic_samples=60000",
            "dataset.alpha=1.0", "dataset.min_partition_size=5",
            "federation.num_clients=1000", "federation.clients_per_round=50",
            "federation.num_rounds=3", "federation.eval_every=3",
            "federation.round_timeout=1800"]
    summary, _, wall = run(args, work / "scale")
    print(f"K=1000 N=50, 3 rounds: completed in {wall:.0f}s; evaluated "
          f"{summary['num_clients_evaluated']} clients; server peak memory "
          f"{summary['server_peak_memory_mb']:.0f} MB (ServerApp process incl. Ray driver)")


def accuracy(work: Path, rounds: int, alphas: list[float]) -> None:
    common = ["dataset=fashion_mnist", "federation.num_clients=50",
              "federation.clients_per_round=5", f"federation.num_rounds={rounds}",
              f"federation.eval_every={rounds}", "federation.local_epochs=2"]
    print("| alpha | method | personalized acc (mean ± std) | wall s |")
    print("|---|---|---|---|")
    for alpha in alphas:
        errors = {}
        for method in ("perfedrlnas", "fedavg", "local"):
            out = work / f"acc_{method}_{alpha}"
            summary, _, wall = run([f"method={method}", f"dataset.alpha={alpha}", *common], out)
            errors[method] = 1 - summary["personalized_acc_mean"]
            print(f"| {alpha} | {method} | {summary['personalized_acc_mean']:.4f} ± "
                  f"{summary['personalized_acc_std']:.4f} | {wall:.0f} |", flush=True)
        print(f"| {alpha} | error ratio PerFedRLNAS / FedAvg+FT | "
              f"{errors['perfedrlnas'] / errors['fedavg']:.2f} | |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("suite", choices=["overhead", "scale", "accuracy"])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--alphas", default="0.1,0.3")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.suite == "overhead":
            overhead(work)
        elif args.suite == "scale":
            scale(work)
        else:
            accuracy(work, args.rounds, [float(a) for a in args.alphas.split(",")])


if __name__ == "__main__":
    main()
