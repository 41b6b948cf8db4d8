"""Foundation benchmark: main-job wall time, and simulation vs plain-PyTorch training throughput.

    .venv/bin/python benchmarks/bench_foundation.py [--dataset fashion_mnist] [--skip-main]

1. Wall time of the README's main job (``pfednas`` with no overrides), end to end.
2. Throughput: a FedAvg simulation with no intermediate evaluation; its training
   rounds (round 1 excluded: Ray start-up) give samples trained per second of
   round wall time, messaging and client set-up included. The same client
   trainings (same clients, model, data, epochs, batch size) are then replayed
   in one plain PyTorch process using every core, and the ratio is printed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from pfednas.config import compose, settings_from_cfg
from pfednas.data import load_client_data
from pfednas.methods import fixed_model_fn
from pfednas.seeding import CLIENT_TRAIN, torch_generator
from pfednas.train import Hyper, train_epochs

REPO = Path(__file__).resolve().parents[1]
PFEDNAS = Path(sys.executable).parent / "pfednas"


def run(args: list[str], out: Path) -> float:
    start = time.perf_counter()
    subprocess.run([str(PFEDNAS), *args, f"hydra.run.dir={out}"], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def throughput(dataset: str, workdir: Path) -> dict[str, float]:
    k, n, rounds, epochs, cap = 10, 2, 6, 2, 600
    args = ["method=fedavg", "method.arch=min", f"dataset={dataset}",
            f"federation.num_clients={k}",
            f"federation.clients_per_round={n}", f"federation.num_rounds={rounds}",
            f"federation.local_epochs={epochs}", f"federation.eval_every={rounds}",
            "method.finetune_epochs=0", f"dataset.max_samples_per_client={cap}"]
    out = workdir / f"sim_{dataset}"
    run(args, out)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rounds = [r for r in records[1:] if not r["evaluation"]]
    samples = sum(row["num_examples"] * epochs for r in train_rounds for row in r["train"])
    sim_seconds = sum(r["wall_seconds"] for r in train_rounds)

    settings = settings_from_cfg(compose(args))
    fed = settings.federation
    hyper = Hyper(lr=fed.lr, momentum=fed.momentum, weight_decay=fed.weight_decay,
                  batch_size=fed.batch_size)
    model_fn = fixed_model_fn(settings)
    torch.set_num_threads(torch.get_num_threads())
    jobs = [(r["round"], row["client_id"]) for r in train_rounds for row in r["train"]]
    datasets = {cid: load_client_data(settings.data, cid).train for _, cid in jobs}
    start = time.perf_counter()
    plain_samples = 0
    for rnd, cid in jobs:
        model = model_fn()
        gen = torch_generator(settings.seed, CLIENT_TRAIN, cid, rnd, 0)  # the client's own stream
        stats = train_epochs(model, datasets[cid], epochs=epochs, hyper=hyper, generator=gen,
                             device=torch.device("cpu"))
        plain_samples += stats.samples
    plain_seconds = time.perf_counter() - start
    return {"sim_samples_per_s": samples / sim_seconds,
            "plain_samples_per_s": plain_samples / plain_seconds,
            "ratio": (samples / sim_seconds) / (plain_samples / plain_seconds),
            "rounds_measured": len(train_rounds), "samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--skip-main", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.skip_main:
            print(f"main job wall time: {run([], work / 'main'):.1f} s", flush=True)
        result = throughput(args.dataset, work)
        print(f"throughput on {args.dataset}: simulation {result['sim_samples_per_s']:.0f} "
              f"samples/s, plain PyTorch {result['plain_samples_per_s']:.0f} samples/s, "
              f"ratio {result['ratio']:.2f} ({result['rounds_measured']} rounds, "
              f"{result['samples']} samples)")


if __name__ == "__main__":
    main()
