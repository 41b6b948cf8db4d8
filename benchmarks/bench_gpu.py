"""Client training against a plain PyTorch loop, and what a round and a paper cell take, on
the device this process finds (CUDA when present, else CPU).

    .venv/bin/python benchmarks/bench_gpu.py                   # the main job's model (digits)
    .venv/bin/python benchmarks/bench_gpu.py --preset paper    # bench=paper_cifar10's largest
    .venv/bin/python benchmarks/bench_gpu.py --preset paper --rounds 2   # + rounds, projected

1. **The plain-loop limit**: the same model, batch and data in a loop a PyTorch user would
   write: ``torch.optim.SGD`` (momentum, weight decay; its default implementation for the
   device), index batches from one ``randperm`` per epoch, the loss read once per epoch.
2. **pfednas's client loop**, ``pfednas.train.train_epochs``, on the same model (a fresh copy
   of the same initial weights), data and batch; the ratio of the two throughputs.
3. With ``--rounds R``: ``R`` rounds and the final evaluation of the preset's configuration
   (``--method``, default FedAvg+FT with its largest model) in the in-process runner
   (``--workers W``: a round's clients in W processes side by side), their wall times, and a
   cell's projected time (the preset's rounds × the median round + the final evaluation).

Each throughput is the median of ``--repeats`` timed passes after one warm-up pass, the two
loops' passes alternated. The model
is the search space's largest subnet for the preset's data shape; the data is random inputs
of that shape (the loop's speed does not depend on the pixels).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
PRESETS = {
    # the README's main job: PerFedRLNAS on digits, K = 20, R = 60 (its largest subnet)
    "main": {"dataset": "digits", "overrides": [], "rounds": 60},
    # conf/bench/paper_cifar10.yaml: K = 100, N = 5, E = 5, R = 500, CIFAR-10
    "paper": {"dataset": "cifar10", "rounds": 500, "overrides": [
        "dataset=cifar10", "federation.num_clients=100", "federation.clients_per_round=5",
        "federation.local_epochs=5", "federation.num_rounds=500",
        "dataset.max_samples_per_client=null"]},
}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                y: torch.Tensor, batch: int, generator: torch.Generator) -> float:
    """One epoch as a PyTorch user writes it; the loss read once, at its end."""
    total = torch.zeros((), device=x.device)
    order = torch.randperm(len(y), generator=generator).to(x.device)
    for begin in range(0, len(y), batch):
        idx = order[begin:begin + batch]
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(idx)
    return float(total) / len(y)


def timed(passes: int, run: object) -> list[float]:
    seconds = []
    for _ in range(passes):
        start = time.perf_counter()
        run()  # type: ignore[operator]
        seconds.append(time.perf_counter() - start)
    return seconds


def loop_throughputs(preset: str, batch: int, samples: int, repeats: int,
                     device: torch.device) -> dict[str, float]:
    """Samples per second of the plain loop and of ``train_epochs`` on the largest subnet."""
    from pfednas.config import compose, settings_from_cfg, task_shape
    from pfednas.data import ArrayDataset
    from pfednas.methods.fixed import seeded_supernet
    from pfednas.seeding import torch_generator
    from pfednas.train import Hyper, train_epochs

    settings = settings_from_cfg(compose(PRESETS[preset]["overrides"]))  # type: ignore[arg-type]
    task = task_shape(settings)
    initial = seeded_supernet(settings).extract(settings.search_space.build().max_arch())
    fed = settings.federation
    hyper = Hyper(lr=fed.lr, momentum=fed.momentum, weight_decay=fed.weight_decay,
                  batch_size=batch)
    rng = np.random.default_rng(0)
    shape = (samples, task.in_channels, task.image_size, task.image_size)
    data = ArrayDataset(x=rng.standard_normal(shape, dtype=np.float32),
                        y=rng.integers(0, task.num_classes, samples))

    plain_model = copy.deepcopy(initial).to(device).train()
    optimizer = torch.optim.SGD(plain_model.parameters(), lr=hyper.lr, momentum=hyper.momentum,
                                weight_decay=hyper.weight_decay)
    x = torch.as_tensor(data.x, device=device)
    y = torch.as_tensor(data.y, device=device)
    generator = torch.Generator().manual_seed(0)

    def plain() -> None:
        plain_epoch(plain_model, optimizer, x, y, batch, generator)
        synchronize(device)

    ours_model = copy.deepcopy(initial)
    ours_generator = torch_generator(0, 3)

    def ours() -> None:
        train_epochs(ours_model, data, epochs=1, hyper=hyper, generator=ours_generator,
                     device=device)
        synchronize(device)

    plain(), ours()  # warm-up: allocator, kernels, the first batch's cost count
    seconds: dict[str, list[float]] = {"plain": [], "pfednas": []}
    for _ in range(repeats):  # alternated, so a drift of the machine's speed hits both alike
        seconds["plain"] += timed(1, plain)
        seconds["pfednas"] += timed(1, ours)
    results = {name: samples / statistics.median(times) for name, times in seconds.items()}
    results["parameters"] = float(sum(p.numel() for p in initial.parameters()))
    return results


def round_times(preset: str, method: str, rounds: int, workers: int) -> dict[str, float]:
    """``rounds`` rounds and the final evaluation of the preset in the in-process runner, its
    clients in ``workers`` processes side by side."""
    from pfednas.run.inprocess import run_inprocess

    overrides = [*PRESETS[preset]["overrides"], f"method={method}",  # type: ignore[misc]
                 f"federation.num_rounds={rounds}", f"federation.eval_every={rounds}",
                 "checkpoint_every=0", "progress=false"]
    if method in ("fedavg", "local", "fedrep", "fedbabu"):
        overrides.append("method.arch=max")
    run = run_inprocess(overrides, workers=workers)
    final = float(run.summary.get("eval_seconds", {}).get("final", float("nan")))
    walls = [float(r.wall_seconds) for r in run.records]
    return {"round_median": statistics.median(walls), "round_max": max(walls),
            "final_eval": final}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="main")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=0,
                        help="also time this many rounds and the final evaluation")
    parser.add_argument("--method", default="fedavg")
    parser.add_argument("--workers", type=int, default=1,
                        help="the rounds' clients in this many processes side by side")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device: {device_name(device)}; torch {torch.__version__}; preset {args.preset}; "
          f"batch {args.batch}; {args.samples} samples a pass; median of {args.repeats}")
    loops = loop_throughputs(args.preset, args.batch, args.samples, args.repeats, device)
    print(f"largest subnet: {int(loops['parameters']):,} parameters")
    print("| loop | samples/s | ratio to plain |\n|---|---|---|")
    for name in ("plain", "pfednas"):
        print(f"| {name} | {loops[name]:,.0f} | {loops[name] / loops['plain']:.3f} |")
    if args.rounds > 0:
        times = round_times(args.preset, args.method, args.rounds, args.workers)
        total = PRESETS[args.preset]["rounds"]
        projected = total * times["round_median"] + times["final_eval"]  # type: ignore[operator]
        print(f"{args.method}, {args.workers} worker(s): {args.rounds} rounds, median "
              f"{times['round_median']:.2f} s "
              f"(max {times['round_max']:.2f} s); final evaluation {times['final_eval']:.1f} s; "
              f"a cell of {total} rounds projected at {projected / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
