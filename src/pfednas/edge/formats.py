"""TorchScript and ONNX files of a network, each checked against it as it is written.

TorchScript by tracing (the input shape is fixed by the spec, so the traced shapes are
exact); ONNX by PyTorch's ``torch.export``-based exporter (``dynamo=True``, opset of the
exporter's choice) with a dynamic batch dimension. After writing, the file is loaded by
its own runtime (:mod:`pfednas.edge.runtime`) and run on a sample batch beside the
PyTorch model: the largest logit difference must be within :data:`TOLERANCE` (relative to
the logits' scale) and every predicted class equal; else the file is removed and
:class:`ExportCheckError` raised. The file is mode 0600.

The network runs forward twice (traced, then checked) and on one torch thread: the
tracers' time is Python's, a batch of one to sixteen small images gains nothing from more
threads, and on a loaded machine every operation would wait for both. ``torch.jit.trace``
skips its own check (a second trace and a comparison of the graphs): the check above is
the one that counts, the file's outputs against the model's.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pfednas.edge.kept import PRIVATE_FILE
from pfednas.edge.runtime import FORMATS, load
from pfednas.nas.distill import torch_threads

TOLERANCE = 1e-4


class ExportCheckError(ValueError):
    """An exported file that does not compute what the PyTorch model computes."""


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


def write_torchscript(net: nn.Module, example: torch.Tensor, path: Path) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        traced = torch.jit.trace(net, example, check_trace=False)
    traced.save(str(path))


def write_onnx(net: nn.Module, example: torch.Tensor, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1)
    # the exporter narrates its steps on stdout and warns about what it decomposes
    with torch.no_grad(), warnings.catch_warnings(), \
            contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program: Any = torch.onnx.export(
            net, (example,), None, dynamo=True, input_names=["input"],
            output_names=["logits"], dynamic_shapes=({0: batch},), verbose=False)
        program.save(str(path))


WRITERS = {"torchscript": write_torchscript, "onnx": write_onnx}


def check_against(net: nn.Module, path: Path, sample: np.ndarray) -> dict[str, Any]:
    """Run ``path`` in its runtime and ``net`` in PyTorch on ``sample``; the comparison."""
    with torch.no_grad():
        expected = net(torch.from_numpy(sample)).numpy()
    got = load(path, threads=1).logits(sample)
    if got.shape != expected.shape:
        raise ExportCheckError(f"{path.name}: logits of shape {got.shape}, PyTorch gives "
                               f"{expected.shape}")
    diff = float(np.abs(got - expected).max()) if expected.size else 0.0
    scale = max(1.0, float(np.abs(expected).max()) if expected.size else 1.0)
    agree = bool((got.argmax(1) == expected.argmax(1)).all())
    if not np.isfinite(got).all() or diff > TOLERANCE * scale or not agree:
        raise ExportCheckError(f"{path.name}: differs from the PyTorch model on a sample batch "
                               f"(max |logit difference| {diff:.3g}, same classes: {agree})")
    return {"samples": len(sample), "max_abs_logit_diff": diff, "same_classes": agree}


WRITE, CHECK = "write", "check"


def export(net: nn.Module, fmt: str, path: Path, sample: np.ndarray,
           begin: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Write ``net`` (eval mode) as ``fmt`` to ``path`` atomically and check it on
    ``sample`` (a float32 ``(N, C, H, W)`` batch); returns the check's figures.
    ``begin`` is told each stage (:data:`WRITE`, :data:`CHECK`) as it starts."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    net.eval()
    tmp = _tmp(path)
    try:
        with torch_threads(1):
            begin(WRITE)
            WRITERS[fmt](net, torch.from_numpy(sample[:1]), tmp)
            begin(CHECK)
            check = check_against(net, tmp, sample)
        tmp.chmod(PRIVATE_FILE)  # the client's model, like its data
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return check
