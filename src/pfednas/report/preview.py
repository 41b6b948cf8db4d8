"""``pfednas partition [OVERRIDE ...]``: how a run would deal its data, before anything
trains.

It prints each client's train / validation / test sizes, how many classes it holds and its
largest classes, and draws the partition plot (samples per class and client) with
flwr-datasets' ``plot_label_distributions`` over exactly these indices. The overrides are
those of a run (``dataset.*``, ``federation.num_clients``, ``seed``); a bad one stops it
with one line and exit code 2, as it would stop the run.

    pfednas partition dataset.partitioner=pathological dataset.classes_per_client=2
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from pfednas.app.preflight import composition_error
from pfednas.config import ConfigError, compose, settings_from_cfg
from pfednas.data import DataError, client_shifts, client_split_labels, spec_info
from pfednas.data.preview import client_splits, format_splits, partition_plot
from pfednas.settings import partitioner_text

EXIT_CONFIG = 2
TELEMETRY_ENV = "FLWR_TELEMETRY_ENABLED"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pfednas partition", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", metavar="OVERRIDE",
                        help="Hydra overrides of the run (dataset=..., dataset.alpha=..., "
                             "federation.num_clients=..., seed=...)")
    parser.add_argument("--plot", type=Path, default=Path("partition.png"), metavar="FILE",
                        help="where to write the partition plot (default: partition.png)")
    parser.add_argument("--no-plot", action="store_true", help="print the table only")
    return parser


def main(argv: list[str]) -> int:
    """Print the clients' splits; write the plot."""
    args = _parser().parse_args(argv)
    # flwr-datasets' plotting reports its use to Flower's telemetry unless told not to; a
    # pfednas command sends nothing anywhere (as its runs: pfednas.run.launcher)
    os.environ.setdefault(TELEMETRY_ENV, "0")
    try:
        problem = composition_error(args.overrides)
        if problem is not None:
            raise ConfigError(problem)
        spec = settings_from_cfg(compose(args.overrides)).data
        labels = client_split_labels(spec)
    except (ConfigError, DataError, ValueError, OSError) as err:
        print(f"pfednas partition: error: {str(err).strip().splitlines()[0]}",
              file=sys.stderr, flush=True)
        return EXIT_CONFIG
    info = spec_info(spec)
    shifts = ([s.label() for s in client_shifts(spec)] if spec.feature_skew.active
              else None)
    title = (f"{spec.name}, {partitioner_text(spec)}, K={spec.num_clients}, "
             f"seed={spec.seed}")
    print(title)
    print(format_splits(client_splits(labels, shifts)), flush=True)
    if not args.no_plot:
        figure = partition_plot([np.concatenate(s) for s in labels],
                                num_classes=info.num_classes, title=title)
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(args.plot, dpi=110, bbox_inches="tight")
        print(f"partition plot: {args.plot}", flush=True)
    return 0
