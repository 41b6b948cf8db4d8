"""Bad input: one clear message and a non-zero exit before any Flower or Ray process starts."""

from __future__ import annotations

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


@pytest.mark.parametrize(("overrides", "message"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_fails_before_any_process_starts(tmp_path: Path, overrides: list[str],
                                                   message: str) -> None:
    result = run_pfednas(overrides, tmp_path / "run", timeout=120)

    assert result.returncode != 0
    assert message.lower() in (result.stderr + result.stdout).lower()
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "logs").exists(), "a SuperLink was started"
