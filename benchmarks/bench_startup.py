"""Fixed start-up of a ``pfednas`` run, split into its parts.

    .venv/bin/python benchmarks/bench_startup.py [--repeat 2] [--json out.json] [OVERRIDE ...]

Runs ``pfednas`` (default: FedAvg on digits, K=4, N=2, 3 rounds, the smallest subnet)
and watches it from outside every 20 ms: its console, ``logs/superlink.log``,
``metrics.jsonl``, the files the run writes, and every process that carries the
run's ``PFEDNAS_RUN_TOKEN`` (with its start time from ``/proc``). Reported, in
seconds since the command started:

- ``cli_ready``: the command's header line (imports, Hydra compose, config
  validation, data partition check);
- ``superlink_start`` / ``superlink_healthy``: the ``flower-superlink`` process
  starts / serves HTTP (its own "Uvicorn running" line);
- ``flwr_run_start`` / ``run_submitted``: ``flwr run`` starts / its StartRun request
  (FAB build and submission happen in between);
- ``simulation_start``: the ``flwr-simulation`` process (SuperExec's poll, then
  Flower's and Ray's imports, the FAB install);
- ``serverapp_main``: the ServerApp's ``main`` (``logs/serverapp.pid`` written);
- ``ray_start``: Ray's ``gcs_server``; ``first_worker``: the first Ray worker process;
- ``round1_start``: the first round's messages leave (the end of round 1 less its
  wall time); ``round1_end`` / ``round2_end``: ``metrics.jsonl`` lines;
- ``results``: ``summary.json``; ``simulation_end`` / ``flwr_run_end``: those processes
  are gone (Ray's shutdown, the run's final status, the log stream's end); ``exit``: the
  command returns, the SuperLink stopped.

``fixed_startup`` = ``round1_end`` − round 2's wall time: the time to the end of the
first round less what a warm round costs, i.e. everything a run pays before its work.

Wall times on a shared machine grow with its load; the CPU seconds the run's processes
used until ``round1_start`` (``cpu_*``, by kind of process, from ``/proc/<pid>/stat``)
depend much less on it, so both are reported.
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
DEFAULT = ["method=fedavg", "method.arch=min", "federation.num_clients=4",
           "federation.clients_per_round=2", "federation.num_rounds=3",
           "federation.eval_every=3", "federation.local_epochs=1", "method.finetune_epochs=1"]
TICKS = os.sysconf("SC_CLK_TCK")
KINDS = (  # kind of process for the CPU figures: a substring of its command line, in order
    ("superlink", "flower-superlink"), ("superexec", "flower-superexec"),
    ("flwr_run", "flwr run"), ("simulation", "flwr-simulation"),
    ("ray_daemon", "ray::DashboardAgent"), ("ray_daemon", "ray::RuntimeEnvAgent"),
    ("ray_worker", "_worker.py"), ("ray_worker", "ray::"),
)  # anything else (gcs_server, raylet, dashboard, monitors): ray_daemon
PROCESS_MARKS = {  # milestone: a substring of the process's command line
    "superlink_start": "flower-superlink",
    "flwr_run_start": "flwr run",
    "simulation_start": "flwr-simulation",
    "ray_start": "gcs_server",
    "first_worker": "default_worker.py",
}


def start_ticks(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


def kind_of(cmd: str) -> str:
    return next((kind for kind, needle in KINDS if needle in cmd), "ray_daemon")


def token_processes(token: str) -> dict[int, str]:
    """PID → command line of every process carrying ``PFEDNAS_RUN_TOKEN=token``."""
    needle = f"PFEDNAS_RUN_TOKEN={token}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(
                    b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
    return found


class Watch:
    """Milestones of one run, in seconds since the command started."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.t0 = 0.0
        self.ticks0 = 0
        self.marks: dict[str, float] = {}
        self.stdout: list[tuple[float, str]] = []
        self.kinds: dict[int, str] = {}
        self.cpu: dict[int, float] = {}  # last CPU seconds seen per process
        self.cpu_samples: list[tuple[float, dict[str, float]]] = []

    def mark(self, name: str, when: float | None = None) -> None:
        if name not in self.marks:
            self.marks[name] = round((time.monotonic() if when is None else when) - self.t0, 2)

    def read_stdout(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.monotonic()
            self.stdout.append((now - self.t0, line))
            if line.startswith("[pfednas] output:"):
                self.mark("cli_ready", now)

    def poll(self, seen: set[int]) -> None:
        logs = self.out / "logs"
        token_file = logs / "run_token"
        if token_file.is_file():
            for pid, cmd in token_processes(token_file.read_text().strip()).items():
                if pid in seen:
                    continue
                seen.add(pid)
                self.kinds[pid] = kind_of(cmd)
                ticks = start_ticks(pid)
                for name, needle in PROCESS_MARKS.items():
                    if needle in cmd and ticks is not None:
                        self.mark(name, self.t0 + (ticks - self.ticks0) / TICKS)
        for pid, kind in self.kinds.items():
            used = cpu_seconds(pid)
            if used is not None:
                self.cpu[pid] = used
            elif kind in ("simulation", "flwr_run"):
                self.mark(f"{kind}_end")
        by_kind: dict[str, float] = {}
        for pid, used in self.cpu.items():
            by_kind[self.kinds[pid]] = by_kind.get(self.kinds[pid], 0.0) + used
        self.cpu_samples.append((time.monotonic() - self.t0, by_kind))
        superlink = logs / "superlink.log"
        if superlink.is_file():
            text = superlink.read_text(errors="replace")
            if "Uvicorn running" in text:
                self.mark("superlink_healthy")
            if "/v1/control/start-run" in text:
                self.mark("run_submitted")
        if (logs / "serverapp.pid").is_file():
            self.mark("serverapp_main")
        metrics = self.out / "metrics.jsonl"
        if metrics.is_file():
            lines = metrics.read_text().splitlines()
            for k in range(1, min(len(lines), 2) + 1):
                self.mark(f"round{k}_end")
        if (self.out / "summary.json").is_file():
            self.mark("results")


def measure(overrides: list[str], out: Path) -> dict[str, float]:
    watch = Watch(out)
    watch.t0 = time.monotonic()
    proc = subprocess.Popen([str(PFEDNAS), *overrides, f"hydra.run.dir={out}"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watch.ticks0 = start_ticks(proc.pid) or 0
    watch.kinds[proc.pid] = "cli"
    reader = threading.Thread(target=watch.read_stdout, args=(proc,), daemon=True)
    reader.start()
    seen: set[int] = set()
    while proc.poll() is None:
        watch.poll(seen)
        time.sleep(0.02)
    watch.mark("exit")
    reader.join(timeout=5)
    if proc.returncode != 0:
        raise SystemExit("".join(line for _, line in watch.stdout[-40:]))
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    marks = watch.marks
    marks["round1_start"] = round(marks["round1_end"] - records[0]["wall_seconds"], 2)
    marks["round1_wall"] = round(records[0]["wall_seconds"], 2)
    marks["round2_wall"] = round(records[1]["wall_seconds"], 2)
    marks["fixed_startup"] = round(marks["round1_end"] - records[1]["wall_seconds"], 2)
    marks["teardown"] = round(marks["exit"] - marks["results"], 2)
    before = [cpu for t, cpu in watch.cpu_samples if t <= marks["round1_start"]]
    for kind, used in sorted((before[-1] if before else {}).items()):
        marks[f"cpu_{kind}"] = round(used, 2)
    marks["cpu_total"] = round(sum(v for k, v in marks.items() if k.startswith("cpu_")), 2)
    return marks


ORDER = ("cli_ready", "superlink_start", "superlink_healthy", "flwr_run_start", "run_submitted",
         "simulation_start", "ray_start", "serverapp_main", "first_worker", "round1_start",
         "round1_end", "round2_end", "results", "simulation_end", "flwr_run_end", "exit",
         "round1_wall", "round2_wall", "fixed_startup", "teardown", "cpu_cli", "cpu_superlink",
         "cpu_superexec", "cpu_flwr_run", "cpu_simulation", "cpu_ray_worker", "cpu_ray_daemon",
         "cpu_total")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (default: a tiny FedAvg)")
    args = parser.parse_args()
    overrides = args.overrides or DEFAULT
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as tmp:
        for i in range(args.repeat):
            runs.append(measure(overrides, Path(tmp) / f"run{i}"))
            print(f"[bench] run {i + 1}/{args.repeat}: fixed start-up "
                  f"{runs[-1]['fixed_startup']} s", flush=True)
    load = os.getloadavg()
    median = {k: round(statistics.median(r[k] for r in runs if k in r), 2)
              for k in ORDER if any(k in r for r in runs)}
    print(f"\nload average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"median of {len(runs)} run(s), seconds since the command started:")
    for key, value in median.items():
        print(f"  {key:<18} {value:8.2f}")
    if args.json:
        args.json.write_text(json.dumps({"overrides": overrides, "load": load, "runs": runs,
                                         "median": median}, indent=2) + "\n")


if __name__ == "__main__":
    main()
