"""Per-client architectures against per-client label distributions.

The paper's claim — clients with similar data end up with similar architectures —
is shown by ordering clients by the similarity of their label histograms
(hierarchical clustering, optimal leaf order) and plotting their chosen option
per search dimension in that order; :func:`label_arch_correlation` puts one
number on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.cluster.hierarchy import leaves_list, linkage
from scipy.spatial.distance import pdist
from scipy.stats import spearmanr

from pfednas.data import DataSpec, partition, spec_info
from pfednas.data.registry import load_raw

if TYPE_CHECKING:  # pfednas.search imports torch: `pfednas report`'s checks stay quick
    from pfednas.search import SearchSpace


@dataclass(frozen=True)
class ArchMatrix:
    """Chosen option index per client (rows) and search dimension (columns)."""

    client_ids: tuple[int, ...]
    dimensions: tuple[str, ...]
    num_choices: tuple[int, ...]
    indices: np.ndarray  # int, (clients, dimensions)

    def normalised(self) -> np.ndarray:
        """Indices scaled to [0, 1] per dimension (0 = first choice, 1 = last)."""
        span = np.maximum(np.asarray(self.num_choices) - 1, 1)
        return self.indices / span[None, :]

    def take(self, order: Sequence[int]) -> ArchMatrix:
        rows = list(order)
        return ArchMatrix(tuple(self.client_ids[i] for i in rows), self.dimensions,
                          self.num_choices, self.indices[rows])


def _space(space_cfg: dict[str, Any], text: str) -> SearchSpace:
    from pfednas.search import get_space

    space = get_space(**space_cfg)
    try:
        space.arch_from_str(text)
    except ValueError:
        if "allow_empty_edges" not in space_cfg:
            raise
        # SPIDER may prune an edge completely: its strings need the space with empty edges.
        space = get_space(**{**space_cfg, "allow_empty_edges": True})
    return space


def arch_matrix(evaluation: Sequence[dict[str, Any]], space_cfg: dict[str, Any]
                ) -> ArchMatrix | None:
    """The evaluation rows' architectures as option indices (None when rows carry no arch)."""
    rows = sorted((r for r in evaluation if r.get("arch")), key=lambda r: int(r["client_id"]))
    if not rows:
        return None
    space = _space(space_cfg, str(rows[0]["arch"]))
    archs = [space.arch_from_str(str(r["arch"])) for r in rows]
    return ArchMatrix(client_ids=tuple(int(r["client_id"]) for r in rows),
                      dimensions=tuple(d.name for d in space.dimensions),
                      num_choices=tuple(len(d.choices) for d in space.dimensions),
                      indices=np.array([a.indices for a in archs], dtype=np.int64))


def label_distance(histograms: np.ndarray) -> np.ndarray:
    """Condensed pairwise Hellinger distances between the rows' label distributions."""
    p = histograms / histograms.sum(axis=1, keepdims=True)
    return pdist(np.sqrt(p)) / np.sqrt(2.0)


def similarity_order(histograms: np.ndarray) -> list[int]:
    """Row order that puts clients with similar label distributions next to each other.

    Average-linkage clustering on Hellinger distances, leaves in optimal order;
    fewer than three clients keep their order.
    """
    n = histograms.shape[0]
    if n < 3:
        return list(range(n))
    tree = linkage(label_distance(histograms), method="average", optimal_ordering=True)
    return [int(i) for i in leaves_list(tree)]


def label_arch_correlation(histograms: np.ndarray, archs: ArchMatrix) -> float:
    """Spearman ρ between pairwise label distance and pairwise architecture distance.

    Architecture distance: mean over dimensions of |Δ normalised option index|.
    Positive ρ: clients with similar data got similar architectures. NaN when
    all architectures (or all label distributions) are equal.
    """
    if histograms.shape[0] < 3:
        return float("nan")
    arch_distance = pdist(archs.normalised(), metric="cityblock") / len(archs.dimensions)
    labels = label_distance(histograms)
    if np.ptp(arch_distance) == 0 or np.ptp(labels) == 0:
        return float("nan")
    return float(spearmanr(labels, arch_distance).statistic)


def label_histograms(config: dict[str, Any]) -> np.ndarray:
    """Per-client label counts (whole partition) of the run with this composed config.

    Partitions are a deterministic function of the dataset config, K and the
    seed, so this is exactly the run's data. Raises ``DataError`` when the
    dataset's files cannot be read here.
    """
    spec = DataSpec.from_config(config["dataset"], num_clients=int(
        config["federation"]["num_clients"]), seed=int(config.get("seed", 0)))
    return _histograms(spec).copy()


@lru_cache(maxsize=16)
def _histograms(spec: DataSpec) -> np.ndarray:
    labels = load_raw(spec.name, spec.root, seed=spec.seed,
                      synthetic_samples=spec.synthetic_samples, natural_id=spec.natural_id).labels
    classes = spec_info(spec).num_classes
    return np.stack([np.bincount(labels[idx], minlength=classes) for idx in partition(spec)])

