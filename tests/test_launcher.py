"""The launcher's start-up pieces that need no run: the staged app that `flwr run` packs."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from flwr.cli.build import build_fab_from_disk

from pfednas.run.launcher import app_sources, run_env, staged_app
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
