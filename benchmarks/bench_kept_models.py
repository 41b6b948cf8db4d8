"""What keeping the personalized models costs a run, and what exporting one costs.

Runs a configuration with the in-process runner (the real strategy and ClientApp
handlers) into a fresh folder, timing every call that keeps a client's models
(:func:`pfednas.app.client_app.keep_models`: the costs, the writes, the hashes) against the
run's wall time; then exports client 0's reported model in each format (with the check
against PyTorch, without the latency measurement) and times it.

    .venv/bin/python benchmarks/bench_kept_models.py                    # the main job
    .venv/bin/python benchmarks/bench_kept_models.py method=spider      # any overrides

Prints one JSON object: the run's wall seconds, the seconds spent keeping models and
their share, the kept bytes, and each format's export seconds.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pfednas.app import client_app
from pfednas.delivery.export import export_client
from pfednas.run.inprocess import run_inprocess


def main(overrides: list[str]) -> dict[str, Any]:
    spent: list[float] = []
    keep = client_app.keep_models

    def timed(*args: Any, **kwargs: Any) -> None:
        tic = time.perf_counter()
        keep(*args, **kwargs)
        spent.append(time.perf_counter() - tic)

    client_app.keep_models = timed  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        tic = time.perf_counter()
        run = run_inprocess(overrides, out)
        wall = time.perf_counter() - tic
        kept = sum(p.stat().st_size for p in (out / "models").rglob("*") if p.is_file())
        exports = {}
        for fmt in ("torchscript", "onnx"):
            tic = time.perf_counter()
            export_client(out, 0, out / "export", fmt=fmt, measure_latency=False)
            exports[fmt] = round(time.perf_counter() - tic, 2)
    return {"overrides": overrides, "wall_seconds": round(wall, 1),
            "keep_seconds": round(sum(spent), 2), "keep_calls": len(spent),
            "keep_share": round(sum(spent) / wall, 4), "kept_bytes": kept,
            "accuracy_mean": run.summary["personalized_acc_mean"],
            "export_seconds": exports}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
