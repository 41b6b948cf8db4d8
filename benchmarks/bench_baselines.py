"""Baselines on one budget: Fashion-MNIST, Dirichlet α = 0.1 and 0.3, K = 50, N = 5.

Runs ``pfednas`` once per (method, α) with identical partitions (same seed), the
same rounds, local epochs, batch size, learning rate and fine-tuning epochs, and
prints one Markdown table of personalized accuracy (mean ± std over all K
clients, p10), wall time and traffic, read from each run's ``summary.json``.

    .venv/bin/python benchmarks/bench_baselines.py                 # the full budget (hours on CPU)
    .venv/bin/python benchmarks/bench_baselines.py --rounds 2 --max-samples 200 \\
        --methods fedavg,fedrep --alphas 0.3                      # a smoke-sized run

Methods: ``fedavg`` (+FT), ``local``, ``fedrep``, ``fedbabu`` on the fixed
``--arch`` of the ``mobilenetv3`` space (default: its largest subnet), ``fednas``
on ``darts_s2``, and ``perfedrlnas`` (the method they are compared with).
Results and logs stay in ``--out`` (default: a fresh ``outputs/bench_baselines_...``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PFEDNAS = Path(sys.executable).parent / "pfednas"
FIXED_ARCH = ("fedavg", "local", "fedrep", "fedbabu")
FINETUNED = ("fedavg", "fedrep", "fedbabu", "fednas")
DEFAULT_METHODS = "fedavg,local,fedrep,fedbabu,fednas,perfedrlnas"


def overrides(method: str, alpha: float, args: argparse.Namespace) -> list[str]:
    """The run's Hydra overrides: one federation and data budget for every method."""
    out = [f"method={method}", "dataset=fashion_mnist", f"dataset.alpha={alpha}",
           f"federation.num_clients={args.clients}",
           f"federation.clients_per_round={args.per_round}",
           f"federation.num_rounds={args.rounds}", f"federation.local_epochs={args.epochs}",
           f"federation.eval_every={args.rounds}", f"seed={args.seed}", "checkpoint_every=0",
           "progress=false"]
    if args.max_samples is not None:
        out.append(f"dataset.max_samples_per_client={args.max_samples}")
    if method in FIXED_ARCH:
        out.append(f"method.arch={args.arch}")
    if method in FINETUNED:
        out.append(f"method.finetune_epochs={args.finetune_epochs}")
    if method == "fednas":
        out.append("search_space=darts_s2")
    return out


def run(method: str, alpha: float, args: argparse.Namespace) -> dict[str, Any]:
    out = args.out / f"{method}_alpha{alpha}"
    command = [str(PFEDNAS), *overrides(method, alpha, args), f"hydra.run.dir={out}"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        print(f"{method} alpha={alpha} failed ({done.returncode}):\n{done.stderr[-2000:]}",
              file=sys.stderr)
        return {"method": method, "alpha": alpha, "failed": done.returncode, "seconds": seconds}
    summary = json.loads((out / "summary.json").read_text())
    return {"method": method, "alpha": alpha, "seconds": seconds,
            "acc_mean": summary["personalized_acc_mean"],
            "acc_std": summary["personalized_acc_std"],
            "acc_p10": summary["personalized_acc_p10"], "bytes_up": summary["bytes_up"],
            "bytes_down": summary["bytes_down"], "command": " ".join(command[1:-1])}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| method | α | personalized acc (mean ± std) | p10 | wall s | MB up | MB down |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['method']} | {r['alpha']} | failed | | {r['seconds']:.0f} | | |")
            continue
        lines.append(f"| {r['method']} | {r['alpha']} | {r['acc_mean']:.4f} ± {r['acc_std']:.4f} "
                     f"| {r['acc_p10']:.4f} | {r['seconds']:.0f} | {r['bytes_up'] / 1e6:.1f} "
                     f"| {r['bytes_down'] / 1e6:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default=DEFAULT_METHODS)
    parser.add_argument("--alphas", default="0.1,0.3")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--per-round", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--arch", default="max", help="fixed arch of the FedAvg/Local/FedRep/"
                        "FedBABU model: max | min | an arch string")
    parser.add_argument("--max-samples", type=int, default=None,
                        help="per-client sample cap (default: the dataset config's, 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / time.strftime(
        "bench_baselines_%Y%m%d_%H%M%S"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for alpha in (float(a) for a in args.alphas.split(",")):
        for method in args.methods.split(","):
            rows.append(run(method, alpha, args))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    print(f"\n{table(rows)}\n\nresults: {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
