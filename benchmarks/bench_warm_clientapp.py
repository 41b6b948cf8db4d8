"""What one task's process costs, cold and warm: the part of a deployed message that warm
ClientApps (``pfednas deploy local``'s default, :mod:`pfednas.deploy.warm`) take away.

    .venv/bin/python benchmarks/bench_warm_clientapp.py [--repeats 5] [--json F]

* ``cold``: a fresh interpreter that imports what a cold ``flwr-clientapp`` imports before
  the task (PyTorch, Flower's ``flwr.supernode.cli``, ``pfednas.app.client_app``) and exits:
  spawn to exit, the interpreter's teardown included;
* ``warm``: the ``flwr-clientapp`` shim of a node whose fork server preloaded the same
  modules, running an entry point that returns at once (``builtins:int``): spawn of the shim
  to its exit, i.e. the shim's start, the request, the fork, the child's exit and the status;
* the fork server's own start (to listening) and its resident memory while idle.

The task's own work (config, data, model, training, Flower's messages) is the same either way
and not in here: ``bench_clientapp.py`` splits it, ``bench_deploy.py`` times whole rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pfednas.deploy.warm import PRELOAD, socket_path, write_shim

REPO = Path(__file__).resolve().parents[1]


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def memory_kib(pid: int) -> dict[str, int]:
    """Rss, Pss and Private_Dirty of a process (kB, from /proc/PID/smaps_rollup)."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0])
    return {k: fields[k] for k in ("Rss", "Pss", "Private_Dirty")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    cold_code = "; ".join(f"import {module}" for module in PRELOAD)
    cold = [timed([sys.executable, "-c", cold_code]) for _ in range(args.repeats)]
    with tempfile.TemporaryDirectory(prefix="bench_warm_") as tmp:
        node = Path(tmp)
        shim = write_shim(node, cold="/bin/false")
        preload = [part for module in PRELOAD for part in ("--preload", module)]
        start = time.perf_counter()
        server = subprocess.Popen([sys.executable, "-m", "pfednas.deploy.warm", "--socket",
                                   str(socket_path(node)), *preload, "--entry", "builtins:int"],
                                  cwd=REPO, stdout=subprocess.DEVNULL)
        try:
            while not socket_path(node).exists():
                if server.poll() is not None:
                    sys.exit("the fork server exited")
                time.sleep(0.01)
            ready = time.perf_counter() - start
            time.sleep(0.5)
            memory = memory_kib(server.pid)
            warm = [timed([str(shim)]) for _ in range(args.repeats)]
        finally:
            server.terminate()
            server.wait(timeout=30)
    load = float(Path("/proc/loadavg").read_text().split()[0])
    result = {"repeats": args.repeats, "cold_process_s": [round(s, 3) for s in cold],
              "warm_process_s": [round(s, 3) for s in warm],
              "cold_median_s": round(statistics.median(cold), 3),
              "warm_median_s": round(statistics.median(warm), 3),
              "server_ready_s": round(ready, 2), "server_memory_kib": memory,
              "load_after": load}
    print(f"a task's process, cold: {result['cold_median_s']} s (median of {args.repeats}); "
          f"warm: {result['warm_median_s']} s; the fork server: ready in "
          f"{result['server_ready_s']} s, idle RSS {memory['Rss'] / 1024:.0f} MiB "
          f"(private {memory['Private_Dirty'] / 1024:.0f} MiB); load {load}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
