"""HAPFNAS phase 2: a per-client random-forest predictor of subnet accuracy.

Each client measures the validation accuracy of sampled subnets of the
distilled supernet; a random forest (scikit-learn) maps an architecture's
encoding to that client's accuracy. Choices the paper leaves open, and why:

* **Encoding** — ``SearchSpace.encode`` (numeric choices as values, others
  one-hot) plus ``log`` parameters and ``log`` FLOPs from ``Supernet.cost``.
  The two cost features summarise what many raw dimensions jointly mean (a
  kernel choice of a block beyond the stage's depth changes nothing), which
  helps a forest fitted on a few dozen pairs.
* **Where it is fitted: the server.** The pairs are (architecture, accuracy)
  — a few dozen numbers that reveal little about the client's data beyond
  what its accuracy already tells — while the budget-constrained search needs
  the supernet's cost model, which lives on the server. Fitting there keeps
  clients at evaluation-only work, needs no scikit-learn on devices, and puts
  predictors and searched architectures into the server checkpoint.
* **Quality report** — out-of-fold predictions of a ``folds``-fold
  cross-validation (every pair predicted by a forest that never saw it), their
  Spearman rank correlation and mean absolute error against the measured
  accuracies; the baseline is the *mean predictor* evaluated the same way
  (each held-out fold predicted by the mean of the other folds).

Pure numpy / scikit-learn. SciPy and scikit-learn are imported where a forest is
fitted or ranked (the server), not at import: a deployed ClientApp process imports
this module through the method registry and would pay seconds for them per message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pfednas.search import Arch, Supernet

if TYPE_CHECKING:
    from sklearn.ensemble import RandomForestRegressor

# Where a client measures subnets: ``val``, or ``train_val``: the distilled supernet was
# never trained on client data, so the train split is as unseen as val and 4× the
# samples cut the measurement noise that hides the differences between subnets.
MEASURE_SPLITS = ("val", "train_val")
# What a measurement is: ``output``, the subnet's own classifier's accuracy (the paper), or
# ``probe``, a ridge probe on the subnet's features fitted to the client's labels
# (``pfednas.nas.probe``: out of fold over train + val, or fitted on train and scored on val).
MEASURES = ("output", "probe")


@dataclass(frozen=True)
class PredictorOptions:
    archs_per_client: int = 40   # M: subnets each client evaluates on its validation split
    trees: int = 100
    folds: int = 5
    min_pairs: int = 6           # fewer valid pairs: the client uses the pooled pairs of all
    measure_on: str = "train_val"  # the client's split the subnets are measured on
    measure: str = "output"      # output | probe (MEASURES)

    def __post_init__(self) -> None:
        if self.measure not in MEASURES:
            raise ValueError(f"predictor.measure must be {'|'.join(MEASURES)}, "
                             f"got {self.measure!r}")
        if self.measure_on not in MEASURE_SPLITS:
            raise ValueError(f"predictor.measure_on must be {'|'.join(MEASURE_SPLITS)}, "
                             f"got {self.measure_on!r}")
        if self.archs_per_client < 2 or self.trees < 1 or self.folds < 2:
            raise ValueError("predictor: need archs_per_client >= 2, trees >= 1, folds >= 2")
        if self.min_pairs < 2:
            raise ValueError("predictor.min_pairs must be >= 2")


@dataclass(frozen=True)
class PredictorReport:
    pairs: int
    spearman_rf: float
    spearman_mean: float
    mae_rf: float
    mae_mean: float


def arch_features(supernet: Supernet, arch: Arch) -> np.ndarray:
    cost = supernet.cost(arch)
    extra = [np.log(max(cost.params, 1)), np.log(max(cost.flops, 1))]
    return np.concatenate([supernet.space.encode(arch), extra])


def fit_forest(x: np.ndarray, y: np.ndarray, *, trees: int, seed: int) -> RandomForestRegressor:
    from sklearn.ensemble import RandomForestRegressor

    forest = RandomForestRegressor(n_estimators=trees, random_state=seed, n_jobs=1)
    forest.fit(x, y)
    return forest


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation; 0 where either side is constant (no ranking)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def cross_validated_report(x: np.ndarray, y: np.ndarray, *, trees: int, folds: int,
                           seed: int) -> PredictorReport:
    """Out-of-fold Spearman / MAE of the forest and of the mean predictor."""
    n = len(y)
    if n < 2:
        raise ValueError(f"need at least 2 pairs, got {n}")
    from sklearn.model_selection import KFold

    rf_pred, mean_pred = np.empty(n), np.empty(n)
    for fit, held in KFold(min(folds, n), shuffle=True, random_state=seed).split(x):
        rf_pred[held] = fit_forest(x[fit], y[fit], trees=trees, seed=seed).predict(x[held])
        mean_pred[held] = y[fit].mean()
    return PredictorReport(pairs=n, spearman_rf=spearman(rf_pred, y),
                           spearman_mean=spearman(mean_pred, y),
                           mae_rf=float(np.abs(rf_pred - y).mean()),
                           mae_mean=float(np.abs(mean_pred - y).mean()))
