"""Start a run with ``flwr run`` on a SuperLink that this process owns, and stop it all.

``flwr run`` against its built-in "local" connection starts a detached
SuperLink on fixed ports and leaves it running. pfednas instead starts its own
``flower-superlink --simulation`` on a free loopback port, with a temporary
``FLWR_HOME`` whose ``config.toml`` names that SuperLink, and submits the app to
it with ``flwr run``. Every process started for the run (SuperLink, SuperExec,
the simulation runtime, Ray) inherits a unique ``PFEDNAS_RUN_TOKEN`` in its
environment; when the run ends — success, failure or Ctrl-C — every process
carrying the token is terminated, then killed.

Ray is private to the run by default: ``RAY_ADDRESS=local`` makes Flower's
``ray.init`` start a fresh single-node Ray (a ``RAY_ADDRESS`` of the user's, or a
cluster ``ray start`` left on the machine, is not joined). With
``federation.ray_address`` (``auto`` or ``HOST:PORT``) ``RAY_ADDRESS`` names that
cluster instead and the simulation runtime joins it as a driver; the cluster's
processes (GCS, raylets, their workers) were not started by us and do not carry
the token, so they outlive the run — the run's client actors end with its
driver, which does carry it.

The console shows pfednas's own lines (each once), the results table, and warnings and
errors; everything ``flwr run`` streams — Flower's and Ray's notices included — is
written to ``logs/flwr_run.log``.

``flwr run APP_DIR`` walks every file below ``APP_DIR`` to build the FAB (in the
repository that includes ``.venv/``: ~50 000 files, seconds of a run's start-up) and
packs all of its Python, Markdown, YAML and JSON files (``docs/``, ``benchmarks/``,
results written there). It is therefore given a staged copy of the app instead
(:func:`staged_app`): ``pyproject.toml`` and the package sources it declares.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import tomli_w

from pfednas import progress
from pfednas.config import (
    CHECKPOINT_FILE,
    SERVERAPP_PID_FILE,
    SIMULATION_ENV,
    ConfigError,
    conf_dir,
)

TOKEN_VAR = "PFEDNAS_RUN_TOKEN"
SERVERAPP_DIED = 3  # wait_run's code when the ServerApp process died
CONNECTION = "pfednas-local"

# the exit codes of every pfednas command: a bad configuration, a run that failed
EXIT_CONFIG = 2
EXIT_RUN = 1


def app_dir() -> Path:
    """The Flower app directory (the repository holding ``pyproject.toml``)."""
    root = conf_dir().parent
    if not (root / "pyproject.toml").is_file():
        raise ConfigError(f"no pyproject.toml beside {conf_dir()}: install pfednas from its "
                          "repository with `pip install -e .`")
    return root


@dataclass(frozen=True)
class SimulationRequest:
    """What ``flwr run`` needs for one simulation."""

    app_dir: Path
    run_config: dict[str, str]
    num_supernodes: int
    client_cpus: int
    client_gpus: float
    ray_num_cpus: int | None
    log_dir: Path
    announced: tuple[str, ...] = ()  # lines the command already printed (not repeated)
    ray_address: str | None = None   # None: a private Ray; "auto" | HOST:PORT: join that cluster
    # the run's FLWR_HOME (its SuperLink connection; Flower installs the app there); None: a
    # temporary folder, removed with the run's processes (nothing reads it afterwards)
    flwr_home: Path | None = None


def app_sources(app_dir: Path) -> list[str]:
    """The source folders ``pyproject.toml`` declares (``[tool.setuptools] package-dir``)."""
    pyproject = tomllib.loads((app_dir / "pyproject.toml").read_text())
    package_dir = pyproject.get("tool", {}).get("setuptools", {}).get("package-dir", {})
    return sorted({str(path) for path in package_dir.values()})


@contextmanager
def staged_app(app_dir: Path) -> Iterator[Path]:
    """A temporary copy of the Flower app for ``flwr run``: ``pyproject.toml`` and the
    package sources, nothing else (no ``.venv/`` to walk, no docs or results to pack)."""
    with tempfile.TemporaryDirectory(prefix="pfednas-app-") as tmp:
        staged = Path(tmp) / app_dir.name
        staged.mkdir()
        shutil.copy2(app_dir / "pyproject.toml", staged / "pyproject.toml")
        for source in app_sources(app_dir):
            shutil.copytree(app_dir / source, staged / source,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        yield staged


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_flwr_home(flwr_home: Path, address: str) -> Path:
    """A ``config.toml`` whose default connection is our own SuperLink."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    path = flwr_home / "config.toml"
    path.write_text(tomli_w.dumps({"superlink": {
        "default": CONNECTION,
        CONNECTION: {"address": address, "insecure": True},
    }}))
    return path


def run_env(flwr_home: Path, token: str, ray_address: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != SIMULATION_ENV}
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env.update({
        "FLWR_HOME": str(flwr_home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_DEDUP_LOGS": "0",
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
        # ray.init() reads it: "local" starts a private Ray whatever runs on the machine
        "RAY_ADDRESS": ray_address or "local",
        # Ray starts one idle worker per CPU when the driver connects; Flower's actors carry a
        # runtime_env (PYTHONPATH), so they never use those: on 2 cores, 2 wasted interpreters.
        "RAY_prestart_worker_first_driver": "0",
        # A single-node local Ray: bind to 127.0.0.1, not the host's outward address.
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "HF_HUB_OFFLINE": env.get("HF_HUB_OFFLINE", "0"),
        # the clients' final-evaluation events, where this console draws bars of them
        progress.EVENTS_ENV: "1" if progress.enabled() else "0",
        TOKEN_VAR: token,
    })
    return env


def processes_with_token(token: str, var: str = TOKEN_VAR) -> list[int]:
    """PIDs (other than ours) whose environment carries ``var=token`` (by default
    ``PFEDNAS_RUN_TOKEN``: a run's processes)."""
    needle = f"{var}={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def process_parents() -> dict[int, int]:
    """Every process's parent: ``{pid: ppid}`` (from ``/proc/<pid>/stat``)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        parents[int(entry.name)] = int(stat.rsplit(b")", 1)[1].split()[1])
    return parents


def descendants(roots: set[int], parents: dict[int, int]) -> set[int]:
    """``roots`` and every process below one of them in ``parents`` (pure)."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def run_processes(token: str, var: str = TOKEN_VAR) -> list[int]:
    """The run's processes: those whose environment carries ``var=token``, and every process
    below one of them (Ray's runtime-env agent, a raylet's child, is started with an
    environment of its own, without the token), ours excepted."""
    found = descendants(set(processes_with_token(token, var)), process_parents())
    found.discard(os.getpid())
    return sorted(found)


def stop_processes(token: str, *, var: str = TOKEN_VAR, grace: float = 5.0) -> list[int]:
    """SIGTERM every process of the run (:func:`run_processes`), then SIGKILL what is left
    after ``grace``. The processes below the token's are found before any is signalled (an
    orphan's parent becomes init)."""
    pids = run_processes(token, var)

    def alive() -> list[int]:
        return [pid for pid in pids if process_alive(pid)]

    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and (alive() or processes_with_token(token, var)):
        time.sleep(0.1)
    left = sorted(set(alive()) | set(run_processes(token, var)))
    for pid in left:
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and (alive() or processes_with_token(token, var)):
        time.sleep(0.1)
    return pids


def _signal(pid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def wait_healthy(port: int, proc: subprocess.Popen[bytes], log_file: Path,
                 timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"SuperLink exited with code {proc.returncode}; see {log_file}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    raise RuntimeError(f"SuperLink did not become healthy within {timeout:.0f}s; see {log_file}")


@contextmanager
def local_superlink(flwr_home: Path, log_dir: Path, ray_address: str | None = None
                    ) -> Iterator[tuple[dict[str, str], str]]:
    """A simulation SuperLink on a free port; yields (env for ``flwr``, token).

    Everything started under it is stopped on exit, whatever the exit.
    """
    token = uuid.uuid4().hex
    port = free_port()
    write_flwr_home(flwr_home, f"127.0.0.1:{port}")
    env = {**run_env(flwr_home, token, ray_address), SIMULATION_ENV: "1"}
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / "run_token").write_text(token + "\n")
    log_file = log_dir / "superlink.log"
    command = ["flower-superlink", "--insecure", "--simulation", "--isolation", "subprocess",
               "--host", "127.0.0.1", "--port", str(port), "--database", ":flwr-in-memory:",
               "--disable-runtime-dependency-installation"]
    with log_file.open("ab") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_healthy(port, proc, log_file)
        yield env, token
    finally:
        stop_processes(token)


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, killed but not yet reaped, counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def serverapp_pid(pid_file: Path) -> int | None:
    """The ServerApp's PID from its pid file, if it runs on this machine."""
    try:
        pid, host = pid_file.read_text().split()
    except (OSError, ValueError):
        return None
    return int(pid) if host == socket.gethostname() else None


def clear_pid_file(pid_file: Path) -> None:
    """Remove an earlier run's ServerApp pid file (a run resumed or repeated in its own
    folder): its process is gone, and :func:`wait_run` would take this run for dead."""
    pid_file.unlink(missing_ok=True)


def wait_run(proc: subprocess.Popen[Any], pid_file: Path, *, poll: float = 1.0) -> int:
    """Wait for ``flwr run --stream``; its exit code, or ``SERVERAPP_DIED``.

    If the ServerApp process dies (killed, out of memory) the SuperLink keeps
    the run open and ``flwr run`` streams for ever, so the ServerApp's PID is
    watched and the run is stopped when it is gone. An earlier run's pid file in the
    same folder must be removed before the run starts (:func:`clear_pid_file`).
    """
    while True:
        try:
            return proc.wait(timeout=poll)
        except subprocess.TimeoutExpired:
            pass
        pid = serverapp_pid(pid_file)
        if pid is not None and not process_alive(pid) and proc.poll() is None:
            print(f"[pfednas] the ServerApp process (pid {pid}) died; stopping the run",
                  file=sys.stderr, flush=True)
            _signal(proc.pid, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            return SERVERAPP_DIED


def incomplete_message(code: int, out: Path) -> str:
    what = ("the ServerApp process died" if code == SERVERAPP_DIED
            else f"flwr run exit code {code}")
    message = f"the run did not complete ({what}); logs in {out / 'logs'}"
    if (out / CHECKPOINT_FILE).is_file():
        message += f"\n  continue it from its last checkpoint with: resume={out}"
    return message



FLWR_RUN_LOG = "flwr_run.log"
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
# Flower's notices about its own defaults: for the log, not for the user of pfednas
FLOWER_NOTICES = ("Since flwr 1.32", "To change federation size",
                  "flwr federation simulation-config")


def console_line(line: str, shown: set[str]) -> IO[str] | None:
    """Where a line streamed by ``flwr run`` goes besides the log: stdout for pfednas's
    own lines (the first time) and the results table, stderr for warnings and errors
    other than Flower's notices, None for the rest (Flower's and Ray's own output)."""
    text = ANSI_ESCAPE.sub("", line).strip()
    if text.startswith("[pfednas"):
        if text in shown:
            return None
        shown.add(text)
        return sys.stdout
    if text.startswith(("+-", "| ")):
        return sys.stdout
    level = text.split(":", 1)[0].strip()
    if level in ("WARNING", "ERROR", "CRITICAL") and not any(n in text for n in FLOWER_NOTICES):
        return sys.stderr
    return None


def _pump(stream: IO[str], log_file: Path, shown: set[str]) -> None:
    """Copy the stream to the log, the user's lines to the console, and draw the run's
    progress bars (:mod:`pfednas.progress`) where the console is a terminal."""
    bars = progress.RunBars()
    bars.start()
    try:
        with log_file.open("a") as log:
            for line in stream:
                log.write(line)
                log.flush()
                text = ANSI_ESCAPE.sub("", line).strip()
                if bars.feed(text):
                    continue
                target = console_line(line, shown)
                if target is not None:
                    with progress.writing_over(target):
                        target.write(line if line.endswith("\n") else line + "\n")
                        target.flush()
    finally:
        bars.close()


def start_streamed(command: list[str], env: dict[str, str], log_file: Path,
                   announced: tuple[str, ...] = ()) -> tuple[subprocess.Popen[Any],
                                                             threading.Thread]:
    """Start ``flwr run --stream``: all of its output to ``log_file``, the user's share of it
    to the console (:func:`console_line`). Join the thread after the process ended."""
    proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace",
                            start_new_session=True)
    assert proc.stdout is not None
    thread = threading.Thread(target=_pump, args=(proc.stdout, log_file, set(announced)),
                              daemon=True)
    thread.start()
    return proc, thread


def flwr_run_command(request: SimulationRequest, run_config_file: Path) -> list[str]:
    fed = [f"num-supernodes={request.num_supernodes}", "backend='ray'",
           f"client-resources-num-cpus={int(request.client_cpus)}",
           f"client-resources-num-gpus={float(request.client_gpus)}"]
    if request.ray_num_cpus is not None and request.ray_address is None:
        # sizes the private Ray only: ray.init refuses num_cpus when it joins a cluster
        fed.append(f"init-args-num-cpus={int(request.ray_num_cpus)}")
    return ["flwr", "run", str(request.app_dir), CONNECTION, "--stream",
            "--run-config", str(run_config_file), "--federation-config", " ".join(fed)]


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise ``SystemExit`` here, so cleanup code runs as for Ctrl-C."""

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_simulation(request: SimulationRequest) -> int:
    """Run the app to completion with ``flwr run --stream``; returns its exit code."""
    with terminate_as_interrupt():
        return _run_simulation(request)


def _run_simulation(request: SimulationRequest) -> int:
    run_config_file = request.log_dir / "run_config.toml"
    request.log_dir.mkdir(parents=True, exist_ok=True)
    clear_pid_file(request.log_dir / SERVERAPP_PID_FILE)
    run_config_file.write_text(tomli_w.dumps(request.run_config))
    with tempfile.TemporaryDirectory(prefix="pfednas-flwr-home-") as temporary, \
            local_superlink(request.flwr_home or Path(temporary), request.log_dir,
                            request.ray_address) as (env, _token), \
            staged_app(request.app_dir) as app:
        command = flwr_run_command(replace(request, app_dir=app), run_config_file)
        (request.log_dir / "flwr_run.cmd").write_text(
            f"# run on a temporary staged copy of {request.app_dir} (see staged_app)\n"
            + shlex.join(flwr_run_command(request, run_config_file)) + "\n")
        proc, pump = start_streamed(command, env, request.log_dir / FLWR_RUN_LOG,
                                    request.announced)
        try:
            code = wait_run(proc, request.log_dir / SERVERAPP_PID_FILE)
        except BaseException:
            _signal(proc.pid, signal.SIGTERM)
            raise
        pump.join(timeout=10)
        return code
