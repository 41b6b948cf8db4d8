"""An ONNX model quantized to int8 for its device: ONNX Runtime's static quantization.

:func:`quantize_int8` writes ``client_<ID>.int8.onnx`` beside the float32 file: weights
and activations as 8-bit integers in QDQ form (``QuantizeLinear`` / ``DequantizeLinear``
pairs that ONNX Runtime fuses into integer kernels), weights per tensor or per output
channel (whichever agrees better with the float model), activation ranges calibrated
(min/max) on the client's own normalised training samples as the model sees them.
Operators ONNX Runtime has no quantized kernel for stay float32 between a dequantize and
a quantize; :func:`float_ops` names them.

No PyTorch: this runs where ONNX Runtime runs, on the node that holds the data.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pfednas.edge.kept import PRIVATE_FILE
from pfednas.edge.runtime import INT8_SUFFIX, ONNX_SUFFIX, load

INT8 = "int8"
QUANTIZE_CHOICES = (INT8,)
CALIBRATION_SAMPLES = 256  # of the training split, in batches of CALIBRATION_BATCH
CALIBRATION_BATCH = 32


class QuantizeError(ValueError):
    """A model ONNX Runtime cannot quantize; one line."""


def int8_path(model_path: Path) -> Path:
    """``client_0.onnx`` -> ``client_0.int8.onnx``."""
    return model_path.with_name(model_path.name.removesuffix(ONNX_SUFFIX) + INT8_SUFFIX)


def _reader(samples: np.ndarray) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class SampleReader(CalibrationDataReader):  # type: ignore[misc]
        """The calibration batches, fed to the model's one input."""

        def __init__(self, name: str) -> None:
            self.batches: Iterator[np.ndarray] = iter(
                np.ascontiguousarray(samples[i:i + CALIBRATION_BATCH], dtype=np.float32)
                for i in range(0, len(samples), CALIBRATION_BATCH))
            self.name = name

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {self.name: batch}

    return SampleReader


def quantizable_ops() -> set[str]:
    """The operator types ONNX Runtime's QDQ quantizer quantizes."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return set(QDQRegistry) | set(QLinearOpsRegistry)


def float_ops(model_path: Path) -> dict[str, int]:
    """The operator types of ``model_path`` ONNX Runtime leaves float32, with their counts."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    counts = Counter(node.op_type for node in graph.node)
    keep = quantizable_ops()
    return {op: n for op, n in sorted(counts.items()) if op not in keep}


def _quantize(source: Path, out: Path, calibration: np.ndarray, name: str,
              per_channel: bool) -> None:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    quantize_static(str(source), str(out), _reader(calibration)(name),
                    quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QUInt8,
                    calibrate_method=CalibrationMethod.MinMax)


def _agreement(a: Path, b: Path, x: np.ndarray) -> float:
    """The share of ``x`` on which models ``a`` and ``b`` predict the same class."""
    return float((load(a, threads=1).predict(x) == load(b, threads=1).predict(x)).mean())


def quantize_int8(model_path: Path, calibration: np.ndarray) -> tuple[Path, dict[str, Any]]:
    """Write ``model_path`` (a float32 ONNX file) statically quantized to int8 beside it,
    atomically and mode 0600, calibrated on ``calibration`` (normalised float32
    ``(N, C, H, W)`` training samples); the file and how it was quantized.

    The float graph is first optimised by ONNX Runtime's pre-processing (shape inference,
    BatchNorm and constant folding); weights and activations are then uint8 (U8U8: x86
    CPUs without VNNI saturate U8S8 products, and ARM runs both), per tensor unless per
    output channel agrees better with the float model on the calibration samples."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) == 0:
        raise QuantizeError("no training samples to calibrate the int8 model on")
    out = int8_path(model_path)
    tmp = {kind: out.with_name(f".{out.stem}.{os.getpid()}.{kind}{ONNX_SUFFIX}")
           for kind in ("pre", "tensor", "channel")}
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer logs each op it skips
    try:
        name = onnx.load(str(model_path), load_external_data=False).graph.input[0].name
        quant_pre_process(str(model_path), str(tmp["pre"]))
        agree = {}
        for kind in ("tensor", "channel"):
            _quantize(tmp["pre"], tmp[kind], calibration, name, kind == "channel")
            agree[kind] = _agreement(model_path, tmp[kind], calibration)
        kind = "channel" if agree["channel"] > agree["tensor"] else "tensor"
        tmp[kind].chmod(PRIVATE_FILE)
        os.replace(tmp[kind], out)
    except QuantizeError:
        raise
    except Exception as err:  # noqa: BLE001 - onnxruntime's and onnx's own exception types
        raise QuantizeError(f"{model_path.name}: ONNX Runtime cannot quantize it "
                            f"({' '.join(str(err).split())[:300]})") from err
    finally:
        logging.getLogger().setLevel(quiet)
        for path in tmp.values():
            path.unlink(missing_ok=True)
    return out, {"method": "onnxruntime static", "format": "QDQ", "weights": "uint8",
                 "activations": "uint8", "per_channel": kind == "channel",
                 "calibration": "minmax",
                 "agreement_on_calibration": {f"per_{k}": v for k, v in agree.items()},
                 "float_ops": float_ops(model_path)}
