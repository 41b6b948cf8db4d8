"""The launcher's start-up pieces that need no run: the staged app that `flwr run` packs."""

from __future__ import annotations

import io
import os
import subprocess
import time
import uuid
import zipfile
from pathlib import Path

from flwr.cli.build import build_fab_from_disk

from pfednas.run.launcher import (
    TOKEN_VAR,
    app_sources,
    descendants,
    process_alive,
    processes_with_token,
    run_env,
    staged_app,
    stop_processes,
)
from tests.conftest import REPO


def test_app_sources_are_the_package_dirs_of_pyproject() -> None:
    assert app_sources(REPO) == ["clients", "conf", "src/pfednas", "strategies"]


def test_staged_fab_holds_the_package_sources_and_nothing_else() -> None:
    with staged_app(REPO) as app:
        names = zipfile.ZipFile(io.BytesIO(build_fab_from_disk(app))).namelist()
        staged = app

    assert not staged.exists(), "the staged copy outlives the run"
    tops = {name.split("/")[0] for name in names}
    assert tops == {"pyproject.toml", ".info", "clients", "conf", "src", "strategies"}
    sources = {p.relative_to(REPO).as_posix() for p in (REPO / "src" / "pfednas").rglob("*.py")
               if "__pycache__" not in p.parts}
    assert sources <= set(names)
    assert "conf/config.yaml" in names and "strategies/base.py" in names
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in names)


def test_run_env_turns_off_rays_idle_prestarted_workers(tmp_path: Path) -> None:
    env = run_env(tmp_path, "token")

    assert env["RAY_prestart_worker_first_driver"] == "0"
    assert env["PFEDNAS_RUN_TOKEN"] == "token" and env["FLWR_HOME"] == str(tmp_path)


def test_descendants_are_every_process_below_the_roots() -> None:
    parents = {1: 0, 10: 1, 11: 10, 12: 11, 20: 1, 21: 20}

    assert descendants({10}, parents) == {10, 11, 12}
    assert descendants({10, 21}, parents) == {10, 11, 12, 21}
    assert descendants(set(), parents) == set()


def test_stopping_a_run_stops_a_child_that_dropped_the_token_from_its_environment() -> None:
    # Prepare: a process of the run (it carries the token) that started a child with an
    # environment of its own, as Ray's raylet starts its runtime-env agent
    token = uuid.uuid4().hex
    parent = subprocess.Popen(["bash", "-c", "env -i sleep 300 & wait"],
                              env={**os.environ, TOKEN_VAR: token})
    deadline = time.monotonic() + 10
    # until the child runs sleep: between its fork and the exec of ``env -i`` it still has
    # its parent's environment
    while time.monotonic() < deadline and not [c for c in _children(parent.pid)
                                               if _command(c) == "sleep"]:
        time.sleep(0.05)
    (child,) = _children(parent.pid)
    assert processes_with_token(token) == [parent.pid]  # the child does not carry it

    # Execute
    stopped = stop_processes(token)
    parent.wait(timeout=10)

    # Assert: both stopped
    assert set(stopped) == {parent.pid, child}
    assert not process_alive(child)


def _command(pid: int) -> str:
    """The process's command name (``/proc/PID/comm``); "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.is_file() else []
