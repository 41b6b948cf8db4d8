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

from pfednas.nas.phases import MEASURE_SPLITS, PredictorOptions  # noqa: F401
from pfednas.search import Arch, Supernet

if TYPE_CHECKING:
    from sklearn.ensemble import RandomForestRegressor



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
