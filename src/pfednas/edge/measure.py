"""Inference latency and peak memory of an exported model, in a fresh process.

``python -m pfednas.edge.measure MODEL --shape C H W`` loads ``MODEL`` with its own
runtime (:mod:`pfednas.edge.runtime`) on one thread, runs a few warm-up batches of one
sample, times ``--runs`` more and prints one JSON object:

* ``latency_ms_median`` / ``latency_ms_p90``: wall-clock of one forward pass of one sample;
* ``peak_rss_mb``: the process's peak resident memory (runtime, model and a run);
* ``model_rss_mb``: that peak less the peak after the runtime's import, i.e. what loading
  and running the model added;
* ``machine``: the architecture it ran on (``x86_64``, ``aarch64``: an arm64 node's figures,
  emulated or not, are its own).

A fresh process, so that the peak belongs to this model and not to whatever ran before.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pfednas.seeding import EXPORT_SAMPLE, numpy_rng

RUNS, WARMUP = 50, 5


def _peak_mb() -> float:
    """This process's peak resident memory. Linux: ``VmHWM``, which starts afresh with the
    process image (``ru_maxrss`` keeps the parent's peak across fork and exec)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_here(path: Path, shape: tuple[int, int, int], runs: int) -> dict[str, Any]:
    suffix = path.suffix
    if suffix == ".onnx":
        import onnxruntime  # noqa: F401  the runtime's own footprint, before the model's
    else:
        import torch  # noqa: F401
    from pfednas.edge.runtime import load

    before = _peak_mb()
    model = load(path, threads=1)
    x = numpy_rng(0, EXPORT_SAMPLE).standard_normal((1, *shape)).astype(np.float32)
    for _ in range(WARMUP):
        model.run(x)
    times = []
    for _ in range(runs):
        tic = time.perf_counter()
        model.run(x)
        times.append((time.perf_counter() - tic) * 1e3)
    peak = _peak_mb()
    return {"runtime": model.runtime, "threads": 1, "batch": 1, "runs": runs,
            "latency_ms_median": round(float(np.median(times)), 4),
            "latency_ms_p90": round(float(np.percentile(times, 90)), 4),
            "peak_rss_mb": round(peak, 1), "model_rss_mb": round(peak - before, 1),
            "machine": platform.machine()}


def measure(path: Path, shape: tuple[int, int, int], runs: int = RUNS,
            timeout: float = 120.0) -> dict[str, Any]:
    """:func:`measure_here` in a fresh Python process (raises RuntimeError if it fails)."""
    command = [sys.executable, "-m", "pfednas.edge.measure", str(path), "--shape",
               *map(str, shape), "--runs", str(runs)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {path} failed: {done.stderr.strip()[-300:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pfednas.edge.measure")
    parser.add_argument("model", type=Path)
    parser.add_argument("--shape", type=int, nargs=3, required=True, metavar=("C", "H", "W"))
    parser.add_argument("--runs", type=int, default=RUNS)
    args = parser.parse_args(argv)
    print(json.dumps(measure_here(args.model, tuple(args.shape), args.runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
