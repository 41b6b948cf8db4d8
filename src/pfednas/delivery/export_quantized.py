"""``pfednas export --format onnx --quantize int8``: the client's model as int8 beside its
float32 file, each judged on the client's own evaluation split.

The int8 file is calibrated on the client's training split (its first
:data:`~pfednas.edge.quantize.CALIBRATION_SAMPLES` samples, normalised as the client
read them; :mod:`pfednas.edge.quantize`). Both files are then scored in ONNX Runtime on
the split the client's reported figure comes from (``test``), as ``pfednas predict --run``
scores them, and their sizes, accuracies and (where measured) latency and peak memory go
in the spec: ``export.formats.onnx`` and ``export.formats["onnx-int8"]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pfednas.config import ConfigError
from pfednas.edge.kept import sha256
from pfednas.edge.quantize import CALIBRATION_SAMPLES, QUANTIZE_CHOICES, quantize_int8
from pfednas.edge.runtime import load

INT8_FORMAT = "onnx-int8"  # its key in the spec's export.formats


def quantize_problem(path: Path, fmt: str, quantize: str | None) -> str | None:
    """Why ``--quantize`` cannot be done here, before anything is written; None if it can."""
    if quantize is None:
        return None
    if quantize not in QUANTIZE_CHOICES:
        return f"--quantize takes {', '.join(QUANTIZE_CHOICES)}, got {quantize!r}"
    if fmt != "onnx":
        return f"--quantize {quantize} needs --format onnx (ONNX Runtime quantizes), got {fmt}"
    if not (path / "resolved_config.yaml").is_file():
        return (f"--quantize calibrates on the client's training split: {path} must be a "
                "run folder (with resolved_config.yaml)")
    return None


def client_splits(run_dir: Path, spec: dict[str, Any], client_id: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Calibration samples from the client's training split, and its evaluation split."""
    from omegaconf import OmegaConf

    from pfednas.config import data_spec_from_cfg
    from pfednas.data import load_client_data
    from pfednas.delivery.predict import run_split

    cfg = OmegaConf.load(run_dir / "resolved_config.yaml")
    data_spec = data_spec_from_cfg(cfg)  # type: ignore[arg-type]
    train = load_client_data(data_spec, client_id).train.x[:CALIBRATION_SAMPLES]
    x, y = run_split(spec, run_dir, client_id)
    return np.ascontiguousarray(train, dtype=np.float32), x, y


def scored(model_path: Path, x: np.ndarray, y: np.ndarray, split: str
           ) -> tuple[np.ndarray, dict[str, Any]]:
    """The file's predicted classes on ``x`` and its accuracy entry."""
    predicted = load(model_path, threads=1).predict(x)
    accuracy = float((predicted == y).mean()) if len(y) else 0.0
    return predicted, {"split": split, "samples": int(len(y)), "accuracy": accuracy}


def quantized_entries(model_path: Path, spec: dict[str, Any], run_dir: Path,
                      client_id: int) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """Write the int8 file beside ``model_path``; the float32 entry's additions (size and
    accuracy) and the int8 entry (less its measurement). On failure no int8 file is left."""
    if spec.get("client_id", client_id) != client_id:
        raise ConfigError(f"the model is client {spec.get('client_id')}'s, not {client_id}'s")
    train, x, y = client_splits(run_dir, spec, client_id)
    split = str(spec.get("evaluation", {}).get("split", "test"))
    int8_file, how = quantize_int8(model_path, train)
    try:
        float_classes, float_accuracy = scored(model_path, x, y, split)
        int8_classes, int8_accuracy = scored(int8_file, x, y, split)
    except Exception:
        int8_file.unlink(missing_ok=True)
        raise
    size, int8_size = model_path.stat().st_size, int8_file.stat().st_size
    entry = {"file": int8_file.name, "sha256": sha256(int8_file), "bytes": int8_size,
             "quantization": {**how, "calibration_split": "train",
                              "calibration_samples": int(len(train))},
             "accuracy": int8_accuracy,
             "accuracy_drop": float_accuracy["accuracy"] - int8_accuracy["accuracy"],
             "smaller_by": size / int8_size if int8_size else None,
             "same_classes_as_float": float((float_classes == int8_classes).mean())
             if len(y) else 1.0}
    return int8_file, {"bytes": size, "accuracy": float_accuracy}, entry
