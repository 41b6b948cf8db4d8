"""One small run three ways: simulation, ``pfednas deploy local`` and the compose federation
in podman containers; and the device probe's time.

    .venv/bin/python benchmarks/bench_deploy_modes.py [--probe-repeats 3] [--limits]
    .venv/bin/python benchmarks/bench_deploy_modes.py --table   # the table of the last run

The run: PerFedRLNAS on digits, 3 clients, all sampled, 2 rounds of 1 local epoch,
personalized evaluation (1 fine-tuning epoch) in round 2. Run one after the other (one
heavy job at a time):

* ``simulation``: ``pfednas ...`` (Ray backend);
* ``deploy local``: ``pfednas deploy local --clientapps cold ...`` (SuperLink + 3 SuperNodes
  as local processes, TLS and node authentication, Flower's own ClientApp process per
  message); ``deploy_local_warm``: the same with warm ClientApps (the command's default);
* ``containers``: ``scripts/containers/run-federation.sh`` (docker-compose.yml under podman:
  SuperLink, Fleet gateway, 3 silos, TLS, node authentication, SuperExec secrets; with
  ``--limits`` under ``scripts/containers/silo-limits.yml``). Its command time includes the
  image check (``podman build`` through its layer cache), compose up, the SuperNodes'
  connection and compose down; ``connect_s`` is compose up → 3 SuperNodes connected.

Per run: the command's wall time, the run's own wall time (``summary.json``), round 1
(training only) and round 2 (training + personalized evaluation) from ``metrics.jsonl``,
the accuracy, and the 1-minute load average before and after. The probe: ``pfednas deploy
probe dataset=digits`` repeated, the command's wall time and the probe's own (memory +
the ≤ 2 s speed benchmark). Writes ``docs/bench/deploy_modes/results.json`` and prints the
Markdown tables ``docs/DEPLOYMENT.md`` and ``docs/MEASUREMENTS.md`` quote.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PFEDNAS = BIN / "pfednas"
RESULTS = REPO / "docs" / "bench" / "deploy_modes" / "results.json"
NODES, ROUNDS = 3, 2
CONTAINER_RUN = "perfedrlnas-digits"
OVERRIDES = ["method=perfedrlnas", "dataset=digits", f"federation.num_clients={NODES}",
             f"federation.clients_per_round={NODES}", f"federation.num_rounds={ROUNDS}",
             f"federation.eval_every={ROUNDS}", "federation.local_epochs=1",
             "method.finetune_epochs=1"]
LABELS = {"simulation": "simulation (Ray)", "deploy_local": "`deploy local` (TLS + node auth)",
          "deploy_local_warm": "`deploy local`, warm ClientApps",
          "containers": "containers (compose under podman)"}
# deploy_local: Flower's own ClientApp process per message (--clientapps cold, as every
# deployment ran before warm ClientApps); deploy_local_warm: the command's default


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def run_command(command: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """Seconds the command took and its output; a failed command stops the benchmark."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"[bench] failed ({done.returncode}): {' '.join(command)}\n"
                 f"{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return seconds, done.stdout + done.stderr


def run_figures(out: Path, command_s: float) -> dict[str, Any]:
    """The run's own figures from its ``summary.json`` and ``metrics.jsonl``."""
    summary = json.loads((out / "summary.json").read_text())
    rounds = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
              if line.strip()]
    return {"command_s": round(command_s, 1),
            "run_wall_s": round(summary["wall_seconds"], 1),
            "round_s": [round(r["wall_seconds"], 1) for r in rounds],
            "accuracy": round(summary["personalized_acc_mean"], 4),
            "archs": [row.get("arch") for row in sorted(summary["per_client"],
                                                         key=lambda r: r["client_id"])]}


def bench_mode(mode: str, work: Path, limits: bool) -> dict[str, Any]:
    load_before = load_average()
    if mode == "simulation":
        out = work / "sim"
        seconds, _ = run_command([str(PFEDNAS), *OVERRIDES, f"hydra.run.dir={out}"])
        figures = run_figures(out, seconds)
    elif mode in ("deploy_local", "deploy_local_warm"):
        out = work / mode
        clientapps = "warm" if mode == "deploy_local_warm" else "cold"
        seconds, _ = run_command([str(PFEDNAS), "deploy", "local", "--clientapps", clientapps,
                                  *OVERRIDES, "--out", str(out)])
        figures = run_figures(out, seconds)
    else:
        env = dict(os.environ, PFEDNAS_COMPOSE_PROJECT="pfednas-bench", ROUNDS=str(ROUNDS),
                   RUN_OVERRIDES="method=perfedrlnas", RUN_NAME=CONTAINER_RUN,
                   PFEDNAS_COMPOSE_EXTRA=str(REPO / "scripts/containers/silo-limits.yml")
                   if limits else "")
        seconds, log = run_command([str(REPO / "scripts/containers/run-federation.sh"),
                                    str(work / "containers")], env)
        figures = run_figures(work / "containers" / "outputs" / CONTAINER_RUN, seconds)
        connect = re.search(r"SuperNodes connected (\d+) s after compose up", log)
        flwr_run = re.search(r"flwr run: (\d+) s", log)
        figures["connect_s"] = float(connect.group(1)) if connect else None
        figures["flwr_run_s"] = float(flwr_run.group(1)) if flwr_run else None
    figures["load_before"], figures["load_after"] = load_before, load_average()
    return figures


def bench_probe(repeats: int) -> dict[str, Any]:
    commands, probes = [], []
    for _ in range(repeats):
        seconds, output = run_command([str(PFEDNAS), "deploy", "probe", "dataset=digits"])
        commands.append(round(seconds, 2))
        probes.append(float(re.findall(r"probe took ([\d.]+) s", output)[-1]))
    return {"command_s": commands, "probe_s": probes, "load": load_average()}


def markdown(results: dict[str, Any]) -> str:
    lines = ["| run | command (s) | run wall (s) | round 1, training (s) | "
             "round 2, training + evaluation (s) | accuracy | load before / after |",
             "|---|---|---|---|---|---|---|"]
    for mode, label in LABELS.items():
        if mode not in results["runs"]:
            continue
        r = results["runs"][mode]
        first, last = r["round_s"][0], r["round_s"][-1]
        lines.append(f"| {label} | {r['command_s']:.1f} | {r['run_wall_s']:.1f} | {first:.1f} | "
                     f"{last:.1f} | {r['accuracy']:.4f} | "
                     f"{r['load_before']:.1f} / {r['load_after']:.1f} |")
    probe = results.get("probe")
    if probe:
        lines += ["", "| `pfednas deploy probe dataset=digits` | median | all |", "|---|---|---|",
                  f"| command (s) | {statistics.median(probe['command_s']):.2f} | "
                  f"{', '.join(f'{s:.2f}' for s in probe['command_s'])} |",
                  f"| probe itself (s) | {statistics.median(probe['probe_s']):.2f} | "
                  f"{', '.join(f'{s:.2f}' for s in probe['probe_s'])} |"]
    containers = results["runs"].get("containers")
    if containers and containers.get("connect_s") is not None:
        lines += ["", f"Containers: compose up → 3 SuperNodes connected "
                  f"{containers['connect_s']:.0f} s, `flwr run` {containers['flwr_run_s']:.0f} s"
                  f"{' (silo-limits.yml)' if results.get('limits') else ''}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe-repeats", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=list(LABELS), choices=list(LABELS))
    parser.add_argument("--limits", action="store_true",
                        help="containers under scripts/containers/silo-limits.yml")
    parser.add_argument("--table", action="store_true",
                        help="print the table of the committed results.json and stop")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.table:
        print(markdown(json.loads(args.json.read_text())))
        return
    results: dict[str, Any] = {"config": OVERRIDES, "limits": args.limits, "runs": {},
                               "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench_deploy_modes_") as tmp:
        for mode in args.modes:
            print(f"[bench] {mode} ...", flush=True)
            results["runs"][mode] = bench_mode(mode, Path(tmp), args.limits)
            print(f"[bench]   {results['runs'][mode]}", flush=True)
    print("[bench] probe ...", flush=True)
    results["probe"] = bench_probe(args.probe_repeats)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
