"""SPIDER vs Ditto vs FedAvg+FT on Fashion-MNIST, 8 clients, Dirichlet α = 0.2 (issue 5).

    .venv/bin/python benchmarks/bench_spider.py [--rounds 20] [--layers 5] [--channels 8]
        [--samples 500] [--warmup 2] [--methods spider,ditto,fedavg] [--out FILE]
        [--keep-runs DIR]

Every method runs through ``pfednas`` on identical partitions (same seed), full
participation (K = N = 8), one local epoch per round. SPIDER's search schedule
is shortened for CPU: warm-up ``t_s = --warmup`` rounds, then one edge per cell
type decided every round (τ = 1), so the 2 × 14 edges are decided by round
``t_s + 14`` and the remaining rounds are phase 3 (train + validation). Ditto is
the same trainer with the full supernet fixed; FedAvg+FT trains pfednas's fixed
CNN and fine-tunes it 10 local epochs before evaluating.

Prints one JSON object: per method the personalized accuracy mean ± std over the
8 clients, the local parameter counts, bytes per round; SPIDER's error as a
fraction of Ditto's (the paper: 10.2 % → 5.5 % on CIFAR-10) and its local model
size after search relative to the supernet. Not a test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PFEDNAS = Path(sys.executable).parent / "pfednas"


def common_args(a: argparse.Namespace) -> list[str]:
    return ["dataset=fashion_mnist", "dataset.alpha=0.2", "federation.num_clients=8",
            "federation.clients_per_round=8", f"federation.num_rounds={a.rounds}",
            f"federation.eval_every={a.rounds}", "federation.local_epochs=1",
            f"dataset.max_samples_per_client={a.samples}", f"seed={a.seed}",
            "checkpoint_every=0"]


def method_args(method: str, a: argparse.Namespace) -> list[str]:
    if method == "fedavg":
        return ["method=fedavg", "method.finetune_epochs=10"]
    space = ["search_space=darts_s2", f"search_space.layers={a.layers}",
             f"search_space.channels={a.channels}", f"method.lam={a.lam}"]
    if method == "spider":
        return ["method=spider", *space, f"method.warmup_rounds={a.warmup}",
                "method.recovery_rounds=1"]
    return ["method=ditto", *space]


def run(method: str, a: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    out = workdir / method
    args = [*method_args(method, a), *common_args(a)]
    start = time.perf_counter()
    subprocess.run([str(PFEDNAS), *args, f"hydra.run.dir={out}"], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    summary = json.loads((out / "summary.json").read_text())
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    final = records[-1]["evaluation"]
    params = [row["num_params"] for row in final]
    return {"command": f"pfednas {' '.join(args)}",
            "acc_mean": summary["personalized_acc_mean"],
            "acc_std": summary["personalized_acc_std"],
            "params_mean": sum(params) / len(params), "params_min": min(params),
            "params_max": max(params),
            "archs": [row.get("arch", "") for row in final],
            "bytes_per_round": (summary["bytes_up"] + summary["bytes_down"]) / a.rounds,
            "wall_seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--lam", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default="spider,ditto,fedavg")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--keep-runs", type=Path, default=None,
                        help="keep the run folders here (for `pfednas report`)")
    a = parser.parse_args()
    results: dict[str, Any] = {"settings": vars(a) | {"out": str(a.out),
                                                      "keep_runs": str(a.keep_runs)}}
    with tempfile.TemporaryDirectory(prefix="bench_spider_") as tmp:
        for method in a.methods.split(","):
            results[method] = run(method, a, a.keep_runs or Path(tmp))
            print(f"[bench_spider] {method}: {results[method]['acc_mean']:.4f} ± "
                  f"{results[method]['acc_std']:.4f}", file=sys.stderr, flush=True)
    if "spider" in results and "ditto" in results:
        s, d = results["spider"], results["ditto"]
        results["spider_error_over_ditto_error"] = (1 - s["acc_mean"]) / max(1 - d["acc_mean"],
                                                                             1e-12)
        results["spider_params_over_supernet"] = s["params_mean"] / d["params_mean"]
    text = json.dumps(results, indent=2)
    print(text)
    if a.out is not None:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
