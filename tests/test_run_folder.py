"""A run folder holds what was asked for (issue 63, item 11): checkpoints at the rounds
``checkpoint_every`` names (and the final one where ``export --from-checkpoint`` reads it),
no ``FLWR_HOME`` (the launcher's is temporary), no sweep folder of a refused sweep. The
real run's folder is checked in test_e2e.py (no ``cli.log`` left empty)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pfednas.app.server_app import checkpoint_due
from pfednas.cli import with_output_dir
from pfednas.config import compose, settings_from_cfg
from pfednas.deploy.arguments import UsageError, split_overrides
from pfednas.run import launcher
from pfednas.run.launcher import SimulationRequest, run_simulation
from tests.conftest import PFEDNAS, REPO


@pytest.mark.parametrize(("method", "rounds", "every", "written"), [
    ("fedavg", 2, 5, []),            # the run: no checkpoint
    ("fedavg", 10, 5, [5, 10]),
    ("fedavg", 7, 5, [5]),
    ("fedavg", 7, 0, []),
    # export --from-checkpoint cuts the clients' models from the final round's supernet
    ("perfedrlnas", 2, 5, [2]),
    ("perfedrlnas", 7, 5, [5, 7]),
    ("hapfnas", 7, 0, []),
])
def test_checkpoints_are_written_at_multiples_of_checkpoint_every(
        method: str, rounds: int, every: int, written: list[int]) -> None:
    # Prepare
    settings = settings_from_cfg(compose([f"method={method}", f"federation.num_rounds={rounds}",
                                          f"checkpoint_every={every}"]))

    # Execute / Assert
    assert [r for r in range(1, rounds + 1) if checkpoint_due(r, settings)] == written


def test_the_launchers_flwr_home_is_temporary_and_outside_the_run_folder(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Prepare: the SuperLink and `flwr run` replaced; the home gets what Flower writes there
    homes: list[Path] = []

    @contextmanager
    def superlink(home: Path, _logs: Path, _ray: str | None) -> Iterator[tuple[dict, str]]:
        homes.append(home)
        (home / "apps").mkdir(parents=True)
        (home / "config.toml").write_text("")
        yield {}, "token"

    class Finished:  # the streamed `flwr run`, and the thread that pumped its output
        pid = 0

        def join(self, timeout: float) -> None:
            pass

    monkeypatch.setattr(launcher, "local_superlink", superlink)
    monkeypatch.setattr(launcher, "start_streamed", lambda *_args: (Finished(), Finished()))
    monkeypatch.setattr(launcher, "wait_run", lambda *_args: 0)
    out = tmp_path / "run"
    request = SimulationRequest(app_dir=REPO, run_config={},
                                num_supernodes=2, client_cpus=1, client_gpus=0.0,
                                ray_num_cpus=None, log_dir=out / "logs")

    # Execute
    code = run_simulation(request)

    # Assert: used during the run, gone after it, never in the run folder
    assert code == 0 and len(homes) == 1
    assert not homes[0].is_relative_to(out) and not homes[0].exists()
    assert sorted(p.name for p in out.iterdir()) == ["logs"]


def test_a_refused_sweep_leaves_no_folder(tmp_path: Path) -> None:
    # Prepare: a sweep whose first job the config's checks refuse
    sweep = tmp_path / "multirun" / "sweep"

    # Execute
    result = subprocess.run([str(PFEDNAS), "-m", "dataset.alpha=0", f"hydra.sweep.dir={sweep}"],
                            cwd=REPO, env=dict(os.environ, HYDRA_FULL_ERROR="0"),
                            capture_output=True, text=True, timeout=120, check=False)

    # Assert: no multirun.yaml left behind, nor its empty parent
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("pfednas: error: invalid data configuration: dataset.alpha")
    assert not (tmp_path / "multirun").exists()


@pytest.mark.parametrize(("argv", "expected"), [
    (["method=fedavg"], ["method=fedavg"]),
    (["output_dir=/tmp/a"], ["output_dir=/tmp/a", "hydra.run.dir=/tmp/a"]),
    (["output_dir=/tmp/a", "hydra.run.dir=/tmp/a"], ["output_dir=/tmp/a", "hydra.run.dir=/tmp/a"]),
    (["-m", "seed=0,1", "output_dir=/tmp/s"],
     ["-m", "seed=0,1", "output_dir=/tmp/s", "hydra.sweep.dir=/tmp/s"]),
    (["output_dir=null"], ["output_dir=null"]),
])
def test_output_dir_names_the_runs_folder(argv: list[str], expected: list[str]) -> None:
    # a user's output_dir=DIR was accepted and the run written under outputs/ all the same
    assert with_output_dir(argv) == expected


def test_output_dir_and_another_run_folder_are_refused() -> None:
    with pytest.raises(ValueError, match="disagree"):
        with_output_dir(["output_dir=/tmp/a", "hydra.run.dir=/tmp/b"])
    with pytest.raises(UsageError, match="disagree"):
        split_overrides(["output_dir=/tmp/a", "hydra.run.dir=/tmp/b"], 2)
    assert split_overrides(["output_dir=/tmp/a"], 2)[2] == Path("/tmp/a")
