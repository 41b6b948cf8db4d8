"""``pfednas predict MODEL --silo DIR`` on a node: the client's evaluation split of its silo
folder, split exactly as its ClientApp split it (the deployed check of the same figure is
the containers test's arm64 node), and one line for what cannot be that split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Context, RecordDict

from pfednas.app.client_app import node_settings
from pfednas.delivery.model_source import PredictError
from pfednas.delivery.predict import main as predict_main
from pfednas.delivery.predict import silo_split
from pfednas.node.data import node_client_data

OVERRIDES = ["dataset=digits", "federation.num_clients=3", "federation.clients_per_round=3",
             "seed=5"]


def _silo(root: Path, n: int = 240) -> Path:
    rng = np.random.default_rng(0)
    folder = root / "silo"
    folder.mkdir()
    np.savez_compressed(folder / "data.npz", x=rng.random((n, 8, 8), dtype=np.float32),
                        y=np.arange(n, dtype=np.int64) % 10)
    return folder


def _spec(overrides: list[str], split: str = "test", client_id: int = 1) -> dict[str, Any]:
    return {"client_id": client_id, "dataset": "digits", "evaluation": {"split": split},
            "run": {"overrides": overrides, "seed": 5}}


def _node_split(folder: Path, overrides: list[str], client_id: int = 1) -> Any:
    """What the node's ClientApp reads: its settings from the run config, its silo."""
    context = Context(run_id=1, node_id=1, state=RecordDict(),
                      node_config={"client-id": client_id, "data-dir": str(folder)},
                      run_config={"overrides": json.dumps(overrides)})
    return node_client_data(context, node_settings(context))


def test_the_silo_split_is_the_one_the_clientapp_evaluated_on(tmp_path: Path) -> None:
    # Prepare: a silo folder and the spec a node keeps beside its model
    folder = _silo(tmp_path)
    node = _node_split(folder, OVERRIDES)

    # Execute
    x, y = silo_split(_spec(OVERRIDES), folder)
    other_x, _ = silo_split(_spec([*OVERRIDES[:-1], "seed=6"]),
                            folder)

    # Assert: sample for sample the node's test split; the run's seed decides it
    np.testing.assert_array_equal(x, node.test.x)
    np.testing.assert_array_equal(y, node.test.y)
    assert 0 < len(y) < 240
    assert not np.array_equal(other_x, x)
    vx, _ = silo_split(_spec(OVERRIDES, split="val"), folder)
    np.testing.assert_array_equal(vx, node.val.x)


@pytest.mark.parametrize(("spec", "where", "expected"), [
    (_spec(OVERRIDES), "missing", "is not a silo folder"),
    ({"client_id": 1, "dataset": "digits"}, "silo", "records no run overrides"),
    (_spec(["dataset=fashion_mnist"]), "silo", "trained on digits"),
    (_spec(OVERRIDES, client_id=2), "silo", "client 2's, not client 1's"),
])
def test_what_cannot_be_the_nodes_split_gets_one_line(tmp_path: Path, spec: dict[str, Any],
                                                      where: str, expected: str) -> None:
    folder = _silo(tmp_path) if where == "silo" else tmp_path / where

    with pytest.raises(PredictError, match=expected):
        silo_split(spec, folder, client_id=1)


def test_predict_refuses_silo_with_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) \
        -> None:
    with pytest.raises(SystemExit) as exit_info:
        predict_main([str(tmp_path / "m.onnx"), "--silo", str(tmp_path), "--data",
                      str(tmp_path)])

    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
