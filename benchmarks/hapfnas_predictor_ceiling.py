"""How well can any predictor rank HAPFNAS's subnet measurements? (issue 14)

Reads the (architecture, measured accuracy) pairs a HAPFNAS run keeps in its checkpoint
(``pair_client`` / ``pair_indices`` / ``pair_accuracy``) and reports per client: the
spread of the measured accuracies, the binomial noise of one measurement on N samples,
the reliability 1 - noise² / spread² (the share of the spread that is not noise; its
square root bounds the rank correlation any predictor can reach), the Spearman
correlation of log parameters and log FLOPs with the accuracy, and the 5-fold
out-of-fold Spearman of the forest on the full encoding and on the two cost features.

    .venv/bin/pfednas OVERRIDES checkpoint_every=20 hydra.run.dir=RUN
    .venv/bin/python benchmarks/hapfnas_predictor_ceiling.py RUN OVERRIDES.json N

``OVERRIDES.json`` is the run's override list (e.g. a tuning cell's summary.json
``overrides``); N = samples each subnet was measured on (train + val: 400 in
bench=fashion_mnist).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from pfednas.app.checkpoint import load_checkpoint
from pfednas.config import compose, settings_from_cfg
from pfednas.methods import seeded_supernet
from pfednas.nas.predictor import arch_features, cross_validated_report, spearman


def client_row(x: np.ndarray, y: np.ndarray, samples: int) -> list[float]:
    spread2 = float(y.var(ddof=1))
    p = float(y.mean())
    noise2 = p * (1 - p) / samples
    reliability = max(0.0, 1 - noise2 / spread2) if spread2 > 0 else 0.0
    full = cross_validated_report(x, y, trees=100, folds=5, seed=0)
    cost = cross_validated_report(x[:, -2:], y, trees=100, folds=5, seed=0)
    return [len(y), p, spread2 ** 0.5, noise2 ** 0.5, reliability, spearman(x[:, -2], y),
            spearman(x[:, -1], y), full.spearman_rf, cost.spearman_rf]


def main() -> None:
    run, overrides_file, samples = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    settings = settings_from_cfg(compose(json.loads(overrides_file.read_text())))
    supernet = seeded_supernet(settings)
    _, state = load_checkpoint(run)
    clients, indices, accuracy = (state["pair_client"], state["pair_indices"],
                                  state["pair_accuracy"])
    header = ["client", "n", "acc mean", "sd measured", "sd noise", "reliability",
              "rho logP", "rho logF", "cv forest (full)", "cv forest (cost)"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    rows = []
    for cid in sorted(set(clients.tolist())):
        mask = clients == cid
        x = np.stack([arch_features(supernet, supernet.space.arch_from_indices(i))
                      for i in indices[mask]])
        rows.append(client_row(x, accuracy[mask], samples))
        print(f"| {cid} | " + " | ".join(f"{v:.3f}" for v in rows[-1]) + " |")
    table = np.array(rows)
    print("| mean | " + " | ".join(f"{v:.3f}" for v in table.mean(0)) + " |")
    print(f"\nmean sqrt(reliability), the noise ceiling on any predictor's Spearman: "
          f"{np.sqrt(table[:, 4]).mean():.3f}")


if __name__ == "__main__":
    main()
