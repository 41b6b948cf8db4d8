"""Bad input: one clear message and a non-zero exit before any Flower or Ray process starts.

Each case is a real `pfednas` command; they are all started at once by a module fixture,
as many at a time as the machine has cores (each is one interpreter's start-up), and each
test checks its own.
"""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import run_pfednas

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
    (["federation.num_clients=100", "dataset.alpha=0.05"], "cannot partition"),
    (["federation.ray_address=ray://head:10001"], "ray_address must be null, auto or HOST:PORT"),
    (["federation.ray_address=auto", "federation.ray_num_cpus=2"], "leave ray_num_cpus null"),
    (["federation.ray_address=127.0.0.1:1"], "cannot reach the Ray cluster at 127.0.0.1:1"),
]
IDS = [" ".join(case[0]) for case in CASES]

Outcome = tuple[Path, subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every case's output folder and finished command, keyed by its id."""
    base = tmp_path_factory.mktemp("bad_input")
    outs = {case_id: base / f"case{i}" / "run" for i, case_id in enumerate(IDS)}
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        futures = {case_id: pool.submit(run_pfednas, overrides, outs[case_id], 120)
                   for case_id, (overrides, _) in zip(IDS, CASES, strict=True)}
        return {case_id: (outs[case_id], future.result()) for case_id, future in futures.items()}


@pytest.mark.parametrize(("overrides", "message"), CASES, ids=IDS)
def test_bad_input_fails_before_any_process_starts(outcomes: dict[str, Outcome],
                                                   overrides: list[str], message: str) -> None:
    out, result = outcomes[" ".join(overrides)]

    assert result.returncode != 0
    assert message.lower() in (result.stderr + result.stdout).lower()
    assert "Traceback" not in result.stderr
    assert not (out / "logs").exists(), "a SuperLink was started"
