"""Bad input: one line naming the key, exit code 2, before any Flower or Ray process starts.

Each case of :data:`CASES` is the `pfednas` command's own ``main`` with its arguments, in
this process (the path a command takes: its Hydra composition, its checks, its one line);
:data:`REAL` are three of them as real `pfednas` processes, started at once by a module
fixture, which also shows that nothing a process prints besides adds a line. Values that
need the config's own checks only (:data:`IN_PROCESS`) are given to the command's job
function in this process.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from pfednas.cli import check_job, main, run_job
from pfednas.config import compose
from pfednas.data import partition_repair
from pfednas.run.launcher import processes_with_token
from tests.conftest import PFEDNAS, TEST_RUN_VAR, run_pfednas

CASES = [
    (["method=nope"], "Could not find 'method/nope'"),
    (["dataset=nope"], "Could not find 'dataset/nope'"),
    (["dataset.name=imagenet"], "unknown dataset"),
    (["dataset.alpha=0"], "alpha"),
    (["dataset.alpha=-1"], "alpha"),
    (["federation.num_clients=3", "federation.clients_per_round=5"], "must not exceed"),
    (["federation.clients_per_round=0"], "clients_per_round must be >= 1"),
    (["federation.num_rounds=0"], "num_rounds must be >= 1"),
    (["federation.num_clients=1000"], "too small"),
    (["federation.lr=-0.1"], "lr must be > 0"),
    (["+federation.typo=1"], "unknown key"),
    (["method=spider", "search_space=mobilenetv3"], "needs search_space=darts_s2"),
    (["federation.min_replies=9"], "min_replies"),
    (["method.policy_optimizer=rmsprop"], "policy optimizer"),
    (["fault_injection={clients: [1], kind: explode}"], "fault kind"),
    (["dataset=fashion_mnist", "dataset.root=/nonexistent/fmnist"], "/nonexistent/fmnist"),
    (["federation.ray_address=ray://head:10001"], "ray_address must be null, auto or HOST:PORT"),
    (["federation.ray_address=auto", "federation.ray_num_cpus=2"], "leave ray_num_cpus null"),
    (["federation.ray_address=127.0.0.1:1"], "cannot reach the Ray cluster at 127.0.0.1:1"),
    # Hydra's composition errors and unresolvable values: one line, not Hydra's report
    (["search_space=no_such_space"],
     "Could not find 'search_space/no_such_space': config group search_space has darts_s2"),
    (["federation.foo=1"], "unknown key federation.foo"),
    # keys that moved or left say where (issue 44)
    (["method.hardware.memory_low=0.5"], "the clients' hardware is federation.hardware.*"),
    (["federation.lr=${oops}"], "federation.lr: Interpolation key 'oops' not found"),
    (["federation.lr=[1,"], "no viable alternative at input '[1,'"),
    (["-m", "method=fedavg,nope"], "Could not find 'method/nope'"),
    (["federation.lr=nan"], "federation.lr must be a finite number, got nan"),
    (["method=fedavg_defaults"], "method=fedavg_defaults is the schema the method configs"),
    (["dataset=dataset_defaults"], "dataset=dataset_defaults is the schema the dataset configs"),
    # partitioners by name and feature skew (issue 46)
    (["dataset.partitioner=zipf"], "dataset.partitioner: unknown 'zipf'"),
    (["dataset.partitioner=pathological", "dataset.classes_per_client=0"],
     "dataset.classes_per_client must be an integer in [2, 10]"),
    (["dataset.partitioner=natural_id"], "needs the clients named in the data"),
    (["dataset.feature_skew.blur=-1"], "dataset.feature_skew.blur"),
    (["dataset=own", "dataset.root=/nonexistent/mine.npz"], "/nonexistent/mine.npz"),
]
if not torch.cuda.is_available():  # on a GPU, test_e2e runs this setting
    CASES.append((["federation.client_gpus=0.2"], "this machine has no CUDA GPU"))
IDS = [" ".join(case[0]) for case in CASES]

Outcome = tuple[Path, subprocess.CompletedProcess[str]]
# a Hydra composition error, a check of the job's values, a sweep's: as real processes
REAL = [(["method=nope"], "Could not find 'method/nope'"),
        (["federation.lr=-0.1"], "lr must be > 0"),
        (["-m", "method=fedavg,nope"], "Could not find 'method/nope'")]


def check_refused(out: Path, code: object, err: str, message: str) -> None:
    assert code == 2, err
    assert err.startswith("pfednas: error: ") and err.count("\n") == 1, err
    assert message.lower() in err.lower()
    assert not (out / "logs").exists(), "a SuperLink was started"
    assert not out.exists(), "a refused command left an output folder"


@pytest.fixture
def logging_kept() -> Iterator[None]:
    """The logging configuration as it was before the test: the command's Hydra configures
    its job's logging (a file handler in its output folder), which must not outlive it."""
    def loggers() -> list[logging.Logger]:
        named = logging.Logger.manager.loggerDict.values()
        return [logging.getLogger(), *(lg for lg in named if isinstance(lg, logging.Logger))]

    saved = {lg: (list(lg.handlers), lg.level, lg.propagate, lg.disabled) for lg in loggers()}
    yield
    for lg in loggers():
        handlers, level, propagate, disabled = saved.get(lg, ([], logging.NOTSET, True, False))
        for handler in lg.handlers:
            if handler not in handlers:
                handler.close()
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate, lg.disabled = propagate, disabled


@pytest.mark.parametrize(("overrides", "message"), CASES, ids=IDS)
@pytest.mark.usefixtures("logging_kept")
def test_bad_input_fails_before_any_process_starts(
        overrides: list[str], message: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["pfednas", *overrides, f"hydra.run.dir={out}"])

    with pytest.raises(SystemExit) as exit_:
        main()

    check_refused(out, exit_.value.code, capsys.readouterr().err, message)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Each :data:`REAL` case's output folder and finished command, keyed by its id."""
    base = tmp_path_factory.mktemp("bad_input")
    outs = {" ".join(case): base / f"case{i}" / "run" for i, (case, _) in enumerate(REAL)}
    with ThreadPoolExecutor(max_workers=min(len(REAL), os.cpu_count() or 1)) as pool:
        futures = {key: pool.submit(run_pfednas, overrides, outs[key], 120)
                   for key, (overrides, _) in zip(outs, REAL, strict=True)}
        return {key: (outs[key], future.result()) for key, future in futures.items()}


@pytest.mark.parametrize(("overrides", "message"), REAL, ids=[" ".join(c[0]) for c in REAL])
@pytest.mark.slow
def test_the_command_itself_says_one_line_and_starts_nothing(
        outcomes: dict[str, Outcome], overrides: list[str], message: str) -> None:
    out, result = outcomes[" ".join(overrides)]

    check_refused(out, result.returncode, result.stderr, message)
    assert result.stdout == ""


IN_PROCESS = [
    *((["method=perfedrlnas", f"{key}={value}"], f"{key} must be a finite number, got {value}")
      for key, value in [("federation.lr", "inf"), ("federation.momentum", "nan"),
                         ("federation.eval_timeout", "inf"),
                         ("federation.examples_tolerance", "nan"),
                         ("federation.weight_decay", "-inf"), ("federation.round_timeout", "nan"),
                         ("method.lambda_time", "inf"), ("method.policy_lr", "nan"),
                         ("dataset.alpha", "nan")]),
    (["search_space.width_mults=[0.5,inf]"],
     "search_space.width_mults[1] must be a finite number, got inf"),
    (["federation.hardware.memory_low=nan"],
     "federation.hardware.memory_low must be a finite number"),
    (["method=hapfnas", "federation.hardware.memory_low=0.0001",
      "federation.hardware.memory_high=0.0002"],
     "method=hapfnas: the smallest subnet's memory"),
    (["federation.lr=${oops}"], "federation.lr: Interpolation key 'oops' not found"),
    # the options involved and the fewest rounds they need (issue 44)
    (["method=hapfnas", "federation.num_rounds=4"],
     "method.distill_rounds (5) must be >= 0, method.search_rounds (1) >= 1"),
    (["method=hapfnas", "federation.num_rounds=4"], "federation.num_rounds >= 7"),
    # an architecture string is checked against the run's space before anything starts
    (["method=ditto", "method.arch=fits_all"],
     "arch must be null (the supernet) or an architecture string"),
    (["method=ditto", "method.arch=darts_s2:n_ss-r_cc"], "method.arch: "),
    (["method=fedavg", "method.arch=vit:c8d1k3"], "method.arch: "),
]


@pytest.mark.parametrize(("overrides", "message"), IN_PROCESS,
                         ids=[" ".join(case[0]) for case in IN_PROCESS])
def test_bad_value_stops_the_job_with_one_line_naming_the_key(
        overrides: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        run_job(compose(overrides))

    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith("pfednas: error: ") and err.count("\n") == 1
    assert message in err


def test_deploy_local_refuses_a_non_finite_value_before_anything_starts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pfednas.deploy.cli import main as deploy_main

    code = deploy_main(["local", "nodes=2", "federation.lr=nan", "--insecure",
                        "--out", str(tmp_path / "run")])

    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "federation.lr must be a finite number, got nan" in err
    assert not (tmp_path / "run").exists()


def test_printing_the_config_checks_it_as_a_run_would() -> None:
    # `pfednas --cfg job` of a value no run accepts: one line, exit 2 (it printed and exited 0)
    bad = subprocess.run([str(PFEDNAS), "--cfg", "job", "federation.num_rounds=abc"],
                         capture_output=True, text=True, check=False, timeout=120)
    good = subprocess.run([str(PFEDNAS), "--cfg", "job", "federation.num_rounds=7"],
                          capture_output=True, text=True, check=False, timeout=120)

    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == ("pfednas: error: federation.num_rounds: Value 'abc' of type 'str' "
                          "could not be converted to Integer\n")
    assert good.returncode == 0 and "num_rounds: 7" in good.stdout


def test_extreme_label_skew_is_no_bad_input() -> None:
    # 100 clients of the 1,797 digits at α 0.05: no Dirichlet draw gives all of them 10
    # samples; the job's checks pass (the draw is repaired) where they refused it before
    settings, _, _ = check_job(compose(["federation.num_clients=100", "dataset.alpha=0.05"]))

    assert settings.data.num_clients == 100 and partition_repair(settings.data) is not None


@pytest.mark.slow
def test_a_command_past_its_timeout_is_stopped_with_all_it_started(tmp_path: Path) -> None:
    # Prepare: the main job, given 25 s: time to start its SuperLink, not to finish
    mark = uuid.uuid4().hex
    out = tmp_path / "run"

    # Execute
    with pytest.raises(subprocess.TimeoutExpired):
        run_pfednas([], out, timeout=25, mark=mark)

    # Assert: it had started its SuperLink (its logs), and nothing it started is left
    assert (out / "logs").exists()
    assert processes_with_token(mark, TEST_RUN_VAR) == []
