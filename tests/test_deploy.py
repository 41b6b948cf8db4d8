"""Real deployments on loopback: a SuperLink and SuperNodes with TLS and node authentication.

Every test checks, by the run's ``PFEDNAS_RUN_TOKEN``, that no process survives.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import tomli_w

from pfednas.config import SERVERAPP_PID_FILE
from pfednas.deploy.certs import (
    TlsFiles,
    node_key_paths,
    write_dev_certificates,
    write_node_key,
    write_node_keys,
)
from pfednas.deploy.commands import (
    Security,
    fleet_gateway_command,
    flwr_run_command,
    node_config,
    superexec_command,
    supernode_command,
)
from pfednas.deploy.local import CONNECTION, HOST, DeploymentError, LocalFederation, wait_healthy
from pfednas.deploy.superexec_auth import write_superexec_secrets
from pfednas.run.inprocess import run_inprocess
from pfednas.run.launcher import free_port, wait_run
from tests.conftest import PFEDNAS, REPO, default_sigint, pids_with_token, processes_naming

# method.arch=min: the smallest subnet of the search space as FedAvg's fixed model (as in
# test_e2e), so 2 rounds stay CI-sized and clear the accuracy bar.
SMALL = ["method=fedavg", "nodes=3", "method.arch=min", "federation.num_rounds=2",
         "federation.eval_every=2", "federation.local_epochs=1", "method.finetune_epochs=2"]


@pytest.mark.slow
def test_three_tls_authenticated_supernodes_run_two_rounds_with_warm_clientapps(
        tmp_path: Path) -> None:
    out = tmp_path / "run"

    result = subprocess.run([str(PFEDNAS), "deploy", "local", *SMALL, f"hydra.run.dir={out}"],
                            cwd=REPO, capture_output=True, text=True, timeout=600, check=False)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "fedavg" and summary["num_clients_evaluated"] == 3
    assert summary["personalized_acc_mean"] > 0.3  # chance is 0.1
    # the nodes took their simulated profiles (deploy local's default): the run is its
    # simulation's bit for bit, every client's figures and model alike
    assert "every node takes the profile the simulation draws" in result.stdout
    simulated = run_inprocess(["federation.num_clients=3", "federation.clients_per_round=3",
                               *(o for o in SMALL if o != "nodes=3")]).summary
    fields = ("client_id", "accuracy", "accuracy_no_ft", "arch", "budget", "memory_bytes")
    assert [{k: row.get(k) for k in fields} for row in summary["per_client"]] == \
        [{k: row.get(k) for k in fields} for row in simulated["per_client"]]
    assert summary["simulated_seconds"] == simulated["simulated_seconds"]
    rounds = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2]
    assert len(rounds[0]["train"]) == 3 and rounds[0]["bytes_up"] > 0
    assert "personalized acc" in result.stdout  # progress streamed by flwr run --stream
    logs = out / "logs"
    commands = (logs / "commands.sh").read_text()
    assert "--enable-supernode-auth" in commands and "--insecure" not in commands
    assert commands.count("--auth-supernode-private-key") == 3
    assert commands.count(f'checkpoint-dir="{out.resolve() / "client_state"}"') == 3
    assert "Uvicorn running on https://" in (logs / "superlink.log").read_text()
    assert (logs / "register.log").read_text().count('"success": true') == 3
    # warm ClientApps, deploy local's default: each node's fork server handed out every task
    assert "3 SuperNodes connected, warm ClientApps" in result.stdout
    for node in range(3):
        server_log = (logs / f"warm-clientapps-{node}.log").read_text()
        assert "ready in" in server_log and "stopped" in server_log
        # its id query, 2 training rounds and the final evaluation, each a fork that succeeded
        tasks = re.findall(r"task \d+ ended: (.*)", server_log)
        assert len(tasks) >= 4 and set(tasks) == {"exit code 0"}, server_log
        assert "forking with" not in server_log  # one thread at every fork
        assert "unreachable" not in (logs / f"supernode-{node}.log").read_text()  # never cold
    assert pids_with_token((logs / "run_token").read_text().strip()) == []
    assert processes_naming(str(out / "deploy" / "nodes")) == []  # no fork server, no task


# the ClientApp executor of each silo: flower-superexec itself, or behind `pfednas deploy
# executor`, whose fork server hands out the ClientApp processes
SILOS = ("cold", "warm")


@pytest.mark.slow
def test_compose_silo_layout_runs_with_tls_to_the_supernode_runtime_api(tmp_path: Path) -> None:
    # Prepare: two silos as in docker-compose.yml, each a SuperNode (--isolation process, its
    # Runtime API over TLS with supernode-<i>.pem and a SuperExec secret) that reaches the
    # SuperLink through the fleet gateway, and a separate ClientApp executor that trusts only
    # ca.crt and holds its node's secret: cold ClientApps in silo 0, warm ones in silo 1
    out = tmp_path / "run"
    certs = write_dev_certificates(tmp_path / "certs", nodes=len(SILOS))
    keys = write_node_keys(tmp_path / "keys", len(SILOS))
    secrets = write_superexec_secrets(tmp_path / "secrets", len(SILOS), superlink=False)
    federation = LocalFederation(num_nodes=0, work_dir=tmp_path / "work", log_dir=out / "logs",
                                 security=Security(tls=certs, node_auth=True), keys=keys)
    run_config = out / "logs" / "run_config.toml"
    run_config.parent.mkdir(parents=True)
    run_config.write_text(tomli_w.dumps({"output-dir": str(out), "overrides": json.dumps([
        "method=fedavg", "method.arch=min", f"federation.num_clients={len(SILOS)}",
        f"federation.clients_per_round={len(SILOS)}", f"federation.min_replies={len(SILOS)}",
        "federation.num_rounds=1", "federation.eval_every=1", "federation.local_epochs=1",
        "method.finetune_epochs=1"])}))
    ports = [free_port() for _ in SILOS]

    # Execute
    with federation:
        federation.register([key.public for key in keys])
        gateway_port = free_port()
        gateway = federation.spawn(fleet_gateway_command(
            host=HOST, port=gateway_port, upstream=federation.address, tls=certs,
            node_keys=tmp_path / "keys"),
            "fleet-gateway.log")
        wait_healthy(f"https://{HOST}:{gateway_port}/health", gateway,
                     out / "logs" / "fleet-gateway.log", cafile=certs.ca_cert)
        for i, clientapps in enumerate(SILOS):
            node_dir = tmp_path / "work" / f"node-{i}"
            silo_env = dict(federation.env, FLWR_HOME=str(node_dir))
            federation.nodes.append(federation.spawn(supernode_command(
                superlink=f"{HOST}:{gateway_port}", runtime_host=HOST, runtime_port=ports[i],
                security=federation.security, private_key=keys[i].private,
                node_config=node_config(i, len(SILOS)), isolation="process",
                runtime_tls=TlsFiles.of_node(tmp_path / "certs", i),
                superexec_secret=secrets[i]),
                f"supernode-{i}.log", silo_env))
            executor = superexec_command(runtime_api=f"{HOST}:{ports[i]}",
                                         ca_cert=certs.ca_cert, superexec_secret=secrets[i])
            if clientapps == "warm":
                executor = [str(PFEDNAS), "deploy", "executor", "--clientapps", "warm",
                            "--node-dir", str(node_dir), "--", *executor[1:]]
            federation.spawn(executor, f"clientapp-{i}.log", silo_env)
        federation.wait_connected(federation.nodes)
        proc = subprocess.Popen(flwr_run_command(REPO, CONNECTION, run_config),
                                env=federation.env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, start_new_session=True)
        code = wait_run(proc, out / "logs" / SERVERAPP_PID_FILE)

    # Assert: both silos' clients trained and were evaluated, each through its own executor
    assert code == 0
    assert json.loads((out / "summary.json").read_text())["num_clients_evaluated"] == 2
    for i, clientapps in enumerate(SILOS):
        node_log = (out / "logs" / f"supernode-{i}.log").read_text()
        assert f"running on https://127.0.0.1:{ports[i]}" in node_log
        executor_log = (out / "logs" / f"clientapp-{i}.log").read_text()
        assert "flwr-clientapp" in executor_log
        tasks = re.findall(r"warm ClientApps: task \d+ ended: (.*)", executor_log)
        if clientapps == "warm":  # the id query, training and evaluation: 3 forks, all fine
            assert len(tasks) >= 3 and set(tasks) == {"exit code 0"}, executor_log
            assert "warm ClientApps: stopped" in executor_log  # with its executor
        else:
            assert tasks == [], executor_log
    gateway_log = (out / "logs" / "fleet-gateway.log").read_text()
    assert '"POST /v1/fleet/push-messages HTTP/1.1" 200' in gateway_log  # the replies went
    assert "refused" not in gateway_log                                  # through the gateway
    assert pids_with_token(federation.token) == []


@pytest.mark.slow
def test_unregistered_and_insecure_supernodes_are_refused(tmp_path: Path) -> None:
    certs = write_dev_certificates(tmp_path / "certs")
    registered = write_node_key(node_key_paths(tmp_path / "keys", 0))
    stranger = write_node_key(node_key_paths(tmp_path / "keys", 1))  # never registered
    federation = LocalFederation(num_nodes=1, work_dir=tmp_path / "work",
                                 log_dir=tmp_path / "logs", keys=[registered],
                                 security=Security(tls=certs, node_auth=True), node_timeout=90)

    with federation:
        unregistered = federation.start_supernode(
            1, private_key=stranger.private, config=node_config(1, 3), max_retries=1,
            log_name="unregistered.log")
        insecure = federation.start_supernode(
            2, private_key=None, config=node_config(2, 3), max_retries=1,
            security=Security(tls=None, node_auth=False), log_name="insecure.log")
        codes = (unregistered.wait(timeout=120), insecure.wait(timeout=120))
        nodes = federation.list_nodes()

    assert codes[0] != 0 and codes[1] != 0
    unregistered_log = (tmp_path / "logs" / "unregistered.log").read_text()
    assert "Failed to activate SuperNode" in unregistered_log
    assert "SuperNode ID:" not in unregistered_log
    insecure_log = (tmp_path / "logs" / "insecure.log").read_text()
    assert "Failed to initialize the connection to the SuperLink" in insecure_log
    assert "SuperNode ID:" not in insecure_log
    assert [n["status"] for n in nodes] == ["online"]  # only the registered node joined
    assert pids_with_token(federation.token) == []


def test_a_deployment_ends_with_its_accuracy_as_the_results_table_gives_it(
        tmp_path: Path) -> None:
    from pfednas.deploy.cli import finished_line

    summary = {"personalized_acc_mean": 0.431284898676203, "personalized_acc_std": 0.0234567}

    assert finished_line(summary, tmp_path) == ("[pfednas] deployment finished: personalized "
                                                f"accuracy 0.4313 ± 0.0235; results in {tmp_path}")


def test_failed_start_stops_every_process(tmp_path: Path) -> None:
    federation = LocalFederation(num_nodes=2, work_dir=tmp_path / "work",
                                 log_dir=tmp_path / "logs",
                                 keys=write_node_keys(tmp_path / "keys", 2),
                                 security=Security(tls=write_dev_certificates(tmp_path / "c"),
                                                   node_auth=True),
                                 node_timeout=0.5)  # SuperNodes cannot connect in time

    with pytest.raises(DeploymentError, match="did not connect"), federation:
        pass

    assert (tmp_path / "logs" / "supernode-1.log").exists()  # it got as far as the nodes
    assert pids_with_token(federation.token) == []


@pytest.mark.slow
def test_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [arg if arg != "nodes=3" else "nodes=2" for arg in SMALL]
    proc = subprocess.Popen([str(PFEDNAS), "deploy", "local", *args, "--out", str(out)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, preexec_fn=default_sigint)
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 180
    for line in proc.stdout:  # wait until the federation is up
        lines.append(line)
        if "SuperNodes connected" in line or time.monotonic() > deadline:
            break
    token = (out / "logs" / "run_token").read_text().strip()
    # SuperLink and SuperNodes, each with its SuperExec, and flwr run
    assert len(pids_with_token(token)) >= 6, "".join(lines)

    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
    remaining, _ = proc.communicate(timeout=60)

    assert proc.returncode == 130, "".join(lines) + remaining
    assert "interrupted" in remaining
    assert pids_with_token(token) == []
