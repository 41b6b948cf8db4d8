"""Server-side subnet handling vs one client's local epoch, per default search space.

For each default space on digits (sklearn ``load_digits``: 1×8×8, 10 classes,
X / 16): time ``extract`` + ``slice`` of 10 sampled subnets and one
``overlap_average`` of them into the supernet, against one client's local
epoch (plain PyTorch SGD, batch 32, 1797 // 20 samples: one of 20 clients) on
the max arch and on a sampled arch.  Prints a markdown table; the target is a
merge (slice + overlap_average) ≤ 5 % of the epoch.

Run: ``.venv/bin/python benchmarks/bench_search.py`` (PYTHONPATH=src if the
package is not installed).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

from pfednas.nas.merge import overlap_average
from pfednas.search import SPACES, Arch, Supernet, get_space

NUM_SUBNETS, NUM_CLIENTS, BATCH, REPEATS = 10, 20, 32, 3


def best_of(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    """Fastest wall time of ``repeats`` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def local_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for i in range(0, len(x), BATCH):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[i : i + BATCH]), y[i : i + BATCH]).backward()
        opt.step()


def bench_space(name: str, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    space = get_space(name)
    supernet: Supernet = space.build_supernet(num_classes=10, in_channels=1, image_size=8)
    rng = np.random.default_rng(0)
    archs: list[Arch] = [space.sample(rng) for _ in range(NUM_SUBNETS)]
    base = supernet.state_arrays()
    sliced = [supernet.slice(a) for a in archs]

    def merge() -> list[np.ndarray]:
        contributions = [(supernet.regions(a), s, 1.0) for a, s in zip(archs, sliced, strict=True)]
        return overlap_average(base, contributions)

    row = {
        "extract": best_of(lambda: [supernet.extract(a) for a in archs]),
        "slice": best_of(lambda: [supernet.slice(a) for a in archs]),
        "merge": best_of(merge),
        "epoch_max": best_of(lambda: local_epoch(supernet.extract(space.max_arch()), x, y)),
        "epoch_sampled": best_of(lambda: local_epoch(supernet.extract(archs[0]), x, y)),
        "params_max": supernet.cost(space.max_arch()).params,
        "params_min": supernet.cost(space.min_arch()).params,
    }
    return row


def main() -> None:
    torch.manual_seed(0)
    digits = load_digits()
    n = len(digits.data) // NUM_CLIENTS
    x = torch.tensor(digits.data[:n] / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(digits.target[:n])
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {n} samples per client\n")
    print(
        "| space | params min / max | extract ×10 | slice ×10 | overlap_average | "
        "epoch (max arch) | epoch (sampled) | slice+merge / epoch max | "
        "extract+slice+merge / epoch max | / epoch sampled |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in sorted(SPACES):
        r = bench_space(name, x, y)
        server = r["slice"] + r["merge"]
        total = r["extract"] + server
        print(
            f"| {name} | {r['params_min'] / 1e3:.0f} k / {r['params_max'] / 1e3:.0f} k "
            f"| {r['extract'] * 1e3:.1f} ms | {r['slice'] * 1e3:.1f} ms "
            f"| {r['merge'] * 1e3:.1f} ms | {r['epoch_max'] * 1e3:.1f} ms "
            f"| {r['epoch_sampled'] * 1e3:.1f} ms | {100 * server / r['epoch_max']:.1f} % "
            f"| {100 * total / r['epoch_max']:.1f} % | {100 * total / r['epoch_sampled']:.1f} % |"
        )


if __name__ == "__main__":
    main()
