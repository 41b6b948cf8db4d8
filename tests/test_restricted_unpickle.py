"""No code from a path: CIFAR's pickles are read with a restricted unpickler, and a deployed
ServerApp refuses a run config's ``dataset.root`` before anything reads data."""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, RecordDict

from pfednas.app import server_app
from pfednas.config import DATA_ROOT_ENV, OUTPUT_BASE_ENV, SIMULATION_ENV, ConfigError
from pfednas.data import DataError
from pfednas.data.registry import load_arrays
from pfednas.data.restricted_pickle import RefusedPickle, load_data_pickle

IMAGE = 3 * 32 * 32


class WritesFile:
    """A pickle payload that creates ``marker`` when it is loaded with ``pickle.load``."""

    def __init__(self, marker: Path, how: str) -> None:
        self.marker, self.how = marker, how

    def __reduce__(self) -> tuple[object, tuple[str, ...]]:
        if self.how == "os.system":
            return os.system, (f"touch {self.marker}",)
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def _batch(n: int, offset: int, data: object = None) -> dict[bytes, object]:
    images = ((np.arange(n * IMAGE).reshape(n, IMAGE) + offset) % 256).astype(np.uint8)
    return {b"data": images if data is None else data,
            b"labels": [(i + offset) % 10 for i in range(n)]}


def write_cifar10(root: Path, *, protocol: int = pickle.DEFAULT_PROTOCOL,
                  first_batch: dict[bytes, object] | None = None) -> Path:
    """A tiny CIFAR-10 folder in the python-pickle layout (2 images per batch)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {f"data_batch_{i}": _batch(2, i) for i in range(1, 6)}
    batches["test_batch"] = _batch(2, 9)
    if first_batch is not None:
        batches["data_batch_1"] = first_batch
    batches["batches.meta"] = {b"label_names": [b"c%d" % i for i in range(10)],
                               b"num_cases_per_batch": 2, b"num_vis": IMAGE}
    for name, obj in batches.items():
        (folder / name).write_bytes(pickle.dumps(obj, protocol=protocol))
    return root


# -- the restricted unpickler ----------------------------------------------------------------
@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_data_pickles_of_every_protocol_load_equal(protocol: int) -> None:
    batch = _batch(3, 7)
    batch[b"extra"] = {"f": 1.5, "n": [1, 2], "s": "x", "b": b"y", "a": np.eye(2)}

    loaded = load_data_pickle(io.BytesIO(pickle.dumps(batch, protocol=protocol)),
                              encoding="bytes")

    assert loaded.keys() == batch.keys()
    np.testing.assert_array_equal(loaded[b"data"], batch[b"data"])
    assert loaded[b"data"].dtype == np.uint8 and loaded[b"labels"] == [7, 8, 9]
    assert loaded[b"extra"]["f"] == 1.5 and loaded[b"extra"]["b"] == b"y"
    np.testing.assert_array_equal(loaded[b"extra"]["a"], np.eye(2))


def test_a_numpy_1_pickle_loads() -> None:
    # numpy 1.x (and the official CIFAR files) name numpy.core.multiarray, not numpy._core
    text = pickle.dumps(_batch(2, 0), protocol=2)
    old = text.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert old != text

    loaded = load_data_pickle(io.BytesIO(old), encoding="bytes")

    np.testing.assert_array_equal(loaded[b"data"], _batch(2, 0)[b"data"])


@pytest.mark.parametrize("how", ["os.system", "exec"])
def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path: Path,
                                                                  how: str) -> None:
    marker = tmp_path / "pwned"
    text = pickle.dumps({b"data": WritesFile(marker, how)}, protocol=2)

    with pytest.raises(RefusedPickle, match="nothing was executed"):
        load_data_pickle(io.BytesIO(text), encoding="bytes")

    assert not marker.exists()


def test_codecs_encode_rebuilds_latin1_bytes_only() -> None:
    # Python 3 writes bytes at protocol 2 as _codecs.encode(str, 'latin1'); other codecs no
    text = pickle.dumps(b"\xff\x00", protocol=2)
    rot13 = text.replace(b"latin1", b"utf_16")

    assert load_data_pickle(io.BytesIO(text)) == b"\xff\x00"
    with pytest.raises(RefusedPickle, match="only latin-1"):
        load_data_pickle(io.BytesIO(rot13))


# -- the CIFAR loader -------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_layout_written_by_pickle_still_loads(tmp_path: Path, protocol: int) -> None:
    root = write_cifar10(tmp_path, protocol=protocol)

    data, info = load_arrays("cifar10", root=str(root))

    assert info.num_samples == 12 and data.x.shape == (12, 3, 32, 32)
    assert data.y.tolist() == [1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 9, 0]


@pytest.mark.parametrize("how", ["os.system", "exec"])
def test_cifar_batch_that_would_run_code_is_refused_naming_the_file(tmp_path: Path,
                                                                    how: str) -> None:
    marker = tmp_path / "pwned"
    root = write_cifar10(tmp_path / "data", first_batch=_batch(2, 1, WritesFile(marker, how)))

    with pytest.raises(DataError, match=r"data_batch_1: refused: it names .*nothing was "):
        load_arrays("cifar10", root=str(root))

    assert not marker.exists()


# -- a deployed ServerApp and the run config's dataset.root ------------------------------------
def _context(overrides: list[str]) -> Context:
    return Context(run_id=1, node_id=1, node_config={}, state=RecordDict(),
                   run_config={"overrides": json.dumps(overrides), "output-dir": "run"})


@pytest.fixture
def deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A deployment's ServerApp process: its output base; no operator data folder."""
    monkeypatch.delenv(SIMULATION_ENV, raising=False)
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    monkeypatch.setenv(OUTPUT_BASE_ENV, str(tmp_path / "base"))
    return tmp_path / "base"


@pytest.mark.parametrize("payload", [True, False])
def test_deployed_serverapp_refuses_a_dataset_root_from_the_run_config(
        tmp_path: Path, deployment: Path, payload: bool) -> None:
    # Prepare: a CIFAR folder on the server's machine, with or without a code payload
    marker = tmp_path / "pwned"
    first = _batch(2, 1, WritesFile(marker, "os.system")) if payload else None
    root = write_cifar10(tmp_path / "victim", first_batch=first)
    context = _context(["method=hapfnas", "dataset=cifar10", f"dataset.root={root}",
                        "federation.num_clients=2", "federation.clients_per_round=2"])

    # Execute: the whole ServerApp, which must stop before reading or writing anything
    with pytest.raises(ConfigError, match=f"dataset.root='{root}' is refused in a deployment"):
        server_app.main(None, context)  # type: ignore[arg-type]

    assert not marker.exists()
    assert not (deployment / "run" / "metrics.jsonl").exists()


def test_deployed_serverapp_reads_the_folder_its_operator_sets(
        tmp_path: Path, deployment: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "cifar"))

    same = server_app.server_data_root(str(tmp_path / "cifar" / "."))
    unnamed = server_app.server_data_root(None)
    with pytest.raises(ConfigError, match=f"{DATA_ROOT_ENV}='{tmp_path / 'cifar'}'"):
        server_app.server_data_root(str(tmp_path / "other"))

    assert same == unnamed == str(tmp_path / "cifar")
