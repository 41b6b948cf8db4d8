"""Honest round time through the Fleet gateway while it is attacked (issue 61, findings 3, 4).

    .venv/bin/python benchmarks/bench_gateway_attacks.py [--nodes 3] [--rounds 2]
        [--attacks none,slow-bodies,half-open] [--gateway FILE] [--run-timeout 300]
        [--json F]

A real deployment on loopback: a SuperLink (TLS, node authentication) on 127.0.0.1, the
Fleet gateway in front of it with an open-file limit of 1,024 (the reviewer's), and N
SuperNodes dialling the gateway from 127.0.0.1; one FedAvg run of R rounds
(``method.arch=min``) per attack. The attacker comes from other loopback addresses, as
from other machines:

* ``slow-bodies`` (finding 3): 8 connections from each of 127.0.0.2 and 127.0.0.3, each
  declaring an 8 MiB ``push-object`` without a node's signature and sending a byte every
  8 s; a connection the gateway closes is opened again after ``--reconnect-s``.
* ``half-open`` (finding 4): 1,100 TCP connections from 127.0.0.2 that never start TLS,
  those the gateway closed opened again every 10 s.

Reported per attack: the run's mean round time (``wall_seconds`` of metrics.jsonl), the
``flwr run`` command's time, the honest ``/health`` probe (from 127.0.0.1 every 0.5 s):
failures and slowest answer, the CPU seconds of the gateway and of this process (the
attacker and the probe) during the run, and the load average. ``--gateway FILE`` runs another
gateway file without ``--node-keys`` (the previous one: ``git show
REV:src/pfednas/deploy/fleet_gateway.py > FILE``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import ssl
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
import tomli_w

from pfednas.config import SERVERAPP_PID_FILE
from pfednas.deploy.certs import write_dev_certificates, write_node_keys
from pfednas.deploy.commands import (
    Security,
    fleet_gateway_command,
    flwr_run_command,
    node_config,
    supernode_command,
)
from pfednas.deploy.local import CONNECTION, HOST, LocalFederation, wait_healthy
from pfednas.run.launcher import free_port, staged_app, wait_run

REPO = Path(__file__).resolve().parents[1]
ATTACKERS = ("127.0.0.2", "127.0.0.3")
OBJECT_BYTES = 8 << 20
TICKS = os.sysconf("SC_CLK_TCK")


def overrides(nodes: int, rounds: int) -> list[str]:
    return ["method=fedavg", "method.arch=min", f"federation.num_clients={nodes}",
            f"federation.clients_per_round={nodes}", f"federation.num_rounds={rounds}",
            f"federation.eval_every={rounds}", "federation.local_epochs=1",
            "method.finetune_epochs=1"]


class Attack(threading.Thread):
    """Runs ``step`` until stopped; counts what the gateway did to the attacker."""

    def __init__(self, step: Callable[[Attack], None]) -> None:
        super().__init__(daemon=True)
        self.step = step
        self.stopped = threading.Event()
        self.opened = 0
        self.closed_by_gateway = 0

    def run(self) -> None:
        while not self.stopped.is_set():
            self.step(self)


def slow_body(port: int, ca: Path, source: str, reconnect_s: float) -> Callable[[Attack], None]:
    """Finding 3, one connection: an unsigned 8 MiB push-object, a byte every 8 s."""
    context = ssl.create_default_context(cafile=str(ca))
    head = (f"POST /v1/fleet/push-object HTTP/1.1\r\nhost: {HOST}\r\n"
            f"content-type: application/protobuf\r\ncontent-length: {OBJECT_BYTES}\r\n\r\n")

    def step(attack: Attack) -> None:
        with suppress(OSError):
            raw = socket.create_connection((HOST, port), timeout=10,
                                           source_address=(source, 0))
            with context.wrap_socket(raw, server_hostname=HOST) as sock:
                attack.opened += 1
                sock.sendall(head.encode())
                sock.settimeout(8.0)
                while not attack.stopped.is_set():
                    sock.sendall(b"x")
                    try:
                        if not sock.recv(1 << 16):
                            break
                        break  # an answer (401, 408, 503): the gateway closes after it
                    except TimeoutError:
                        continue
                attack.closed_by_gateway += not attack.stopped.is_set()
        attack.stopped.wait(reconnect_s)
    return step


def half_open(port: int, count: int = 1100, every_s: float = 10.0) -> Callable[[Attack], None]:
    """Finding 4: ``count`` TCP connections from one address that never start TLS; those
    the gateway closed are opened again every ``every_s``."""
    held: list[socket.socket] = []

    def closed(sock: socket.socket) -> bool:
        sock.setblocking(False)
        try:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def step(attack: Attack) -> None:
        for sock in [s for s in held if closed(s)]:
            held.remove(sock)
            sock.close()
            attack.closed_by_gateway += 1
        while len(held) < count and not attack.stopped.is_set():
            try:
                held.append(socket.create_connection((HOST, port), timeout=5,
                                                     source_address=(ATTACKERS[0], 0)))
                attack.opened += 1
            except OSError:
                break
        if attack.stopped.wait(every_s):
            for sock in held:
                sock.close()
    return step


class HealthProbe(threading.Thread):
    """``GET /health`` from the honest address every 0.5 s: failures and slowest answer."""

    def __init__(self, port: int, ca: Path) -> None:
        super().__init__(daemon=True)
        self.url = f"https://{HOST}:{port}/health"
        self.context = ssl.create_default_context(cafile=str(ca))
        self.stopped = threading.Event()
        self.answers: list[float] = []
        self.failures = 0

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            start = time.monotonic()
            try:
                with httpx.Client(verify=self.context, timeout=10.0) as client:
                    ok = client.get(self.url).status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                self.answers.append(time.monotonic() - start)
            else:
                self.failures += 1


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def run_once(work: Path, nodes: int, rounds: int, attack_name: str, gateway_file: Path | None,
             reconnect_s: float, run_timeout: float) -> dict[str, Any]:
    certs = write_dev_certificates(work / "certs")
    keys = write_node_keys(work / "keys", nodes)
    out = work / "run"
    federation = LocalFederation(num_nodes=0, work_dir=work / "deploy", log_dir=out / "logs",
                                 security=Security(tls=certs, node_auth=True), keys=keys,
                                 output_base=out)
    run_config = out / "logs" / "run_config.toml"
    with federation, staged_app(REPO) as app:
        federation.register([key.public for key in keys])
        port = free_port()
        command = fleet_gateway_command(host=HOST, port=port, upstream=federation.address,
                                        tls=certs, node_keys=work / "keys")
        if gateway_file is not None:  # another gateway: same flags, no --node-keys
            command = ["python", str(gateway_file), *command[3:-2]]
        gateway = federation.spawn(command, "fleet-gateway.log")
        resource.prlimit(gateway.pid, resource.RLIMIT_NOFILE, (1024, 1024))
        wait_healthy(f"https://{HOST}:{port}/health", gateway,
                     out / "logs" / "fleet-gateway.log", cafile=certs.ca_cert)
        for i in range(nodes):
            federation.nodes.append(federation.spawn(supernode_command(
                superlink=f"{HOST}:{port}", runtime_host=HOST, runtime_port=free_port(),
                security=federation.security, private_key=keys[i].private,
                node_config=node_config(i, nodes, cache_dir=work / "deploy" / "node_cache",
                                        model_dir=out / "models")),
                f"supernode-{i}.log",
                dict(federation.env, FLWR_HOME=str(work / "deploy" / "nodes" / f"node-{i}"))))
        federation.wait_connected(federation.nodes)
        attacks: list[Attack] = {
            "none": [],
            "slow-bodies": [Attack(slow_body(port, certs.ca_cert, source, reconnect_s))
                            for source in ATTACKERS for _ in range(8)],
            "half-open": [Attack(half_open(port))],
        }[attack_name]
        probe = HealthProbe(port, certs.ca_cert)
        threads: list[Attack | HealthProbe] = [*attacks, probe]
        for thread in threads:
            thread.start()
        time.sleep(2.0 if attacks else 0.0)  # the attack in place before the run starts
        run_config.write_text(tomli_w.dumps({"output-dir": str(out),
                                             "overrides": json.dumps(overrides(nodes, rounds))}))
        load_before = float(Path("/proc/loadavg").read_text().split()[0])
        gateway_cpu, own_cpu = cpu_seconds(gateway.pid), time.process_time()
        start = time.monotonic()
        proc = subprocess.Popen(flwr_run_command(app, CONNECTION, run_config),
                                env=federation.env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, start_new_session=True)
        timer = threading.Timer(run_timeout, proc.terminate)
        timer.start()
        code = wait_run(proc, out / "logs" / SERVERAPP_PID_FILE)
        timer.cancel()
        command_s = time.monotonic() - start
        gateway_cpu = cpu_seconds(gateway.pid) - gateway_cpu
        own_cpu = time.process_time() - own_cpu  # mostly the attacker's threads
        for thread in threads:
            thread.stopped.set()
        gateway_log = (out / "logs" / "fleet-gateway.log").read_text(errors="replace")
    metrics = out / "metrics.jsonl"
    records = ([json.loads(line) for line in metrics.read_text().splitlines()]
               if metrics.is_file() else [])
    finished = code == 0 and len(records) == rounds
    return {
        "attack": attack_name, "finished": finished,
        "command_s": round(command_s, 1),
        "round_mean_s": (round(statistics.mean(r["wall_seconds"] for r in records), 2)
                         if records else None),
        "rounds_s": [round(r["wall_seconds"], 2) for r in records],
        "health_failures": probe.failures, "health_answers": len(probe.answers),
        "health_slowest_s": round(max(probe.answers), 3) if probe.answers else None,
        "attacker_connections": sum(a.opened for a in attacks),
        "closed_by_gateway": sum(a.closed_by_gateway for a in attacks),
        "refused_503": gateway_log.count('" 503') + gateway_log.count("gateway busy"),
        "gateway_cpu_s": round(gateway_cpu, 1), "attacker_cpu_s": round(own_cpu, 1),
        "load_before": load_before,
        "load_after": float(Path("/proc/loadavg").read_text().split()[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--attacks", default="none,slow-bodies,half-open")
    parser.add_argument("--gateway", type=Path, default=None,
                        help="another gateway file to run (without --node-keys)")
    parser.add_argument("--reconnect-s", type=float, default=1.0)
    parser.add_argument("--run-timeout", type=float, default=300.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    for attack in args.attacks.split(","):
        print(f"[bench] attack {attack} ...", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench_gateway_") as tmp:
            results.append(run_once(Path(tmp), args.nodes, args.rounds, attack,
                                    args.gateway and args.gateway.resolve(), args.reconnect_s,
                                    args.run_timeout))
        print(json.dumps(results[-1]), flush=True)
    baseline = next((r["round_mean_s"] for r in results if r["attack"] == "none"), None)
    for result in results:
        mean = result["round_mean_s"]
        ratio = (f"{mean / baseline:.2f}x" if isinstance(mean, float) and baseline
                 else "-")
        print(f"{result['attack']:<12} finished={result['finished']!s:<5} "
              f"round mean {mean} s ({ratio} unattacked), command {result['command_s']} s, "
              f"/health failures {result['health_failures']}/"
              f"{result['health_failures'] + result['health_answers']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
