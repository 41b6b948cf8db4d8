"""Tuning sweeps in one process (``pfednas.run.inprocess``): one JSON line per configuration.

    .venv/bin/python benchmarks/sweep_inprocess.py [--workers W] OUT.jsonl 'name: overrides' ...

Each argument after the output file is ``name: overrides``; the overrides are
those of the ``pfednas`` command. Configurations already in OUT.jsonl (by name)
are skipped, so a sweep can be resumed. ``--workers W`` handles a round's clients in W worker
processes side by side (the same records; on a GPU, W CUDA contexts sharing it). The line
holds the final personalized accuracy (and the as-published one of a run that fine-tuned),
the mean final validation-free figures the protocol allows for tuning are the ``val`` fields
where the method reports them.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from pfednas.run.inprocess import run_inprocess


def main() -> None:
    args, workers = sys.argv[1:], 1
    if args[:1] == ["--workers"]:
        workers, args = int(args[1]), args[2:]
    out = Path(args[0])
    done = {json.loads(x)["name"] for x in out.read_text().splitlines()} if out.exists() else set()
    for spec in args[1:]:
        name, _, rest = spec.partition(":")
        name = name.strip()
        if name in done:
            continue
        tic = time.perf_counter()
        run = run_inprocess(rest.split(), workers=workers)
        s = run.summary
        final = [r for r in run.records if r.evaluation][-1].evaluation
        line = {"name": name, "overrides": rest.split(),
                "acc": s["personalized_acc_mean"], "std": s["personalized_acc_std"],
                "p10": s["personalized_acc_p10"],
                "acc_no_ft": s.get("personalized_acc_no_ft_mean"),
                "distinct_archs": len({r.get("arch") for r in final}) if final else None,
                "sample_passes": s["client_sample_passes"],
                "params_mean": float(np.mean([r["num_params"] for r in final])),
                "seconds": round(time.perf_counter() - tic, 1)}
        with out.open("a") as f:
            f.write(json.dumps(line) + "\n")
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
