"""Round time of a local deployment vs the same run in simulation.

    .venv/bin/python benchmarks/bench_deploy.py [--nodes 3] [--rounds 4] [--insecure-too]
                                                [--deployment-only] [--clientapps cold warm]
                                                [--json F]

Runs one config several times: ``pfednas`` (simulation, Ray backend)
and ``pfednas deploy local`` (a real SuperLink + SuperNodes with TLS and node
authentication; optionally also ``--insecure``) once per ``--clientapps`` (default ``warm``,
the command's default: each node's fork server hands out the ClientApp processes; ``cold``:
Flower's own new process per message), and reads each run's ``metrics.jsonl``.
Reported per run: the end-to-end command time, the mean wall time of training-only rounds
and of the final round (training + personalized evaluation of every client), and the mean
client ``train_seconds`` (the pure training inside a round), what the deployment's Flower
processes cost, sampled from /proc (the median life and CPU seconds of a ClientApp process,
``clientapp_process_s`` / ``_cpu_s``, and the CPU seconds of each role over the whole
run, start-up included, divided by the rounds: SuperLink, SuperNodes, SuperExecs,
ServerApp and ClientApps; with warm ClientApps a task is a fork of its node's server, counted as
a ClientApp, and the servers and the ``flwr-clientapp`` shims are roles of their own), and the
1-minute load average before
and after each run. The difference of round times is the deployment overhead: a fresh ClientApp
process per message (Python + Flower + PyTorch + config start-up, measured alone
as ``clientapp_cold_start_s``; ``bench_clientapp.py`` splits it phase by phase) and
the Fleet API's polling, against Ray's warm actors in simulation.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PFEDNAS = Path(sys.executable).parent / "pfednas"


def config(nodes: int, rounds: int) -> list[str]:
    return ["method=fedavg", "method.arch=min", f"federation.num_clients={nodes}",
            f"federation.clients_per_round={nodes}", f"federation.num_rounds={rounds}",
            f"federation.eval_every={rounds}", "federation.local_epochs=1",
            "method.finetune_epochs=1"]


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


FLOWER_ROLES = ("flower-superlink", "flower-supernode", "flower-superexec", "flwr-serverapp",
                "flwr-clientapp", "warm-server", "warm-shim")
WARM_SERVER = b"pfednas.deploy.warm"  # in a warm server's command line, and so its forks'
WARM_SHIM = b"/warm/bin/flwr-clientapp"


def role_of(argv: list[bytes], parent_argv: list[bytes]) -> str | None:
    """A process's Flower role from its command line (and its parent's: a warm server's fork
    keeps the server's command line and is a ClientApp)."""
    if any(WARM_SERVER in a for a in argv):
        return "flwr-clientapp" if any(WARM_SERVER in a for a in parent_argv) else "warm-server"
    if any(a.endswith(WARM_SHIM) for a in argv):
        return "warm-shim"
    return next((r for r in FLOWER_ROLES for a in argv if a.endswith(r.encode())), None)
TICKS = os.sysconf("SC_CLK_TCK")


class FlowerProcesses(threading.Thread):
    """The Flower processes of one run (those whose environment carries the run token that
    ``pfednas deploy local`` writes to ``logs/run_token``), sampled from /proc every 0.1 s:
    role, life (first to last sighting) and the CPU seconds used when last seen."""

    def __init__(self, token_file: Path) -> None:
        super().__init__(daemon=True)
        self.token_file = token_file
        self.seen: dict[int, tuple[str, float, float, float]] = {}
        self.done = threading.Event()

    def run(self) -> None:
        needle = b""
        while not self.done.is_set():
            if not needle and self.token_file.is_file():
                needle = f"PFEDNAS_RUN_TOKEN={self.token_file.read_text().strip()}".encode()
            now = time.monotonic()
            for entry in Path("/proc").iterdir() if needle else ():
                if entry.name.isdigit():
                    self._sample(int(entry.name), entry, now, needle)
            time.sleep(0.1)

    def _sample(self, pid: int, entry: Path, now: float, needle: bytes) -> None:
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")[:4]  # python -P -m MODULE
            parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
            parent_argv = Path(f"/proc/{parent}/cmdline").read_bytes().split(b"\0")[:4]
            role = role_of(argv, parent_argv)
            if role is None or needle not in (entry / "environ").read_bytes().split(b"\0"):
                return
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return
        cpu = (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime
        first = self.seen.get(pid, (role, now, now, 0.0))[1]
        self.seen[pid] = (role, first, now, cpu)

    def figures(self, rounds: int) -> dict[str, float]:
        """Median life and CPU of a ClientApp process; CPU per round of each role."""
        self.done.set()
        self.join()
        apps = [(last - first, cpu) for role, first, last, cpu in self.seen.values()
                if role == "flwr-clientapp"]
        out = {"clientapp_process_s": round(statistics.median(a[0] for a in apps), 2)
               if apps else 0.0,
               "clientapp_process_cpu_s": round(statistics.median(a[1] for a in apps), 2)
               if apps else 0.0}
        for role in FLOWER_ROLES:
            total = sum(cpu for r, _, _, cpu in self.seen.values() if r == role)
            out[f"cpu_per_round_{role}"] = round(total / max(rounds, 1), 2)
        return out


def round_figures(out: Path, command_seconds: float) -> dict[str, float]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_only = [r["wall_seconds"] for r in records if not r["evaluation"]]
    final = records[-1]
    return {
        "command_s": round(command_seconds, 2),
        "train_round_mean_s": round(statistics.mean(train_only), 2) if train_only else 0.0,
        "train_round_first_s": round(train_only[0], 2) if train_only else 0.0,
        "final_round_s": round(final["wall_seconds"], 2),
        "client_train_mean_s": round(statistics.mean(
            row["train_seconds"] for r in records for row in r["train"]), 3),
        "accuracy": round(json.loads((out / "summary.json").read_text())
                          ["personalized_acc_mean"], 4),
    }


def load_average() -> float:
    """The machine's 1-minute load average: these figures are upper bounds under load."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def clientapp_cold_start() -> float:
    """Seconds a fresh interpreter needs to import the ClientApp and compose the config."""
    code = ("import pfednas.app.client_app; from pfednas.config import compose, settings_from_cfg; "
            "settings_from_cfg(compose([]))")
    return statistics.median(timed([sys.executable, "-c", code]) for _ in range(3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--insecure-too", action="store_true")
    parser.add_argument("--deployment-only", action="store_true",
                        help="skip the simulation run (no ratio to it)")
    parser.add_argument("--clientapps", nargs="+", choices=("cold", "warm"), default=["warm"],
                        help="one deployment per value (default warm, deploy local's default)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    overrides = config(args.nodes, args.rounds)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_deploy_") as tmp:
        work = Path(tmp)
        runs = {"simulation": [str(PFEDNAS), *overrides, f"hydra.run.dir={work / 'sim'}"]}
        outs = {"simulation": work / "sim"}
        if args.deployment_only:
            del runs["simulation"]
        for mode in args.clientapps:
            for name, extra in ((f"deployment_tls_auth_{mode}", []),
                                (f"deployment_insecure_{mode}", ["--insecure"])):
                if extra and not args.insecure_too:
                    continue
                outs[name] = work / name
                runs[name] = [str(PFEDNAS), "deploy", "local", "--clientapps", mode, *extra,
                              *overrides, "--out", str(outs[name])]
        for name, command in runs.items():
            print(f"[bench] {name} ...", flush=True)
            load_before = load_average()
            processes = FlowerProcesses(outs[name] / "logs" / "run_token")
            processes.start()
            results[name] = round_figures(outs[name], timed(command))
            if name != "simulation":
                results[name].update(processes.figures(args.rounds))
            results[name]["load_before"] = load_before
            results[name]["load_after"] = load_average()
    summary: dict[str, object] = {"config": overrides, "runs": results,
                                  "clientapp_cold_start_s": round(clientapp_cold_start(), 2)}
    if "simulation" in results:
        sim = results["simulation"]["train_round_mean_s"]
        for mode in args.clientapps:
            dep = results[f"deployment_tls_auth_{mode}"]
            summary[f"train_round_overhead_{mode}_s"] = round(dep["train_round_mean_s"] - sim, 2)
            summary[f"train_round_ratio_{mode}"] = round(
                dep["train_round_mean_s"] / max(sim, 1e-9), 2)
    keys = list(next(iter(results.values())))[:6]
    print(f"\n{'run':<28}" + "".join(f"{k:>21}" for k in keys))
    for name, figures in results.items():
        print(f"{name:<28}" + "".join(f"{figures[k]:>21}" for k in keys))
    for name, figures in results.items():
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in figures.items() if k not in keys))
    print(f"\nclientapp cold start: {summary['clientapp_cold_start_s']} s", end="")
    for mode in args.clientapps:
        if f"train_round_ratio_{mode}" in summary:
            print(f"; {mode} deployment's training round overhead: "
                  f"{summary[f'train_round_overhead_{mode}_s']} s "
                  f"({summary[f'train_round_ratio_{mode}']}x simulation)", end="")
    print()
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
