"""``pfednas predict MODEL``: run a client's model with its own runtime.

    pfednas predict export/client_0.onnx --run RUN_DIR --client 0   # its evaluation split
    pfednas predict export/client_0.onnx --silo /data      # on its node: the same, of its silo
    pfednas predict RUN_DIR/models/client_0 --data images/ --out predictions.csv

``MODEL`` is an ``.onnx`` file ``pfednas export`` wrote (ONNX Runtime, no PyTorch is
imported), with its ``.json`` spec beside it; a kept-model folder (``client_<id>`` of a
run's ``models/`` or a node's ``model-dir``: the reported network rebuilt in PyTorch from
its spec and weights); or a ``.pt`` file (TorchScript), whose code runs with it, loaded
only by the sha256 export recorded in the run folder or model-dir named by ``--kept`` (or
``--run``), or with ``--trust-torchscript`` (:mod:`pfednas.delivery.model_source`).

* ``--run RUN_DIR --client ID``: the client's own evaluation split of that simulation (the
  split its spec names: ``test``, or a tuning run's validation part), read exactly as the
  client read it; prints the accuracy on its last line, which equals the client's figure in
  ``summary.json`` sample for sample.
* ``--silo DIR``: on a deployed node, its silo folder (the node config's ``data-dir``): the
  client's evaluation split of it, split as its ClientApp split it (the run's overrides,
  which the spec records); the accuracy again equals the client's figure in the server's
  ``summary.json``.
* ``--data FILE``: a ``.npz`` (``x`` as ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)``;
  ``y`` optional) or an image folder (``DIR/<class>/<image>``), read by the reader silo
  nodes use (:func:`pfednas.node.data.read_silo`: uint8 as 0–255, float as 0–1, converted to
  the model's channels and size, within the budgets of :mod:`pfednas.limits`) and
  normalised with the spec's mean and std. Prints one ``index,class,class_name`` line per
  sample (an image folder's: ``index,file,class,class_name``, the file relative to the
  folder; the names are the spec's, :func:`pfednas.edge.kept.class_names`), or writes them
  to ``--out``, and the accuracy where labels are given: a folder's class folders named as
  the model's classes are (``daisy/``, ``tulip/``) are labelled by those names, so a folder
  of some of the classes is scored right.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pfednas.config import ConfigError
from pfednas.data import DataError
from pfednas.data.npz import read_npz_arrays
from pfednas.delivery.model_source import (
    TRUST_FLAG,
    PredictError,
    model_spec,
    open_model,
)
from pfednas.edge.kept import KeptModelError, class_names
from pfednas.edge.runtime import LoadedModel, RuntimeLoadError
from pfednas.limits import MAX_DATA_BYTES

if TYPE_CHECKING:
    from pfednas.data.arrays import ClientData


def check_input(x: np.ndarray, spec: dict[str, Any]) -> None:
    task = spec["task"]
    want = (task["in_channels"], task["image_size"], task["image_size"])
    if x.ndim != 4 or tuple(x.shape[1:]) != want:
        raise PredictError(f"inputs of shape {tuple(x.shape)}; the model takes (N, "
                           f"{', '.join(map(str, want))})")
    if x.dtype != np.float32:
        raise PredictError(f"inputs of dtype {x.dtype}; the model takes float32")


def check_labels(y: np.ndarray, spec: dict[str, Any]) -> None:
    classes = int(spec["task"]["num_classes"])
    if y.size and (y.min() < 0 or y.max() >= classes):
        raise PredictError(f"labels {int(y.min())}..{int(y.max())}; the model has {classes} "
                           f"classes (0..{classes - 1})")


def run_split(spec: dict[str, Any], run_dir: Path, client_id: int) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    """The client's evaluation split of simulation ``run_dir``, as the client read it."""
    from omegaconf import OmegaConf

    from pfednas.config import data_spec_from_cfg
    from pfednas.data import load_client_data

    path = run_dir / "resolved_config.yaml"
    if not path.is_file():
        raise PredictError(f"{run_dir} is not a pfednas run folder (no resolved_config.yaml)")
    data_spec = data_spec_from_cfg(OmegaConf.load(path))  # type: ignore[arg-type]
    _check_client(spec, client_id)
    if spec.get("dataset") != data_spec.name:
        raise PredictError(f"the model was trained on {spec.get('dataset')}, the run on "
                           f"{data_spec.name}")
    return _evaluation_part(spec, load_client_data(data_spec, client_id), data_spec.seed,
                            client_id)


def _check_client(spec: dict[str, Any], client_id: int) -> None:
    if spec.get("client_id") != client_id:
        raise PredictError(f"the model is client {spec.get('client_id')}'s, not client "
                           f"{client_id}'s")


def _evaluation_part(spec: dict[str, Any], data: ClientData, seed: int,
                     client_id: int) -> tuple[np.ndarray, np.ndarray]:
    """The part of a client's splits its spec says the reported figure was measured on."""
    from pfednas.data import tuning_splits

    split = spec.get("evaluation", {}).get("split", "test")
    if split == "val-half":
        data = tuning_splits(data, seed, client_id)
    part = data.val if split == "val" else data.test
    return part.x, part.y


def silo_split(spec: dict[str, Any], folder: Path,
               client_id: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The client's evaluation split of its silo ``folder``, as its ClientApp split it (the
    settings composed from the run's overrides its spec records)."""
    from pfednas.config import compose, settings_from_cfg
    from pfednas.node.data import silo_client_data

    if not folder.is_dir():
        raise PredictError(f"{folder} is not a silo folder (a node's data-dir)")
    run = spec.get("run", {})
    if "overrides" not in run or "client_id" not in spec:
        raise PredictError("the spec records no run overrides or client: export it again "
                           "from the node's model-dir")
    settings = settings_from_cfg(compose(tuple(run["overrides"])))
    if spec.get("dataset") != settings.data.name:
        raise PredictError(f"the model was trained on {spec.get('dataset')}, its run's "
                           f"overrides name {settings.data.name}")
    if client_id is not None:
        _check_client(spec, client_id)
    client_id = int(spec["client_id"])
    return _evaluation_part(spec, silo_client_data(folder, settings, client_id),
                            settings.data.seed, client_id)


@dataclass(frozen=True)
class Inputs:
    """What ``--data`` gave: normalised inputs, their labels (None: none given) and, for an
    image folder, each input's file relative to it."""

    x: np.ndarray
    y: np.ndarray | None
    files: tuple[str, ...] = ()


def file_data(spec: dict[str, Any], path: Path) -> Inputs:
    """A user's ``.npz`` or image folder, read as silos read theirs, normalised by the spec."""
    from pfednas.node.data import ARRAY_FILE, read_silo

    task, norm = spec["task"], spec["input"]["normalisation"]
    files: tuple[str, ...] = ()
    if path.is_file() and path.suffix == ".npz":
        x, y = _read_npz(path)
    elif path.is_dir() and (path / ARRAY_FILE).is_file():
        x, y = _read_npz(path / ARRAY_FILE)
    else:
        silo = read_silo(path, channels=task["in_channels"], size=task["image_size"])
        x, files = silo.images.astype(np.float32) / np.float32(silo.scale), silo.files
        y = labels_by_name(silo.labels, silo.classes, class_names(spec))
    mean = np.asarray(norm["mean"], np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(norm["std"], np.float32).reshape(1, -1, 1, 1)
    x = np.ascontiguousarray((x - mean) / std, dtype=np.float32)
    check_input(x, spec)
    return Inputs(x, y, files)


def labels_by_name(labels: np.ndarray, folders: tuple[str, ...],
                   names: tuple[str, ...]) -> np.ndarray:
    """A folder's labels as the model's classes: by name where its class folders are not
    numbers (``tulip/`` is the model's class ``tulip``, wherever it falls among the
    folders), else the numbers as given."""
    if all(name.isdigit() for name in folders):
        return labels
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted(set(folders) - set(index))
    if unknown:
        raise PredictError(f"class folder {unknown[0]!r} is not one of the model's classes "
                           f"({', '.join(names[:10])}{', ...' if len(names) > 10 else ''})")
    return np.asarray([index[name] for name in folders], dtype=np.int64)[labels]


def prediction_table(predicted: np.ndarray, names: tuple[str, ...],
                     files: tuple[str, ...] = ()) -> str:
    """CSV: ``index,class,class_name`` per input, with ``file`` after the index where the
    inputs are files."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", *(["file"] if files else []), "class", "class_name"])
    writer.writerows([i, *([files[i]] if files else []), int(c), names[int(c)]]
                     for i, c in enumerate(predicted))
    return buffer.getvalue()


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    arrays = read_npz_arrays(path, budget=MAX_DATA_BYTES, keys=("x", "y"))
    if "x" not in arrays:
        raise PredictError(f"{path}: no array 'x'")
    x, y = arrays["x"], arrays.get("y")
    if x.dtype.kind not in "uif":
        raise PredictError(f"{path}: x has dtype {x.dtype}; expected uint8 (0-255) or float "
                           "(0-1) images")
    from pfednas.node.data import as_nchw

    x = as_nchw(x)
    scale = np.float32(255.0 if x.dtype == np.uint8 else 1.0)
    if y is not None and (y.ndim != 1 or y.shape[0] != x.shape[0] or y.dtype.kind not in "iu"):
        raise PredictError(f"{path}: y must be integer labels of shape ({x.shape[0]},), got "
                           f"{y.shape} {y.dtype}")
    return x.astype(np.float32) / scale, y


def predict(model: LoadedModel, spec: dict[str, Any], x: np.ndarray) -> np.ndarray:
    check_input(x, spec)
    logits = model.logits(x)
    if logits.ndim != 2 or logits.shape[1] != int(spec["task"]["num_classes"]):
        raise PredictError(f"the model gives logits of shape {logits.shape}; its spec says "
                           f"{spec['task']['num_classes']} classes")
    return logits.argmax(axis=1)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pfednas predict", description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, metavar="MODEL",
                        help="an .onnx or .pt export, or a kept-model folder (client_<id>)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="a simulation's run folder (with --client)")
    source.add_argument("--data", type=Path, help="a .npz or an image folder")
    source.add_argument("--silo", type=Path, metavar="DIR",
                        help="on a node, its silo folder (data-dir): the client's evaluation "
                             "split of it, as its ClientApp split it")
    parser.add_argument("--client", type=int)
    parser.add_argument("--out", type=Path, help="--data: write the predictions here (CSV: "
                        "index, the file of an image folder's, class, class_name)")
    parser.add_argument("--kept", type=Path, metavar="PATH",
                        help="a .pt: the run folder or model-dir it was exported from, whose "
                             "kept spec holds its sha256 (default: --run)")
    parser.add_argument(TRUST_FLAG, action="store_true",
                        help="load a .pt without a recorded sha256: TorchScript runs the "
                             "file's code with your rights (it can read and write your "
                             "files); only for a file whose author you trust")
    args = parser.parse_args(argv)
    if args.run is not None and args.client is None:
        parser.error("--run needs --client")
    try:
        spec = model_spec(args.model)
        names = class_names(spec)
        if args.run is not None:
            inputs = Inputs(*run_split(spec, args.run, args.client))
        elif args.silo is not None:
            inputs = Inputs(*silo_split(spec, args.silo, args.client))
        else:
            inputs = file_data(spec, args.data)
        y = inputs.y
        if y is not None:
            check_labels(y, spec)
        model = open_model(args.model, spec, kept=args.kept or args.run,
                           trust_torchscript=args.trust_torchscript)
        predicted = predict(model, spec, inputs.x)
    except (PredictError, RuntimeLoadError, KeptModelError, ConfigError, DataError,
            ValueError, OSError) as err:
        print(f"pfednas: error: {err}", file=sys.stderr)
        return 2
    if args.data is not None:
        table = prediction_table(predicted, names, inputs.files)
        if args.out is not None:
            args.out.write_text(table)
            print(f"[pfednas] wrote {len(predicted)} predictions to {args.out}")
        else:
            print(table, end="")
    if y is None:
        return 0
    correct = int((predicted == y).sum())
    print(f"[pfednas] {model.runtime}: {correct}/{len(y)} correct")
    print(f"accuracy {correct / max(len(y), 1)!r}")
    return 0
