"""Linear-probe accuracy: how well a subnet's features separate a client's classes.

HAPFNAS's clients measure sampled subnets of the distilled supernet, and a random
forest learns to rank architectures from those measurements. The supernet is
distilled on the server and has never seen a client's labels, so its classifier's
own accuracy on a client's data is low (0.27 on average on the Fashion-MNIST tuning
seed) and its differences between subnets are mostly binomial noise
(``docs/bench/fashion_mnist/diagnostics/hapfnas_predictor_ceiling.md``). What a
client keeps of a subnet after heteroFedAvg and fine-tuning is its *body*; a ridge
classifier fitted on the body's features (the classifier's input) to the client's own
labels measures that body for that client, from the same forward passes.

Pure numpy: ``ridge_fit`` / ``ridge_predict`` and the out-of-fold accuracy of
``probe_accuracy`` (k folds over one set) and ``holdout_probe_accuracy`` (fit on one
set, score another).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RIDGE_ALPHA = 1.0  # on standardised features, scikit-learn's RidgeClassifier default


@dataclass(frozen=True)
class RidgeProbe:
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray   # (features + 1, classes): the last row is the bias
    classes: np.ndarray


def _design(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    z = (x - mean) / scale
    return np.hstack([z, np.ones((len(x), 1))])


def ridge_fit(x: np.ndarray, y: np.ndarray, alpha: float = RIDGE_ALPHA) -> RidgeProbe:
    """One-vs-rest least squares on ±1 targets with an L2 penalty (bias unpenalised)."""
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"need as many labels as rows (> 0), got {len(x)} and {len(y)}")
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    mean, scale = x.mean(0), x.std(0)
    scale = np.where(scale > 1e-8, scale, 1.0)
    classes = np.unique(y)
    a = _design(x, mean, scale)
    targets = np.where(y[:, None] == classes[None, :], 1.0, -1.0)
    penalty = alpha * np.eye(a.shape[1])
    penalty[-1, -1] = 0.0
    weights = np.linalg.solve(a.T @ a + penalty, a.T @ targets)
    return RidgeProbe(mean=mean, scale=scale, weights=weights, classes=classes)


def ridge_predict(probe: RidgeProbe, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    scores = _design(x, probe.mean, probe.scale) @ probe.weights
    return probe.classes[scores.argmax(1)]


def holdout_probe_accuracy(x_fit: np.ndarray, y_fit: np.ndarray, x_test: np.ndarray,
                           y_test: np.ndarray, alpha: float = RIDGE_ALPHA) -> float:
    """Accuracy on (x_test, y_test) of a probe fitted on (x_fit, y_fit)."""
    if len(y_test) == 0:
        raise ValueError("no test samples")
    return float((ridge_predict(ridge_fit(x_fit, y_fit, alpha), x_test) == y_test).mean())


def probe_accuracy(x: np.ndarray, y: np.ndarray, *, folds: int = 5, seed: int = 0,
                   alpha: float = RIDGE_ALPHA) -> float:
    """Out-of-fold accuracy: every sample is predicted by a probe not fitted on it."""
    n = len(y)
    if folds < 2 or n < folds:
        raise ValueError(f"need 2 <= folds <= samples, got folds={folds}, samples={n}")
    order = np.random.default_rng(seed).permutation(n)
    correct = 0
    for part in np.array_split(order, folds):
        rest = np.setdiff1d(order, part, assume_unique=True)
        correct += int((ridge_predict(ridge_fit(x[rest], y[rest], alpha), x[part])
                        == y[part]).sum())
    return correct / n
