"""HAPFNAS phase 2 on the server: per-client predictors and the budgeted evolutionary search.

After the last search round each client's (architecture, measured accuracy) pairs fit
its random forest — the pooled pairs of every client where it measured fewer than
``predictor.min_pairs`` — and a predictor-guided evolutionary search picks its
architecture within its budget (:mod:`pfednas.nas.predictor`, :mod:`pfednas.nas.evolution`;
their docstrings say why on the server). Where nobody measured anything the search
takes the largest subnet, by parameters, that fits.

:class:`SearchState` is phase 2's server state: the pairs, and after the search each
client's architecture, the forest's forecast for it and the forest's cross-validated
report; it writes and reads its own checkpoint arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from logging import WARNING
from typing import Any

import numpy as np
from flwr.common import log

from pfednas.nas.evolution import Genome, evolve
from pfednas.nas.phases import Phase
from pfednas.nas.predictor import (
    PredictorReport,
    arch_features,
    cross_validated_report,
    fit_forest,
)
from pfednas.options.hapfnas import HAPFNASOptions
from pfednas.search import Arch, SearchSpace, Supernet
from pfednas.seeding import HAPFNAS_EVOLUTION, HAPFNAS_PREDICTOR, int_seed, numpy_rng

REPORT_FIELDS = ("spearman_rf", "spearman_mean", "mae_rf", "mae_mean")
Pair = tuple[Arch, float]  # (architecture, the client's measured accuracy)


@dataclass(frozen=True)
class ClientSearch:
    """One client's searched architecture, the forest's forecast for it (NaN without a
    forest), the forest's report (None without one) and the row the round records."""

    client_id: int
    arch: Arch
    predicted: float
    report: PredictorReport | None
    row: dict[str, Any]


def search_client(supernet: Supernet, client_id: int, own: list[Pair], pooled: list[Pair], *,
                  cost_of: Callable[[Arch], float], budget: float, options: HAPFNASOptions,
                  seed: int) -> ClientSearch:
    """Fit the client's forest on its own pairs (the pooled ones if it has fewer than
    ``min_pairs``) and evolve its architecture within ``budget`` (in ``cost_of``'s metric)."""
    space, opts = supernet.space, options.predictor
    pairs = own if len(own) >= opts.min_pairs else pooled
    forest_seed = int_seed(seed, HAPFNAS_PREDICTOR, client_id) % 2**32

    def features(archs: list[Arch]) -> np.ndarray:
        return np.stack([arch_features(supernet, a) for a in archs])

    row: dict[str, Any] = {"client_id": client_id, "phase": int(Phase.SEARCH),
                           "pairs": len(own), "pooled": int(pairs is not own)}
    forest, report = None, None
    if len(pairs) >= 2:
        x, y = features([a for a, _ in pairs]), np.array([acc for _, acc in pairs])
        report = cross_validated_report(x, y, trees=opts.trees, folds=opts.folds,
                                        seed=forest_seed)
        row.update({k: getattr(report, k) for k in REPORT_FIELDS})
        forest = fit_forest(x, y, trees=opts.trees, seed=forest_seed)
    else:
        log(WARNING, "HAPFNAS: no subnet measurements for client %d; searching by size",
            client_id)

    def predicted(genomes: list[Genome]) -> np.ndarray:
        assert forest is not None
        return np.asarray(forest.predict(features([space.arch_from_indices(g)
                                                   for g in genomes])), dtype=np.float64)

    def params(genomes: list[Genome]) -> np.ndarray:
        return np.array([float(supernet.cost(space.arch_from_indices(g)).params)
                         for g in genomes])

    def fits(arch: Arch) -> bool:
        return cost_of(arch) <= budget

    result = evolve([len(d.choices) for d in space.dimensions],
                    predicted if forest is not None else params,
                    lambda g: fits(space.arch_from_indices(g)), options=options.evolution,
                    rng=numpy_rng(seed, HAPFNAS_EVOLUTION, client_id),
                    seeds=[a.indices for a, _ in own])
    arch = space.arch_from_indices(result.best)
    if not fits(arch):  # evolve admits feasible genomes only
        raise RuntimeError(f"search returned an over-budget architecture for {client_id}")
    forecast = float(predicted([result.best])[0]) if forest is not None else float("nan")
    return ClientSearch(client_id, arch, forecast, report, {
        **row, "arch": arch.to_str(),
        "predicted_accuracy": forecast if forest is not None else None,
        "search_objective": "predictor" if forest is not None else "params",
        "cost": cost_of(arch), "budget": budget, "evaluated": result.evaluated})


def search_all(supernet: Supernet, pairs: Mapping[int, list[Pair]], clients: Iterable[int], *,
               cost_of: Callable[[Arch], float], budgets: Mapping[int, float],
               options: HAPFNASOptions, seed: int) -> list[ClientSearch]:
    """:func:`search_client` for each of ``clients``, in order."""
    pooled = [pair for cid in sorted(pairs) for pair in pairs[cid]]
    return [search_client(supernet, cid, pairs.get(cid, []), pooled, cost_of=cost_of,
                          budget=budgets[cid], options=options, seed=seed)
            for cid in clients]


@dataclass
class SearchState:
    """Phase 2's server state (see the module docstring)."""

    pairs: dict[int, list[Pair]] = field(default_factory=dict)
    personal: dict[int, Arch] = field(default_factory=dict)
    predicted: dict[int, float] = field(default_factory=dict)
    reports: dict[int, PredictorReport] = field(default_factory=dict)

    def adopt(self, results: Iterable[ClientSearch]) -> None:
        for r in results:
            self.personal[r.client_id], self.predicted[r.client_id] = r.arch, r.predicted
            if r.report is not None:
                self.reports[r.client_id] = r.report

    def report(self, budget_violations: int) -> dict[str, Any]:
        """The search's server record: the forests' mean quality over the clients."""
        reports = list(self.reports.values())
        out: dict[str, Any] = {"phase": int(Phase.SEARCH), "clients": len(self.personal)}
        for key in REPORT_FIELDS:
            out[key] = float(np.mean([getattr(r, key) for r in reports])) if reports else None
        out["budget_violations"] = budget_violations
        return out

    def to_arrays(self, num_clients: int, dims: int) -> dict[str, np.ndarray]:
        """Checkpoint arrays; ``dims`` = the search space's dimensions."""
        pairs = [(cid, a, acc) for cid in sorted(self.pairs) for a, acc in self.pairs[cid]]
        out = {"pair_client": np.array([p[0] for p in pairs], dtype=np.int64),
               "pair_indices": np.array([p[1].indices for p in pairs],
                                        dtype=np.int64).reshape(-1, dims),
               "pair_accuracy": np.array([p[2] for p in pairs], dtype=np.float64),
               "personal_indices": np.full((num_clients, dims), -1, dtype=np.int64),
               "predicted_accuracy": np.full(num_clients, np.nan),
               "predictor_report": np.full((num_clients, 1 + len(REPORT_FIELDS)), np.nan)}
        for cid, arch in self.personal.items():
            out["personal_indices"][cid] = arch.indices
            out["predicted_accuracy"][cid] = self.predicted[cid]
        for cid, r in self.reports.items():
            out["predictor_report"][cid] = [r.pairs, *(getattr(r, f) for f in REPORT_FIELDS)]
        return out

    @classmethod
    def from_arrays(cls, state: Mapping[str, np.ndarray], space: SearchSpace) -> SearchState:
        out = cls()
        for cid, idx, acc in zip(state["pair_client"], state["pair_indices"],
                                 state["pair_accuracy"], strict=True):
            out.pairs.setdefault(int(cid), []).append((space.arch_from_indices(idx), float(acc)))
        for cid, idx in enumerate(state["personal_indices"]):
            if idx[0] >= 0:
                out.personal[cid] = space.arch_from_indices(idx)
                out.predicted[cid] = float(state["predicted_accuracy"][cid])
        for cid, row in enumerate(state["predictor_report"]):
            if not np.isnan(row[0]):
                out.reports[cid] = PredictorReport(int(row[0]), *(float(v) for v in row[1:]))
        return out
