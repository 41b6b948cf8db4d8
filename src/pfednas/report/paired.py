"""Paired differences by seed: a row against the best baseline of the same cell.

The protocol's verdict (``BENCHMARK.md``, "Reporting"): each method's accuracy minus the
strongest baseline's, paired by seed, with its 95 % interval (Student's t over the seeds):

* ``wins`` / ``loses`` where the interval excludes 0;
* ``ties`` where the whole interval lies within ±``TIE_MARGIN`` (equivalent within a point of
  accuracy: a tie is a claim, and needs an interval that narrow);
* else ``inconclusive``, with the smallest difference the design could detect
  (:attr:`PairedDifference.detectable`): such a result meets no target.

Each interval is one comparison's, uncorrected; :func:`holm` says which verdicts among a set
of comparisons survive Holm's correction (a win or a loss: its paired t-test's p-value,
:func:`p_value`; a tie: :func:`tie_holds`), :func:`holds_after_bonferroni` whether a win
survives a Bonferroni correction.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pfednas.report.table import Key, RunRow, group_key

CONFIDENCE = 0.95
POWER = 0.8  # of the smallest detectable difference
TIE_MARGIN = 0.01  # a tie: the whole interval within ±0.01 accuracy


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``a − b`` over the seeds both have, its confidence interval, and the smallest
    difference this design detects: (t₁₋α/₂ + t_power) · sd / √n over n − 1 degrees of
    freedom, at ``CONFIDENCE`` and ``POWER``."""

    mean: float
    low: float
    high: float
    seeds: tuple[int, ...]
    detectable: float
    seeds_for_margin: int | None = None  # seeds that would detect ±TIE_MARGIN (None: > 100)

    @property
    def verdict(self) -> str:
        """``wins`` / ``loses`` where the interval excludes 0, ``ties`` where it lies within
        ±``TIE_MARGIN``, else ``inconclusive``."""
        if self.low > 0:
            return "wins"
        if self.high < 0:
            return "loses"
        if self.low >= -TIE_MARGIN and self.high <= TIE_MARGIN:
            return "ties"
        return "inconclusive"

    @property
    def words(self) -> str:
        """The verdict as the page says it: an inconclusive one with its seeds and the
        smallest difference it could have detected, a tie with its margin."""
        if self.verdict == "inconclusive":
            return (f"inconclusive ({len(self.seeds)} seeds; detects ≥ "
                    f"{self.detectable:.4f}; {self.needed})")
        if self.verdict == "ties":
            return f"ties (within ±{TIE_MARGIN:g})"
        return self.verdict

    @property
    def summary(self) -> str:
        """``inconclusive (−0.0011; 3 seeds, detects ≥ 0.0172)``, ``loses (−0.0119)``: the
        verdict with its mean, for a line that has no room for the interval."""
        detail = {"inconclusive": f"; {len(self.seeds)} seeds, detects ≥ {self.detectable:.4f}, "
                                  f"{self.needed}",
                  "ties": f", within ±{TIE_MARGIN:g}"}.get(self.verdict, "")
        return f"{self.verdict} ({signed(self.mean)}{detail})"

    @property
    def needed(self) -> str:
        """How many seeds would detect a difference of ``TIE_MARGIN`` at this spread (the
        question "are they a point apart?")."""
        n = self.seeds_for_margin
        return f"{TIE_MARGIN:g} needs {'> 100' if n is None else n} seeds"

    @property
    def meets_target(self) -> bool:
        """Whether it ties or beats: an inconclusive difference meets no target."""
        return self.verdict in ("ties", "wins")


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
    sd = float(diffs.std(ddof=1))
    error = sd / math.sqrt(len(seeds))
    quantile = t_quantile((1 + confidence) / 2, len(seeds) - 1)
    half = quantile * error
    return PairedDifference(mean, mean - half, mean + half, seeds,
                            detectable_difference(sd, len(seeds), confidence),
                            seeds_for(TIE_MARGIN, sd, confidence))


def detectable_difference(sd: float, n: int, confidence: float = CONFIDENCE) -> float:
    """The smallest paired difference ``n`` seeds detect at ``POWER``, for a spread ``sd`` of
    the differences: (t₁₋α/₂ + t_power) · sd / √n, over n − 1 degrees of freedom."""
    return ((t_quantile((1 + confidence) / 2, n - 1) + t_quantile(POWER, n - 1)) * sd
            / math.sqrt(n))


def seeds_for(difference: float, sd: float, confidence: float = CONFIDENCE,
              most: int = 100) -> int | None:
    """The fewest seeds (2 to ``most``) that detect ``difference`` at this spread (None:
    more than ``most``)."""
    return next((n for n in range(2, most + 1)
                 if detectable_difference(sd, n, confidence) <= difference), None)


def holds_after_bonferroni(a: Mapping[int, float], b: Mapping[int, float],
                           comparisons: int) -> bool:
    """Whether ``a`` still beats ``b`` with the interval widened for ``comparisons``
    comparisons (Bonferroni: confidence 1 − 0.05 / comparisons)."""
    d = paired_difference(a, b, 1 - (1 - CONFIDENCE) / max(1, comparisons))
    return d is not None and d.low > 0


def p_value(a: Mapping[int, float], b: Mapping[int, float]) -> float | None:
    """Two-sided paired t-test of ``a − b`` over the seeds both have (None: < 2 seeds)."""
    from scipy.stats import t  # the report only

    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    diffs = np.array([a[s] - b[s] for s in seeds], dtype=np.float64)
    sd = float(diffs.std(ddof=1))
    if sd == 0:
        return 0.0 if diffs.mean() != 0 else 1.0
    stat = float(diffs.mean()) / (sd / math.sqrt(len(seeds)))
    return float(2 * t.sf(abs(stat), len(seeds) - 1))


def holm(p_values: Sequence[float], level: float = 1 - CONFIDENCE) -> list[bool]:
    """Holm's step-down correction: which hypotheses are rejected at family-wise ``level``
    (the i-th smallest p-value against level / (m − i), stopping at the first that fails)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    rejected = [False] * len(p_values)
    for rank, i in enumerate(order):
        if p_values[i] > level / (len(p_values) - rank):
            break
        rejected[i] = True
    return rejected


def tie_holds(a: Mapping[int, float], b: Mapping[int, float], comparisons: int) -> bool:
    """Whether a tie survives the correction: the interval widened for ``comparisons``
    (Bonferroni, the most any of Holm's steps asks) still lies within ±TIE_MARGIN."""
    d = paired_difference(a, b, 1 - (1 - CONFIDENCE) / max(1, comparisons))
    return d is not None and d.low >= -TIE_MARGIN and d.high <= TIE_MARGIN


def seed_accuracies(rows: Iterable[RunRow]) -> dict[Key, dict[int, float]]:
    """Each table row's (``group_key``) mean client accuracy by seed."""
    out: dict[Key, dict[int, float]] = {}
    for row in rows:
        out.setdefault(group_key(row), {})[row.seed] = row.acc_mean
    return out


def signed(value: float) -> str:
    """``+0.0123`` / ``−0.0123`` (a true minus sign), ``0.0000`` for what rounds to zero."""
    if abs(value) < 5e-5:
        return "0.0000"
    return f"{value:+.4f}".replace("-", "−")
