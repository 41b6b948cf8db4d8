"""Where one deployed message's time goes, from process start to reply.

    .venv/bin/python benchmarks/bench_clientapp.py [--messages 4] [--no-cache] [--json F]

In a deployment, Flower 1.41 starts a fresh ``flwr-clientapp`` process for every
message. This benchmark replays that process's steps in fresh interpreters, one
per message, for one node (partition 0 of the ``bench_deploy.py`` config: FedAvg,
digits, 3 clients) answering a ``train`` message, and reports wall-clock and CPU
(user + system) seconds per phase; CPU seconds depend less on the machine's load:

* ``python_start``: spawn to the first line of the script (CPU: interpreter start);
* ``flwr_import``: ``flwr.supernode.cli.flwr_clientapp``, what the ``flwr-clientapp``
  entry point imports (Flower's own, whatever the app);
* ``app_import``: ``pfednas.app.client_app`` (what Flower's app loader imports);
* ``config``: :func:`pfednas.app.client_app.node_settings` (compose + validate);
* ``data``: :func:`pfednas.app.client_app.client_env` (the node's splits);
* ``model``: :func:`pfednas.app.client_app.make_client` given that env (the model);
* ``fit_other``: ``client.fit`` minus its own ``train_seconds``;
* ``train``: the client's ``train_seconds`` (the work a round is for; in CPU
  seconds, the fit's CPU up to that many seconds);
* ``reply``: the reply ``Message``.

The ClientApp's own overhead (``clientapp_overhead``) is everything but
``python_start``, ``flwr_import`` and ``train``. The node's cache folder (node config
``cache-dir``) persists across the messages, so message 1 is a cache miss and the
others are hits (unless ``--no-cache``). ``warm_handler`` is the whole ``train``
handler answered again in the same process: what a long-lived executor would pay
per message. Flower's steps between processes (the SuperNode's 3 s idle poll of the
SuperLink, the SuperExec's task poll, FAB installation, pulling the message and
pushing the reply) are not in here: ``bench_deploy.py`` measures whole rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

OVERRIDES = ["method=fedavg", "method.arch=min", "federation.num_clients=3",
             "federation.clients_per_round=3", "federation.num_rounds=4",
             "federation.eval_every=4", "federation.local_epochs=1", "method.finetune_epochs=1"]
CACHE_ENV = "PFEDNAS_NODE_CACHE"
PHASES = ("python_start", "flwr_import", "app_import", "config", "data", "model", "fit_other",
          "train", "reply")
OVERHEAD = ("app_import", "config", "data", "model", "fit_other", "reply")


class Stamps:
    """Wall-clock and CPU (user + system, this process) time at named points."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def __call__(self, name: str) -> None:
        self.wall[name], self.cpu[name] = time.time(), time.process_time()


def child(spawned: float, work: Path, cache: bool) -> dict[str, dict[str, float]]:
    """One message in this fresh process; wall and CPU seconds per phase."""
    stamp = Stamps()
    stamp("start")
    import flwr.supernode.cli.flwr_clientapp  # noqa: F401  (what the entry point imports)

    stamp("flwr_import")
    from pfednas.app import client_app

    stamp("app_import")
    import numpy as np
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
    from flwr.common import MessageType
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = 1  # as flwr-clientapp

    node: dict[str, bool | float | int | str] = {"partition-id": 0, "num-partitions": 3,
                                                 "checkpoint-dir": str(work / "state")}
    if cache:
        node["cache-dir"] = str(work / "cache")
    context = Context(run_id=1, node_id=1, node_config=node, state=RecordDict(),
                      run_config={"overrides": json.dumps(OVERRIDES), "output-dir": ""})
    with np.load(work / "arrays.npz") as saved:
        arrays = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    config: dict[str, bool | bytes | float | int | str] = {
        "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0, "batch_size": 32, "server_round": 1,
        "local_epochs": 1, "lineage": "bench"}
    message = Message(RecordDict({"arrays": ArrayRecord(numpy_ndarrays=arrays),
                                  "config": ConfigRecord(dict(config))}),
                      dst_node_id=1, message_type=MessageType.TRAIN)
    stamp("message_in")
    settings = client_app.node_settings(context)
    stamp("config")
    env = client_app.client_env(context, settings)
    stamp("data")
    client = client_app.make_client(context, settings, env)
    stamp("model")
    out, num_examples, metrics = client.fit(arrays, config)
    stamp("fit")
    Message(RecordDict({"arrays": ArrayRecord(numpy_ndarrays=out),
                        "metrics": ConfigRecord({"num_examples": num_examples})}),
            reply_to=message)
    stamp("reply")
    client_app.app(message, context)
    stamp("warm_handler")
    train = float(metrics["train_seconds"])  # wall; the loop is single-threaded
    figures = {}
    for kind, at in (("wall", stamp.wall), ("cpu", stamp.cpu)):
        figures[kind] = {
            "python_start": at["start"] - spawned if kind == "wall" else at["start"],
            "flwr_import": at["flwr_import"] - at["start"],
            "app_import": at["app_import"] - at["flwr_import"],
            "config": at["config"] - at["message_in"],
            "data": at["data"] - at["config"],
            "model": at["model"] - at["data"],
            "fit_other": max(at["fit"] - at["model"] - train, 0.0),
            "train": min(train, at["fit"] - at["model"]),
            "reply": at["reply"] - at["fit"],
            "warm_handler": at["warm_handler"] - at["reply"]}
    return figures


def initial_arrays(path: Path) -> None:
    import numpy as np

    from pfednas.config import compose, settings_from_cfg
    from pfednas.methods import initial_fixed_arrays

    arrays = initial_fixed_arrays(settings_from_cfg(compose(OVERRIDES)))
    np.savez(path, *arrays)


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def one_message(work: Path, cache: bool) -> dict[str, dict[str, float]]:
    command = [sys.executable, __file__, "--child", str(work), "--spawned", str(time.time())]
    env = {k: v for k, v in os.environ.items() if k != CACHE_ENV}  # node config only
    if not cache:
        command.append("--no-cache")
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def summary(rows: list[dict[str, float]]) -> dict[str, float]:
    figures = {k: round(statistics.median(r[k] for r in rows), 3) for k in rows[0]}
    figures["clientapp_overhead"] = round(sum(figures[k] for k in OVERHEAD), 3)
    figures["process_total"] = round(sum(figures[k] for k in PHASES), 3)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=4)
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--spawned", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.spawned, args.child, not args.no_cache)))
        return
    loads = [load_average()]
    with tempfile.TemporaryDirectory(prefix="bench_clientapp_") as tmp:
        work = Path(tmp)
        initial_arrays(work / "arrays.npz")
        rows = [one_message(work, not args.no_cache) for _ in range(args.messages)]
    loads.append(load_average())
    result: dict[str, Any] = {"config": OVERRIDES, "cache": not args.no_cache,
                              "load_1min": loads}
    for kind in ("wall", "cpu"):
        result[kind] = {"first_message": summary([r[kind] for r in rows[:1]]),
                        "later_messages": summary([r[kind] for r in rows[1:] or rows])}
    print(f"{'phase (s)':<20}{'wall, msg 1':>13}{'wall, later':>13}{'cpu, msg 1':>13}"
          f"{'cpu, later':>13}")
    for key in result["wall"]["first_message"]:
        print(f"{key:<20}" + "".join(f"{result[kind][which][key]:>13}" for kind in ("wall", "cpu")
                                     for which in ("first_message", "later_messages")))
    print(f"load average (1 min) before / after: {loads[0]:.2f} / {loads[1]:.2f}; later = "
          f"median of messages 2..{args.messages}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
