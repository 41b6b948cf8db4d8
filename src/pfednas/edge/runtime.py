"""An exported model run by the runtime that will run it on the device.

``.onnx`` files run in ONNX Runtime alone (this module imports no PyTorch for them, as
an ARM board or a phone has none); ``.pt`` files (TorchScript) in ``torch.jit``. Both
take normalised float32 ``(N, C, H, W)`` batches and return logits.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ONNX_SUFFIX, TORCHSCRIPT_SUFFIX = ".onnx", ".pt"
FORMATS = {"onnx": ONNX_SUFFIX, "torchscript": TORCHSCRIPT_SUFFIX}
BATCH = 512  # the batch size of pfednas.train.evaluate, so results match sample for sample


class RuntimeLoadError(Exception):
    """A file no runtime can load."""


@dataclass(frozen=True)
class LoadedModel:
    runtime: str  # e.g. "onnxruntime 1.32.0"
    run: Callable[[np.ndarray], np.ndarray]  # one float32 batch -> logits

    def logits(self, x: np.ndarray, batch_size: int = BATCH) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        return np.concatenate([self.run(x[i:i + batch_size])
                               for i in range(0, len(x), batch_size)]) if len(x) else \
            np.zeros((0, 0), np.float32)

    def predict(self, x: np.ndarray, batch_size: int = BATCH) -> np.ndarray:
        return self.logits(x, batch_size).argmax(axis=1)


def format_of(path: Path) -> str:
    for name, suffix in FORMATS.items():
        if path.suffix == suffix:
            return name
    raise RuntimeLoadError(f"{path}: unknown model format (expected "
                           f"{' or '.join(FORMATS.values())})")


def load(path: str | Path, *, threads: int | None = None) -> LoadedModel:
    path = Path(path)
    if not path.is_file():
        raise RuntimeLoadError(f"{path} is not a file")
    return (_load_onnx if format_of(path) == "onnx" else _load_torchscript)(path, threads)


def _load_onnx(path: Path, threads: int | None) -> LoadedModel:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), sess_options=options,
                                       providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types
        raise RuntimeLoadError(f"{path}: ONNX Runtime cannot load it ({err})") from err
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {name: x})[0])

    return LoadedModel(runtime=f"onnxruntime {ort.__version__}", run=run)


def _load_torchscript(path: Path, threads: int | None) -> LoadedModel:
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with warnings.catch_warnings():  # deprecated in favour of torch.export; still what
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript files load with
            module: Any = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as err:
        raise RuntimeLoadError(f"{path}: torch.jit cannot load it ({err})") from err
    module.eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()

    return LoadedModel(runtime=f"torch.jit {torch.__version__}", run=run)
