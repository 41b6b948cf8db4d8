"""``pfednas export PATH --client ID``: a client's personalized model, for the device.

``PATH`` is a run folder (its ``models/``) or a node's ``model-dir``. By default the
model behind the client's reported figure is exported (the fine-tuned one where the
method fine-tunes; ``--model as-published`` for the other), rebuilt from what the client
kept (:mod:`pfednas.edge.kept`) and written as

* ``client_<ID>.pt`` (TorchScript, ``--format torchscript``, the default) or
  ``client_<ID>.onnx`` (``--format onnx``, what ONNX Runtime reads on ARM boards, phones
  and browsers), each checked on writing against the PyTorch model on a sample batch;
* ``client_<ID>.json`` beside it: the kept spec (architecture, input and normalisation,
  classes, costs, profile and budget, accuracies, run and commit) plus ``export``: which
  model, each format's file, its sha256, its check and its latency and peak memory
  measured in a fresh process with its own runtime (``--no-measure`` skips that).

Both files are mode 0600 (``--out``, where made here, 0700), and the model file's sha256
is recorded in the kept spec it came from (``exported``): ``pfednas predict`` loads a
TorchScript file, whose code runs with it, only by that record.

``--quantize int8`` (with ``--format onnx``, from a run folder) also writes
``client_<ID>.int8.onnx``, statically quantized by ONNX Runtime and calibrated on the
client's training split, and records both files' sizes, measurements and accuracies on
the client's evaluation split (:mod:`pfednas.delivery.export_quantized`).

``--from-checkpoint`` (PerFedRLNAS and HAPFNAS runs only) rebuilds instead the client's
architecture cut from the server's checkpointed supernet, BatchNorm re-estimated on the
client's train split: the un-fine-tuned slice, labelled so in the spec.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pfednas import progress
from pfednas.config import ConfigError
from pfednas.data import DataError
from pfednas.delivery.model_source import PredictError
from pfednas.edge.kept import (
    AS_PUBLISHED,
    EXPORTED,
    FINETUNED,
    KeptModelError,
    private_folder,
    read_spec,
    record_export,
    sha256,
    write_private_text,
)
from pfednas.edge.quantize import int8_path
from pfednas.edge.runtime import FORMATS
from pfednas.edge.spec import sample_inputs

MODEL_CHOICES = ("reported", FINETUNED, AS_PUBLISHED)
SERVER_SLICE = "server-slice"
REBUILD, MEASURE, QUANTIZE = "rebuild", "measure", "quantize"  # around edge.formats' own


def sample_batch(spec: dict[str, Any], n: int = 16) -> np.ndarray:
    """A fixed batch of normalised-scale inputs for the export check."""
    from pfednas.edge.rebuild import task_of

    return sample_inputs(task_of(spec), n)


def kept_network(path: Path, client_id: int, model: str
                 ) -> tuple[Any, dict[str, Any], str, Path]:
    """The rebuilt network, the kept spec, the kind of the model to export and its folder."""
    from pfednas.edge.rebuild import rebuild

    folder, spec = read_spec(path, client_id)
    kind = spec["reported"] if model == "reported" else model
    return rebuild(folder, spec, kind), spec, kind, folder


def kept_folder_of(path: Path, client_id: int) -> Path | None:
    """The client's kept-model folder under ``path``, or None where it has none."""
    try:
        return read_spec(path, client_id)[0]
    except KeptModelError:
        return None


def export_client(path: Path, client_id: int, out_dir: Path, *, fmt: str = "torchscript",
                  model: str = "reported", from_checkpoint: bool = False,
                  measure_latency: bool = True, quantize: str | None = None
                  ) -> tuple[Path, Path]:
    """Write client ``client_id``'s model as ``fmt`` (and, with ``quantize``, its int8
    file) and its spec to ``out_dir``, a progress bar over its stages on a terminal
    (:mod:`pfednas.progress`). A ``quantize`` that cannot be done raises before anything
    is written."""
    from pfednas.delivery.export_quantized import quantize_problem
    from pfednas.edge.formats import CHECK, WRITE

    if (problem := quantize_problem(path, fmt, quantize)) is not None:
        raise ConfigError(problem)
    names = (REBUILD, WRITE, CHECK, *((QUANTIZE,) if quantize else ()),
             *((MEASURE,) if measure_latency else ()))
    with progress.stages(f"export client {client_id} ({fmt})", names) as begin:
        return _export_client(path, client_id, out_dir, fmt=fmt, model=model,
                              from_checkpoint=from_checkpoint, measure_latency=measure_latency,
                              quantize=quantize, begin=begin)


def _export_client(path: Path, client_id: int, out_dir: Path, *, fmt: str, model: str,
                   from_checkpoint: bool, measure_latency: bool, quantize: str | None,
                   begin: Callable[[str], None]) -> tuple[Path, Path]:
    from pfednas.edge.formats import export

    tic = time.perf_counter()
    begin(REBUILD)
    if from_checkpoint:
        from pfednas.delivery.export_checkpoint import server_slice

        try:
            net, spec = server_slice(path, client_id)
        except (KeyError, TypeError, AttributeError, IndexError) as err:
            raise KeptModelError(f"{path}: a damaged or crafted run folder "
                                 f"({type(err).__name__}: {err})") from err
        kind, folder = SERVER_SLICE, kept_folder_of(path, client_id)
    else:
        net, spec, kind, folder = kept_network(path, client_id, model)
    if not out_dir.exists():
        private_folder(out_dir)
    model_path = out_dir / f"client_{client_id}{FORMATS[fmt]}"
    check = export(net, fmt, model_path, sample_batch(spec), begin)
    digest = sha256(model_path)
    if folder is not None:  # what pfednas predict trusts a TorchScript file by
        try:
            record_export(folder, digest, {"file": model_path.name, "format": fmt,
                                           "model": kind})
        except (OSError, ValueError) as err:
            model_path.unlink(missing_ok=True)
            raise KeptModelError(f"{folder}: cannot record the export's sha256 in its spec "
                                 f"({err})") from err
    entry: dict[str, Any] = {"file": model_path.name, "sha256": digest, "check": check,
                             "bytes": model_path.stat().st_size}
    entries = {fmt: entry}
    if quantize:
        from pfednas.delivery.export_quantized import INT8_FORMAT, quantized_entries

        begin(QUANTIZE)
        try:
            int8_file, float_more, entries[INT8_FORMAT] = quantized_entries(
                model_path, spec, path, client_id)
        except Exception:
            model_path.unlink(missing_ok=True)  # nothing half-written
            raise
        entry.update(float_more)
    entry["export_seconds"] = round(time.perf_counter() - tic, 2)
    if measure_latency:
        from pfednas.edge.measure import measure

        begin(MEASURE)
        task = spec["task"]
        for each in entries.values():
            each["measured"] = measure(out_dir / each["file"], (
                task["in_channels"], task["image_size"], task["image_size"]))
    spec_path = out_dir / f"client_{client_id}.json"
    written = _merged(spec_path, spec, kind, path)
    written["export"]["formats"].update(entries)
    write_private_text(spec_path, json.dumps(written, indent=2, sort_keys=True) + "\n")
    return model_path, spec_path


def _merged(spec_path: Path, spec: dict[str, Any], kind: str, source: Path) -> dict[str, Any]:
    """The export spec: ``spec`` with ``arch``, ``accuracy`` and ``export`` for ``kind``; an
    earlier export of the same model in another format keeps its entry."""
    entry = spec.get("models", {}).get(kind, {})
    header = {"model": kind, "source": str(source.resolve()), "sha256": entry.get("sha256"),
              "formats": {}}
    if kind == SERVER_SLICE:
        header["note"] = ("the client's architecture cut from the server's checkpoint, not "
                          "fine-tuned: not the model behind the reported figure")
    out = {**{k: v for k, v in spec.items() if k != EXPORTED},
           "arch": entry.get("arch", spec.get("arch")),
           "accuracy": entry.get("accuracy"), "export": header}
    if spec_path.is_file():
        try:
            before = json.loads(spec_path.read_text())
            same = {k: before.get("export", {}).get(k) for k in ("model", "sha256", "source")}
            if same == {k: header[k] for k in same} and before.get("client_id") == \
                    spec.get("client_id"):
                out["export"]["formats"] = dict(before["export"].get("formats", {}))
        except (ValueError, AttributeError, TypeError):
            pass  # an unreadable earlier spec is replaced
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pfednas export", description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, metavar="PATH",
                        help="a run folder, or a node's model-dir")
    parser.add_argument("--client", type=int, required=True)
    parser.add_argument("--model", choices=MODEL_CHOICES, default="reported",
                        help="reported (default): the model behind the reported figure")
    parser.add_argument("--format", choices=tuple(FORMATS), default="torchscript")
    parser.add_argument("--out", type=Path, default=None, help="default: PATH/export")
    parser.add_argument("--from-checkpoint", action="store_true",
                        help="PerFedRLNAS / HAPFNAS: the un-fine-tuned slice of the server's "
                             "checkpointed supernet")
    parser.add_argument("--no-measure", action="store_true",
                        help="skip the latency and memory measurement")
    parser.add_argument("--quantize", metavar="int8", default=None,
                        help="with --format onnx, from a run folder: also write "
                             "client_<ID>.int8.onnx, statically quantized and calibrated on "
                             "the client's training split")
    args = parser.parse_args(argv)
    try:
        model, spec = export_client(args.path, args.client, args.out or args.path / "export",
                                    fmt=args.format, model=args.model,
                                    from_checkpoint=args.from_checkpoint,
                                    measure_latency=not args.no_measure,
                                    quantize=args.quantize)
    except (KeptModelError, ConfigError, DataError, PredictError, OSError, ValueError,
            RuntimeError) as err:
        print(f"pfednas: error: {err}", file=sys.stderr)
        return 2
    extra = f" and {int8_path(model)}" if args.quantize else ""
    print(f"[pfednas] wrote {model}{extra} and {spec}")
    return 0
