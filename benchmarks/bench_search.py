"""Subnet handling vs one client's local epoch, per default search space.

For each default space on digits (sklearn ``load_digits``: 1×8×8, 10 classes,
X / 16), against one client's local epoch (plain PyTorch SGD, batch 32,
1797 // 20 samples: one of 20 clients) on the max arch and on a sampled arch:

* server side, per round of 10 subnets: ``slice`` of 10 sampled subnets and
  one ``overlap_average`` of them into the supernet (``regions`` included) —
  the issue's target is this merge ≤ 5 % of the epoch;
* client side: ``extract`` of one subnet (the client builds its network once
  per round), shown per subnet and as a share of the epoch;
* ``cost(arch, batch_size=32)`` per arch: first call for an arch (closed
  form), repeated call (memoised), and the ``meta``-forward reference
  (``Supernet._reference_cost``) it replaces.

Every repetition uses 10 *new* architectures, so per-architecture memos
(``regions``, ``extract`` templates, ``cost``) start cold, as for a server
that samples new architectures each round; "seen" columns repeat archs.
Times are the best of ``REPEATS`` (the machine may be shared).

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
from pfednas.search import SPACES, Arch, SearchSpace, Supernet, get_space

NUM_SUBNETS, NUM_CLIENTS, BATCH, REPEATS, COST_ARCHS = 10, 20, 32, 5, 50


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def best_of(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    """Fastest wall time of ``repeats`` calls, in seconds."""
    return min(timed(fn) for _ in range(repeats))


def local_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for i in range(0, len(x), BATCH):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[i : i + BATCH]), y[i : i + BATCH]).backward()
        opt.step()


def new_archs(space: SearchSpace, rng: np.random.Generator, n: int = NUM_SUBNETS) -> list[Arch]:
    return [space.sample(rng) for _ in range(n)]


def one_round(
    supernet: Supernet, archs: list[Arch], base: list[np.ndarray]
) -> tuple[float, float, float]:
    """Seconds of: extract of each arch; slice of each arch; regions + overlap_average of all."""
    t_extract = timed(lambda: [supernet.extract(a) for a in archs])
    start = time.perf_counter()
    sliced = [supernet.slice(a) for a in archs]
    t_slice = time.perf_counter() - start
    start = time.perf_counter()
    pairs = zip(archs, sliced, strict=True)
    overlap_average(base, [(supernet.regions(a), s, 1.0) for a, s in pairs])
    return t_extract, t_slice, time.perf_counter() - start


def bench_space(name: str, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    space = get_space(name)
    supernet: Supernet = space.build_supernet(num_classes=10, in_channels=1, image_size=8)
    rng = np.random.default_rng(0)
    base = supernet.state_arrays()
    row = {k: float("inf") for k in ("extract", "extract_seen", "slice", "merge")}
    seen = new_archs(space, rng)
    for _ in range(REPEATS):  # new archs per repetition: cold per-arch memos
        times = one_round(supernet, new_archs(space, rng), base)
        for key, t in zip(("extract", "slice", "merge"), times, strict=True):
            row[key] = min(row[key], t)
        row["extract_seen"] = min(row["extract_seen"], one_round(supernet, seen, base)[0])
    cost_archs = new_archs(space, rng, COST_ARCHS)
    row["cost_setup"] = timed(lambda: supernet.cost(space.max_arch(), batch_size=32))
    row["cost_first"] = timed(lambda: [supernet.cost(a, batch_size=32) for a in cost_archs])
    row["cost_first"] /= COST_ARCHS
    row["cost_seen"] = best_of(lambda: [supernet.cost(a, batch_size=32) for a in cost_archs])
    row["cost_seen"] /= COST_ARCHS
    row["cost_reference"] = best_of(
        lambda: supernet._reference_cost(cost_archs[0], batch_size=32), 2
    )
    sampled = seen[0]
    row["epoch_max"] = best_of(lambda: local_epoch(supernet.extract(space.max_arch()), x, y), 3)
    row["epoch_sampled"] = best_of(lambda: local_epoch(supernet.extract(sampled), x, y), 3)
    row["params_max"] = supernet.cost(space.max_arch()).params
    row["params_min"] = supernet.cost(space.min_arch()).params
    return row


def main() -> None:
    torch.manual_seed(0)
    digits = load_digits()
    n = len(digits.data) // NUM_CLIENTS
    x = torch.tensor(digits.data[:n] / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(digits.target[:n])
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"{n} samples per client, best of {REPEATS} (epochs: best of 3)\n"
    )
    rows = {name: bench_space(name, x, y) for name in sorted(SPACES)}

    print(f"Server side, one round of {NUM_SUBNETS} subnets (new archs each repetition)\n")
    print(
        "| space | params min / max | slice ×10 | overlap_average ×10 | **server** "
        "| epoch (max arch) | epoch (sampled) | **server / epoch max** | server / epoch sampled |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        server = r["slice"] + r["merge"]
        print(
            f"| {name} | {r['params_min'] / 1e3:.0f} k / {r['params_max'] / 1e3:.0f} k "
            f"| {r['slice'] * 1e3:.1f} ms | {r['merge'] * 1e3:.1f} ms | {server * 1e3:.1f} ms "
            f"| {r['epoch_max'] * 1e3:.1f} ms | {r['epoch_sampled'] * 1e3:.1f} ms "
            f"| **{100 * server / r['epoch_max']:.1f} %** "
            f"| {100 * server / r['epoch_sampled']:.1f} % |"
        )

    print("\nClient side: extract (one subnet per client per round)\n")
    print(
        "| space | extract ×10, new archs | extract ×10, seen archs | extract / subnet "
        "| extract / epoch sampled | extract+slice+merge ×10 / epoch max |"
    )
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        one = r["extract"] / NUM_SUBNETS
        total = r["extract"] + r["slice"] + r["merge"]
        print(
            f"| {name} | {r['extract'] * 1e3:.1f} ms | {r['extract_seen'] * 1e3:.1f} ms "
            f"| {one * 1e3:.2f} ms | {100 * one / r['epoch_sampled']:.1f} % "
            f"| {100 * total / r['epoch_max']:.1f} % |"
        )

    print(f"\ncost(arch, batch_size=32), per arch ({COST_ARCHS} new archs)\n")
    print(
        "| space | first call on this supernet (one-time set-up) | new arch (closed form) "
        "| repeated arch (memo) | meta-forward reference |"
    )
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['cost_setup'] * 1e3:.1f} ms | {r['cost_first'] * 1e3:.3f} ms "
            f"| {r['cost_seen'] * 1e6:.1f} µs | {r['cost_reference'] * 1e3:.0f} ms |"
        )


if __name__ == "__main__":
    main()
