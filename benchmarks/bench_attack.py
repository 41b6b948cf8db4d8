"""Issue 61's finding 1 under each aggregation rule: one client that returns what it received
plus a constant on every float entry, at 1 hostile of 3 a round and at exactly half.

    .venv/bin/python benchmarks/bench_attack.py

In-process FedAvg on synthetic data (the review's run: 4 clients, the update norm bound at
10, 6 rounds of 2 local epochs, α = 100, no fine-tuning), client 0 hostile whenever it is
sampled (rounds 2-6 at 3 a round; rounds 2, 3 and 6 at 2). Per rule and number a round: the
honest run, and the hostile client's shifts of +10 and +1000; each cell the final mean
personalized accuracy and, for an attacked run, the rounds where its reply was left out by
the rule's screen. A run that stops is marked with its error.
"""

from __future__ import annotations

import logging

from pfednas.run.inprocess import run_inprocess

BASE = ["method=fedavg", "dataset=synthetic", "method.arch=min", "federation.num_clients=4",
        "federation.num_rounds=6", "federation.eval_every=6", "federation.local_epochs=2",
        "dataset.alpha=100", "method.finetune_epochs=0", "federation.update_norm_bound=10",
        "checkpoint_every=0"]
RULES = ("mean", "median", "trimmed_mean")
SHIFTS = (None, 10.0, 1000.0)


def cell(rule: str, per_round: int, shift: float | None) -> str:
    args = [*BASE, f"federation.clients_per_round={per_round}",
            f"federation.aggregation={rule}"]
    if shift is not None:
        args.append(f"fault_injection={{clients: [0], kind: shift, shift: {shift}}}")
    try:
        run = run_inprocess(args)
    except ValueError as err:
        return f"stops ({err})"
    accuracy = f"{run.summary['personalized_acc_mean']:.3f}"
    if shift is None:
        return accuracy
    hit = [r.round for r in run.records if 0 in r.sampled]
    out = [r.round for r in run.records for row in r.train
           if row["client_id"] == 0 and row.get("screened_out")]
    return f"{accuracy} (left out {len(out)} of {len(hit)})"


def main() -> None:
    logging.disable(logging.WARNING)
    print("| hostile a round | rule | honest | +10 | +1000 |")
    print("|---|---|---|---|---|")
    for per_round in (3, 2):
        for rule in RULES:
            cells = [cell(rule, per_round, shift) for shift in SHIFTS]
            print(f"| 1 of {per_round} | {rule} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
