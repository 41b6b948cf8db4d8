"""What a robust aggregation rule costs the server in a round (issue 61's target: at most
10 % of a round's server time at K = 100).

    .venv/bin/python benchmarks/bench_aggregation.py [--clients 100] [--repeat 5]

FedAvg's and PerFedRLNAS's strategies as the server builds them (digits, the default search
space, the update norm bound on), K clients all sampled, so that each training round
aggregates K replies (PerFedRLNAS: K subnets of the supernet, merged entry by entry over the
clients holding each): the worst case of K = 100. Each reply is what the client was sent
plus a small seeded step, so the gate decodes and checks real arrays. Per rule, the server's
work of one round, each stage timed alone in this process's CPU seconds (a loaded machine
stretches wall time, not the work), the rules interleaved and each stage's best of
``--repeat`` kept: ``configure_train``
(K messages), ``aggregate_train`` (the gate, the norm bound and the rule) and
``configure_evaluate`` (the K evaluation messages); no client trains. The rule's cost is
its ``aggregate_train`` less the mean's, as a share of the round's server time under the
rule.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from pfednas.config import compose, settings_from_cfg
from pfednas.methods.build import build_strategy
from pfednas.nas.aggregation import AggregationRule
from pfednas.run.inprocess import NODE_OFFSET, _as_simulation

RULES = (AggregationRule(), AggregationRule("median"), AggregationRule("trimmed_mean"))


def cpu_seconds(work: Callable[[], Any]) -> float:
    tic = time.process_time()
    work()
    return time.process_time() - tic


def reply(cid: int, arrays: list[np.ndarray], rng: np.random.Generator) -> Message:
    """Client ``cid``'s training reply: what it was sent plus a small step on floats."""
    TaskIdentity._node_id = NODE_OFFSET + cid
    stepped = [np.asarray(a + rng.normal(0, 1e-3, a.shape).astype(a.dtype))
               if a.dtype.kind == "f" else a for a in arrays]
    metrics = {"client_id": cid, "num_examples": 10, "train_loss": 1.0, "train_seconds": 0.1,
               "val_accuracy": 0.5, "accuracy": 0.5}
    return Message(RecordDict({"arrays": ArrayRecord(numpy_ndarrays=stepped),
                               "metrics": MetricRecord(metrics)}),
                   dst_node_id=0, message_type=MessageType.TRAIN)


class Round:
    """One method's strategy, K clients' training replies, and its server work per rule."""

    def __init__(self, method: str, clients: int) -> None:
        settings = settings_from_cfg(compose([
            f"method={method}", f"federation.num_clients={clients}",
            f"federation.clients_per_round={clients}", "federation.update_norm_bound=10"]))
        with _as_simulation():
            self.strategy: Any = build_strategy(settings, deployment=False)
        self.strategy.node_of = {c: NODE_OFFSET + c for c in range(clients)}
        self.state = self.strategy.state()
        rng = np.random.default_rng(0)
        self.strategy.record(self.strategy.configure_train(1))
        requests = self.strategy.requests
        self.replies = [reply(c, requests[c].sent, rng) for c in sorted(requests)]
        self.entries = float(np.mean([sum(a.size for a in requests[c].sent
                                          if a.dtype.kind == "f") for c in requests]))
        TaskIdentity._node_id = 0  # the server's

    def stages(self, rule: AggregationRule) -> dict[str, float]:
        """CPU seconds of each stage of one round's server work under ``rule``."""
        strategy = self.strategy
        strategy.budget = dataclasses.replace(strategy.budget, aggregation=rule)
        strategy.load_state(self.state)
        configure = cpu_seconds(lambda: strategy.configure_train(1))
        sent = strategy.record(strategy.configure_train(1))
        aggregate = cpu_seconds(lambda: strategy.aggregate_train(1, self.replies, sent))
        evaluate = cpu_seconds(lambda: strategy.configure_evaluate(strategy.budget.num_rounds))
        return {"configure_train": configure, "aggregate_train": aggregate,
                "configure_evaluate": evaluate}


def measure(method: str, clients: int, repeat: int) -> dict[str, dict[str, float]]:
    """Each rule's best CPU seconds per stage, the rules interleaved ``repeat`` times."""
    one = Round(method, clients)
    best: dict[str, dict[str, float]] = {}
    for _ in range(repeat):
        for rule in RULES:
            for stage, seconds in one.stages(rule).items():
                row = best.setdefault(rule.rule, {"replies": len(one.replies),
                                                  "parameters": one.entries})
                row[stage] = min(row.get(stage, seconds), seconds)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--methods", nargs="+", default=["fedavg", "perfedrlnas"])
    args = parser.parse_args()
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = 1, 0, 1
    print("| method | replies (float entries each, mean) | rule | configure_train (CPU s) "
          "| aggregate_train (CPU s) | configure_evaluate (CPU s) | round's server time "
          "(CPU s) | the rule's cost (CPU s) | its share |")
    print("|---|---|---|---|---|---|---|---|---|")
    for method in args.methods:
        rows = measure(method, args.clients, args.repeat)
        for name, row in rows.items():
            total = row["configure_train"] + row["aggregate_train"] + row["configure_evaluate"]
            cost = row["aggregate_train"] - rows["mean"]["aggregate_train"]
            print(f"| {method} | {int(row['replies'])} ({int(row['parameters']):,}) | {name} | "
                  f"{row['configure_train']:.3f} | {row['aggregate_train']:.3f} | "
                  f"{row['configure_evaluate']:.3f} | {total:.3f} | {cost:+.3f} | "
                  f"{100 * cost / total:+.1f} % |", flush=True)


if __name__ == "__main__":
    main()
