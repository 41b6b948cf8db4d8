"""What ``pfednas predict`` runs, and on what grounds it trusts it.

* an ``.onnx`` file: ONNX Runtime, which runs no code from the file; its external data
  must lie inside its folder (:func:`pfednas.edge.runtime.external_data_problem`);
* a kept-model folder (``<run>/models/client_<id>``, ``<model-dir>/client_<id>``): the
  reported network rebuilt in PyTorch from the folder's spec and weights, each checked
  (:mod:`pfednas.edge.kept`), as ``pfednas export`` rebuilds it: no code from a file;
* a ``.pt`` file (TorchScript): its code runs with the model, with the user's rights (it
  can read and write files). It is loaded only if its sha256 is one ``pfednas export``
  recorded in the kept spec of the run folder or model-dir the user names (``--kept``,
  or ``--run``), or if the user says it trusts the file (``--trust-torchscript``). The
  ``.json`` beside a model is read as data and never vouches for the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pfednas.edge.kept import exported_hashes, kept_folder_spec, load_spec_json, read_spec
from pfednas.edge.runtime import (
    LoadedModel,
    UntrustedModelError,
    format_of,
    load,
    spec_path_of,
)
from pfednas.limits import task_problem

TRUST_FLAG = "--trust-torchscript"


class PredictError(Exception):
    """Input the model cannot take, or a model predict will not run; one line."""


def model_spec(model: Path) -> dict[str, Any]:
    """The spec of ``model``: a kept folder's ``spec.json``, checked as export checks it, or
    the ``.json`` ``pfednas export`` wrote beside a model file."""
    if model.is_dir():
        return kept_folder_spec(model)[1]
    path = spec_path_of(model)
    if not path.is_file():
        raise PredictError(f"no spec {path.name} beside {model} (pfednas export writes one)")
    try:
        spec = load_spec_json(path)
    except ValueError as err:
        raise PredictError(str(err)) from err
    if (problem := export_spec_problem(spec)) is not None:
        raise PredictError(f"{path}: not a pfednas export spec ({problem})")
    return dict(spec)


def export_spec_problem(spec: Any) -> str | None:
    """Why ``spec`` cannot describe a model's input and output, or None."""
    if not isinstance(spec, dict) or not isinstance(spec.get("input"), dict):
        return "it needs task and input"
    if (problem := task_problem(spec.get("task"))) is not None:
        return problem
    norm = spec["input"].get("normalisation")
    channels = spec["task"]["in_channels"]
    for key in ("mean", "std"):
        values = norm.get(key) if isinstance(norm, dict) else None
        if not (isinstance(values, list) and len(values) in (1, channels)
                and all(_finite(v) for v in values)):
            return f"input.normalisation.{key} must be 1 or {channels} finite numbers"
    if not all(v > 0 for v in norm["std"]):
        return "input.normalisation.std must be positive"
    return None


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and \
        abs(value) < 1e300


def open_model(model: Path, spec: dict[str, Any], *, kept: Path | None,
               trust_torchscript: bool) -> LoadedModel:
    """``model`` in its runtime, refused where predict cannot trust it (above)."""
    if model.is_dir():
        return rebuilt(model, spec)
    if format_of(model) == "onnx" or trust_torchscript:
        return load(model)
    if kept is None:
        raise PredictError(
            f"{model} is TorchScript, which runs the file's code: name the run folder or "
            f"model-dir it was exported from (--kept; export recorded its sha256 there), "
            f"predict its .onnx export or its kept folder instead, or pass {TRUST_FLAG} "
            "if you trust whoever made the file")
    client_id = spec.get("client_id")
    if not isinstance(client_id, int) or isinstance(client_id, bool):
        raise PredictError(f"{model}: its spec names no client_id")
    _, kept_spec = read_spec(kept, client_id)
    try:
        return load(model, torchscript_sha256=exported_hashes(kept_spec, "torchscript"))
    except UntrustedModelError as err:
        raise PredictError(f"{err} from {kept}'s client {client_id}: not loaded (pass "
                           f"{TRUST_FLAG} if you trust whoever made the file)") from err


def rebuilt(folder: Path, spec: dict[str, Any]) -> LoadedModel:
    """The reported network of kept folder ``folder``, rebuilt in PyTorch."""
    import torch

    from pfednas.edge.rebuild import rebuild

    net = rebuild(folder, spec, spec["reported"])

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return np.asarray(net(torch.from_numpy(x)).numpy())

    return LoadedModel(runtime=f"torch {torch.__version__} ({spec['reported']} weights, "
                               "rebuilt)", run=run)
