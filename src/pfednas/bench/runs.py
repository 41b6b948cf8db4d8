"""Running one bench cell and recording what it ran: its load, its CPU, its code.

:func:`run_cell` runs a cell's ``pfednas`` command into its folder and leaves
``cell.json`` beside the results (:func:`cell_record`); a cell run from
uncommitted changes to the package or its config (:data:`SOURCE_PATHS`) also
leaves ``source.diff``, those changes as one patch against the recorded commit.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pfednas.app.environment import cpu_capability
from pfednas.bench.cells import Cell, pfednas_command
from pfednas.report.collect import METRICS, METRICS_GZ
from pfednas.source import (  # noqa: F401 (re-exported)
    SOURCE_PATHS,
    SourceState,
    changed_paths,
    checkout_root,
    source_diff,
    source_state,
)

CELL_RECORD = "cell.json"
SOURCE_DIFF = "source.diff"
# What a run's results depend on: a change here makes the checkout dirty for the bench.


def stop_process(proc: subprocess.Popen[bytes], grace: float = 60.0) -> None:
    """TERM (pfednas then stops its Flower/Ray processes), KILL after ``grace`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


LOAD_SAMPLE_S = 10.0  # how often the 1-minute load average is read while a cell runs


def load_average() -> float:
    """The machine's 1-minute load average (NaN where the OS has none)."""
    try:
        return float(os.getloadavg()[0])
    except OSError:
        return math.nan


def wait_sampling_load(proc: subprocess.Popen[bytes], timeout: float | None,
                       loads: list[float]) -> int:
    """``proc.wait(timeout)``, reading the load average every ``LOAD_SAMPLE_S`` meanwhile."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        loads.append(load_average())
        step = LOAD_SAMPLE_S if deadline is None else min(LOAD_SAMPLE_S,
                                                          deadline - time.monotonic())
        try:
            return proc.wait(timeout=max(step, 0.0))
        except subprocess.TimeoutExpired:
            if deadline is not None and time.monotonic() >= deadline:
                raise


def cell_record(commit: str, loads: Sequence[float], seconds: float,
                code: int | str, at_once: int = 1) -> dict[str, Any]:
    """What ``cell.json`` keeps beside a cell's results: the code it ran, the load it ran
    at (the report's ``load`` column) and how many cells the bench ran side by side, so that
    its wall time can be read, and the CPU capability its numerics depend on."""
    finite = [x for x in loads if math.isfinite(x)]
    return {"commit": commit, "returncode": code, "wall_seconds": round(seconds, 1),
            "load_mean": round(sum(finite) / len(finite), 2) if finite else None,
            "load_max": round(max(finite), 2) if finite else None,
            "load_samples": len(finite), "cells_at_once": at_once, "cpus": os.cpu_count(),
            "cpu_capability": cpu_capability()}


def compress_metrics(run_dir: Path) -> Path | None:
    """Replace a finished run's ``metrics.jsonl`` by ``metrics.jsonl.gz`` (the same lines;
    no file name or time in the gzip header, so the same records give the same bytes);
    ``None`` where the run has no ``metrics.jsonl``."""
    plain = run_dir / METRICS
    if not plain.is_file():
        return None
    packed, partial = run_dir / METRICS_GZ, run_dir / (METRICS_GZ + ".part")
    with plain.open("rb") as source, partial.open("wb") as sink, \
            gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=0) as archive:
        shutil.copyfileobj(source, archive)
    partial.replace(packed)
    plain.unlink()
    return packed


class CellStopped(Exception):
    """The bench stopped the cell (SIGTERM or Ctrl-C of the bench): nothing is recorded."""


def run_cell(cell: Cell, timeout: float | None, *, at_once: int = 1,
             started: Callable[[subprocess.Popen[bytes]], None] = lambda proc: None,
             stopping: threading.Event | None = None) -> dict[str, Any] | None:
    """Run one cell; ``None`` on success, else what ``FAILED.json`` records. Either way
    ``cell.json`` records the commit and the load while it ran, and ``source.diff`` the
    uncommitted changes it ran with. A finished cell's ``metrics.jsonl`` is kept
    compressed (:func:`compress_metrics`). Run beside others (``at_once`` of them), the
    bench learns its process from ``started`` and, when it stops them, sets ``stopping``:
    the cell then raises :class:`CellStopped` and records nothing."""
    cell.path.mkdir(parents=True, exist_ok=True)
    (cell.path / "FAILED.json").unlink(missing_ok=True)
    (cell.path / METRICS_GZ).unlink(missing_ok=True)  # a previous run's: this one writes its own
    (cell.path / SOURCE_DIFF).unlink(missing_ok=True)
    # the log is written beside the folder and moved in after the run: a run that refuses
    # its configuration removes its (otherwise empty) output folder, and its one line of why
    # must survive that
    log = cell.path.parent / f".{cell.path.name}.bench.log"
    command = pfednas_command(cell)
    source, start = source_state(), time.perf_counter()
    if source.changed:
        (cell.path / SOURCE_DIFF).write_text(source_diff())
    loads: list[float] = []
    with log.open("w") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        started(proc)
        try:
            if stopping is not None and stopping.is_set():  # stopped while it started
                stop_process(proc)
            code: int | str = wait_sampling_load(proc, timeout, loads)
        except subprocess.TimeoutExpired:
            stop_process(proc)
            code = f"timeout after {timeout:g}s"
        except BaseException:  # Ctrl-C or SIGTERM of the bench: the cell goes with it
            stop_process(proc)
            cell.path.mkdir(parents=True, exist_ok=True)
            log.replace(cell.path / "bench.log")
            raise
    cell.path.mkdir(parents=True, exist_ok=True)  # a refused run removed it
    log = log.replace(cell.path / "bench.log")
    if stopping is not None and stopping.is_set():
        raise CellStopped(cell.path)
    record = cell_record(source.commit, loads, time.perf_counter() - start, code, at_once)
    (cell.path / CELL_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    if code == 0 and (cell.path / "summary.json").is_file():
        compress_metrics(cell.path)
        return None
    return {"method": cell.method, "alpha": cell.alpha, "seed": cell.seed, "returncode": code,
            "command": command, "log": str(log), "error": log.read_text()[-3000:]}


def free_gpu_mib() -> int | None:
    """The first CUDA GPU's free memory in MiB, as ``nvidia-smi`` reports it (the bench
    itself starts no CUDA context); ``None`` where there is no NVIDIA GPU or driver."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        return int(out.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def cells_side_by_side(at_once: int, cell_gpu_mib: int | None, free_mib: int | None) -> int:
    """How many cells run at once: ``at_once``, but no more than a GPU with ``free_mib`` free
    holds at ``cell_gpu_mib`` each (at least one; no GPU or no share given: ``at_once``)."""
    if cell_gpu_mib is None or free_mib is None:
        return at_once
    return max(1, min(at_once, free_mib // cell_gpu_mib))
