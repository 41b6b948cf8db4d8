"""Paired differences by seed: a row against the best baseline of the same cell.

The protocol's verdict (``BENCHMARK.md``, "Reporting"): each method's accuracy minus the
strongest baseline's, paired by seed, with its 95 % interval (Student's t over the seeds);
"ties" where the interval includes 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from pfednas.report.table import RunRow, group_key

CONFIDENCE = 0.95


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``a − b`` over the seeds both have, and its confidence interval."""

    mean: float
    low: float
    high: float
    seeds: tuple[int, ...]

    @property
    def verdict(self) -> str:
        """``wins`` / ``loses`` where the interval excludes 0, else ``ties``."""
        if self.low > 0:
            return "wins"
        return "loses" if self.high < 0 else "ties"


def t_quantile(probability: float, dof: int) -> float:
    from scipy.stats import t  # imported where used: the report only

    return float(t.ppf(probability, dof))


def paired_difference(a: Mapping[int, float], b: Mapping[int, float],
                      confidence: float = CONFIDENCE) -> PairedDifference | None:
    """``a − b`` paired by seed (None with fewer than two common seeds)."""
    seeds = tuple(sorted(set(a) & set(b)))
    if len(seeds) < 2:
        return None
    diffs = np.array([a[s] - b[s] for s in seeds], dtype=np.float64)
    mean = float(diffs.mean())
    half = t_quantile((1 + confidence) / 2, len(seeds) - 1) * float(diffs.std(ddof=1)) \
        / math.sqrt(len(seeds))
    return PairedDifference(mean, mean - half, mean + half, seeds)


def seed_accuracies(rows: Iterable[RunRow]) -> dict[tuple[str, str, float, str], dict[int, float]]:
    """Each table row's (``group_key``) mean client accuracy by seed."""
    out: dict[tuple[str, str, float, str], dict[int, float]] = {}
    for row in rows:
        out.setdefault(group_key(row), {})[row.seed] = row.acc_mean
    return out


def signed(value: float) -> str:
    """``+0.0123`` / ``−0.0123`` (a true minus sign), ``0.0000`` for what rounds to zero."""
    if abs(value) < 5e-5:
        return "0.0000"
    return f"{value:+.4f}".replace("-", "−")
