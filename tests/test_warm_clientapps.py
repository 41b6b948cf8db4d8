"""The warm fork server and its ``flwr-clientapp`` shim (issue 65, item 2), with the fake entry
points of ``tests/warm_tasks.py`` in place of Flower's: what one task leaves behind, the next
never sees; exit codes, signals and output pass through as a cold process's would."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pfednas.deploy.warm import cold_command, server_command, socket_path, write_shim
from pfednas.deploy.warm_shim import SUN_PATH_MAX, socket_address
from pfednas.run.launcher import process_parents
from tests.conftest import PFEDNAS, REPO


@dataclass
class Warm:
    server: subprocess.Popen[str]
    node_dir: Path
    shim: Path

    def run(self, *args: str, cwd: Path, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.shim), *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=60, check=False)

    def start(self, *args: str, cwd: Path) -> subprocess.Popen[str]:
        return subprocess.Popen([str(self.shim), *args], cwd=cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def tasks(self) -> list[int]:
        return [pid for pid, ppid in process_parents().items() if ppid == self.server.pid]


def start_server(node_dir: Path, *extra: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "pfednas.deploy.warm", "--socket",
               str(socket_path(node_dir)), "--preload", "numpy", "--preload",
               "tests.warm_tasks", "--entry", "tests.warm_tasks:main", *extra]
    server = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not socket_path(node_dir).exists():
        assert server.poll() is None and time.monotonic() < deadline, server.communicate()
        time.sleep(0.05)
    return server


def cold_script(folder: Path) -> Path:
    """A stand-in for the real ``flwr-clientapp``: says it ran cold, with its arguments."""
    script = folder / "cold-flwr-clientapp"
    script.write_text(f"#!{sys.executable}\nimport sys\nprint('cold', sys.argv[1:])\n"
                      "sys.exit(7)\n")
    script.chmod(0o700)
    return script


@pytest.fixture
def warm(tmp_path: Path) -> Iterator[Warm]:
    # a node folder whose socket path is longer than sockaddr_un holds
    node_dir = tmp_path / ("node-" + "n" * 90)
    shim = write_shim(node_dir, str(cold_script(tmp_path)))
    server = start_server(node_dir)
    yield Warm(server, node_dir, shim)
    server.send_signal(signal.SIGTERM)
    output, _ = server.communicate(timeout=30)
    assert server.returncode == 0, output
    assert not socket_path(node_dir).exists()


def test_what_a_task_leaves_behind_the_next_task_never_sees(warm: Warm, tmp_path: Path) -> None:
    env = dict(os.environ, WARM_GIVEN="from the caller")

    first = warm.run("leave", cwd=tmp_path, env=env)
    second = warm.run("leave", cwd=tmp_path, env=env)

    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    seen = [json.loads(r.stdout) for r in (first, second)]
    for task in seen:  # nothing of the first task: no global, variable, descriptor or folder
        assert task["global"] == [] and task["env"] is None and task["fd"] is False
        assert task["cwd"] == str(tmp_path) and task["env_given"] == "from the caller"
        assert task["argv"] == [str(tmp_path / "cold-flwr-clientapp"), "leave"]
        assert task["path0"] == str(tmp_path.resolve())  # the command's folder, as cold
    assert seen[0]["pid"] != seen[1]["pid"]  # each a fresh fork of the server


def test_exit_codes_and_output_pass_through(warm: Warm, tmp_path: Path) -> None:
    ok, failed, killed = (warm.run(*args, cwd=tmp_path)
                          for args in (["exit", "0"], ["exit", "3"], ["kill"]))

    assert (ok.returncode, failed.returncode) == (0, 3)
    assert ok.stdout == failed.stdout == "to stdout\n"
    assert ok.stderr == failed.stderr == "to stderr\n"
    assert killed.returncode == -signal.SIGKILL  # as a cold process killed by SIGKILL
    assert warm.tasks() == []  # every task reaped


def test_a_task_ends_as_the_interpreter_ends_a_script(warm: Warm, tmp_path: Path) -> None:
    raised, interrupted, finished = (warm.run(command, cwd=tmp_path)
                                     for command in ("raise", "interrupt", "finish"))

    assert raised.returncode == 1
    assert raised.stderr.startswith("Traceback") and "RuntimeError: boom" in raised.stderr
    assert interrupted.returncode == -signal.SIGINT and "KeyboardInterrupt" in interrupted.stderr
    # its non-daemon threads were joined before its atexit handlers ran
    assert (finished.returncode, finished.stdout) == (0, "thread done\natexit ran\n")


def test_the_shim_forwards_sigterm_to_its_task(warm: Warm, tmp_path: Path) -> None:
    shim = warm.start("wait", cwd=tmp_path)
    assert shim.stdout is not None and shim.stdout.readline() == "waiting\n"

    shim.send_signal(signal.SIGTERM)

    assert shim.wait(timeout=30) == 42  # the task's own SIGTERM handler's exit code


def test_a_killed_shim_takes_its_task_with_it(warm: Warm, tmp_path: Path) -> None:
    shim = warm.start("wait", cwd=tmp_path)
    assert shim.stdout is not None and shim.stdout.readline() == "waiting\n"
    assert len(warm.tasks()) == 1

    shim.kill()
    shim.wait(timeout=30)

    deadline = time.monotonic() + 10
    while warm.tasks() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert warm.tasks() == []
    assert warm.run("exit", "0", cwd=tmp_path).returncode == 0  # the next task runs as ever


def test_a_stopped_server_ends_its_running_tasks_and_says_how(tmp_path: Path) -> None:
    node_dir = tmp_path / "node"
    shim = write_shim(node_dir, str(cold_script(tmp_path)))
    server = start_server(node_dir)
    task = subprocess.Popen([str(shim), "wait"], cwd=tmp_path, stdout=subprocess.PIPE,
                            text=True)
    assert task.stdout is not None and task.stdout.readline() == "waiting\n"

    server.send_signal(signal.SIGTERM)

    assert task.wait(timeout=30) == 42  # SIGTERM reached the task, its status the shim
    assert server.wait(timeout=30) == 0
    assert not socket_path(node_dir).exists()


def test_the_server_stops_when_its_parent_is_gone(tmp_path: Path) -> None:
    parent = subprocess.Popen(["sleep", "600"])
    server = start_server(tmp_path / "node", "--parent-pid", str(parent.pid))

    parent.kill()
    parent.wait()

    assert server.wait(timeout=30) == 0
    assert "parent process" in (server.stdout.read() if server.stdout else "")


def test_the_server_is_private_and_forks_with_one_thread(warm: Warm) -> None:
    path = socket_path(warm.node_dir)
    assert len(str(path)) > SUN_PATH_MAX  # reached through its folder's descriptor
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    # NumPy's OpenBLAS pool was stopped by the first fork and never restarted
    assert len(os.listdir(f"/proc/{warm.server.pid}/task")) == 1


def test_a_socket_path_too_long_for_sockaddr_un_goes_through_its_folder(tmp_path: Path
                                                                       ) -> None:
    folder = tmp_path / ("d" * 120)
    folder.mkdir()

    short = socket_address("/tmp/x.sock")
    address, fd = socket_address(str(folder / "s.sock"))

    assert short == ("/tmp/x.sock", None)
    assert fd is not None and address == f"/proc/self/fd/{fd}/s.sock"
    assert os.path.samefile(f"/proc/self/fd/{fd}", folder)
    os.close(fd)


def test_without_its_server_the_shim_runs_the_task_cold(tmp_path: Path) -> None:
    shim = write_shim(tmp_path / "node", str(cold_script(tmp_path)))

    result = subprocess.run([str(shim), "--token", "t"], capture_output=True, text=True,
                            timeout=60, check=False)

    assert result.returncode == 7 and result.stdout == "cold ['--token', 't']\n"
    assert result.stderr.count("\n") == 1 and "unreachable" in result.stderr


def test_flowers_clientapp_fails_warm_as_it_fails_cold(tmp_path: Path) -> None:
    # Prepare: a fork server preloading what a node's does, and Flower's real entry point
    node_dir = tmp_path / "node"
    cold = cold_command(str(Path(sys.executable).parent))
    shim = write_shim(node_dir, cold)
    server = subprocess.Popen(server_command(node_dir), cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not socket_path(node_dir).exists():
        assert server.poll() is None and time.monotonic() < deadline, server.communicate()
        time.sleep(0.1)
    args = ["--runtime-api-address", "127.0.0.1:9"]  # no token: Flower refuses to start

    # Execute
    warm_run, cold_run = (subprocess.run([command, *args], capture_output=True, text=True,
                                         timeout=120, check=False)
                          for command in (str(shim), cold))

    # Assert: the same exit code and the same message, named as Flower names its command
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=30) == 0
    assert warm_run.returncode == cold_run.returncode == 2
    assert warm_run.stderr == cold_run.stderr
    assert "flwr-clientapp: error: one of the arguments --token --token-file is required" in \
        warm_run.stderr


def test_a_shim_with_its_stdin_closed_hands_its_task_dev_null(warm: Warm, tmp_path: Path
                                                              ) -> None:
    result = subprocess.run([str(warm.shim), "exit", "0"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60, check=False, preexec_fn=lambda: os.close(0))

    assert (result.returncode, result.stdout) == (0, "to stdout\n")


def test_an_executor_whose_fork_server_cannot_start_stops_with_one_line(tmp_path: Path
                                                                        ) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the node folder would be

    result = subprocess.run([str(PFEDNAS), "deploy", "executor", "--node-dir", str(blocked),
                             "--", "--insecure", "--runtime-api-address", "127.0.0.1:9"],
                            capture_output=True, text=True, timeout=120, check=False)

    assert result.returncode == 1
    assert result.stderr.startswith("pfednas deploy executor: error:")
    assert result.stderr.count("\n") == 1
