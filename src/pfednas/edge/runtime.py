"""An exported model run by the runtime that will run it on the device.

``.onnx`` files run in ONNX Runtime alone (this module imports no PyTorch for them, as
an ARM board or a phone has none); ``.pt`` files (TorchScript) in ``torch.jit``. Both
take normalised float32 ``(N, C, H, W)`` batches and return logits. TorchScript carries
code that runs with the model, so :func:`load` can be told which files (by hash) it may
take.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ONNX_SUFFIX, TORCHSCRIPT_SUFFIX = ".onnx", ".pt"
FORMATS = {"onnx": ONNX_SUFFIX, "torchscript": TORCHSCRIPT_SUFFIX}
INT8_SUFFIX = ".int8" + ONNX_SUFFIX  # an ONNX file quantized to int8 (pfednas.edge.quantize)
BATCH = 512  # the batch size of pfednas.train.evaluate, so results match sample for sample


class RuntimeLoadError(Exception):
    """A file no runtime can load."""


class UntrustedModelError(RuntimeLoadError):
    """A TorchScript file whose hash is not among those it may have."""


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


def spec_path_of(model: Path) -> Path:
    """The ``.json`` spec ``pfednas export`` writes beside ``model``: ``client_0.json`` for
    ``client_0.onnx``, ``client_0.pt`` and ``client_0.int8.onnx`` alike."""
    if model.name.endswith(INT8_SUFFIX):
        return model.with_name(model.name.removesuffix(INT8_SUFFIX) + ".json")
    return model.with_suffix(".json")


def format_of(path: Path) -> str:
    for name, suffix in FORMATS.items():
        if path.suffix == suffix:
            return name
    raise RuntimeLoadError(f"{path}: unknown model format (expected "
                           f"{' or '.join(FORMATS.values())})")


def load(path: str | Path, *, threads: int | None = None,
         torchscript_sha256: Collection[str] | None = None) -> LoadedModel:
    """The model at ``path`` in its runtime.

    A TorchScript file carries code that runs when the model does (it may read and write
    files): with ``torchscript_sha256`` it is loaded only if its bytes hash to one of those,
    and from the bytes that were checked; None loads any TorchScript file (one this process
    wrote, or one the caller was told to trust). An ONNX file runs no code of its own; its
    external data must lie inside its folder (:func:`external_data_problem`).
    """
    path = Path(path)
    if not path.is_file():
        raise RuntimeLoadError(f"{path} is not a file")
    if format_of(path) == "onnx":
        return _load_onnx(path, threads)
    data = path.read_bytes()
    if torchscript_sha256 is not None and \
            hashlib.sha256(data).hexdigest() not in set(torchscript_sha256):
        raise UntrustedModelError(f"{path} is TorchScript, which runs the file's code, and "
                                  "its sha256 is not one pfednas export recorded")
    return _load_torchscript(data, path, threads)


def external_data_problem(path: Path) -> str | None:
    """Why the ONNX model at ``path`` may not be loaded, or None: every tensor it keeps in
    an external file names a relative path that stays inside the model's folder (links
    resolved), so a model cannot make the runtime read other files."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - protobuf's and onnx's own exception types
        return f"not an ONNX model ({' '.join(str(err).split())[:200]})"
    folder = path.resolve().parent
    for tensor in _onnx_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = {e.key: e.value for e in tensor.external_data}.get("location", "")
        target = (folder / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(folder):
            return (f"tensor {tensor.name[:80]!r} reads external data {location[:200]!r}, "
                    f"outside the model's folder {folder}")
    return None


def _onnx_tensors(model: Any) -> list[Any]:
    """Every tensor of ``model``: initializers and attribute tensors of the main graph, of
    every subgraph and of every function."""
    tensors: list[Any] = []
    nodes = [n for f in model.functions for n in f.node]
    graphs = [model.graph]
    while graphs or nodes:
        if graphs:
            graph = graphs.pop()
            tensors += list(graph.initializer)
            for sparse in graph.sparse_initializer:
                tensors += [sparse.values, sparse.indices]
            nodes += list(graph.node)
            continue
        for attribute in nodes.pop().attribute:
            tensors += [attribute.t, *attribute.tensors]
            for sparse in [attribute.sparse_tensor, *attribute.sparse_tensors]:
                tensors += [sparse.values, sparse.indices]
            graphs += [attribute.g, *attribute.graphs]
    return tensors


def _load_onnx(path: Path, threads: int | None) -> LoadedModel:
    import onnxruntime as ort

    if (problem := external_data_problem(path)) is not None:
        raise RuntimeLoadError(f"{path}: {problem}")
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


def _load_torchscript(data: bytes, path: Path, threads: int | None) -> LoadedModel:
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with warnings.catch_warnings():  # deprecated in favour of torch.export; still what
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript files load with
            module: Any = torch.jit.load(io.BytesIO(data), map_location="cpu")
    except (RuntimeError, ValueError) as err:
        raise RuntimeLoadError(f"{path}: torch.jit cannot load it ({err})") from err
    module.eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()

    return LoadedModel(runtime=f"torch.jit {torch.__version__}", run=run)
