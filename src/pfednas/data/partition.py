"""Non-IID client partitions and each client's stratified train / val / test split.

1. ``partition``: ``flwr_datasets``' ``DirichletPartitioner`` (alpha, minimum size,
   seed) over a ``datasets.Dataset`` of the pooled labels gives each client its
   sample indices; an optional cap keeps a label-stratified subsample. Where its ten
   seeded draws all leave a client below the minimum (a small α over many clients), the
   first draw is kept and repaired (:func:`repair_minimum`: the fewest samples moved to
   the clients below it, recorded as :class:`Repair`), so any α > 0 partitions.
2. ``split_client``: within a client, every class is divided between the
   splits in the requested fractions (largest-remainder rounding), so the
   test split keeps the client's label proportions; a class with a single
   sample goes to train.

Randomness comes from ``pfednas.seeding``'s streams (``DATA_PARTITION``,
``PARTITION_CAP``, ``CLIENT_SPLIT``, ``TUNING_SPLIT``), so the same ``DataSpec``
yields the same data for every method, and no data stream meets another purpose's.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from pfednas.data.arrays import ArrayDataset, ClientData, RawImages, select
from pfednas.data.registry import load_raw, normalisation, resolve_root
from pfednas.data.spec import DataSpec, validate_spec
from pfednas.seeding import (
    CLIENT_SPLIT,
    DATA_PARTITION,
    PARTITION_CAP,
    PARTITION_REPAIR,
    TUNING_SPLIT,
    int_seed,
    numpy_rng,
)


def apportion(total: int, weights: Sequence[float] | np.ndarray) -> np.ndarray:
    """Split ``total`` into integers proportional to ``weights`` (largest remainder)."""
    w = np.asarray(weights, dtype=np.float64)
    exact = total * w / w.sum()
    counts = np.floor(exact).astype(np.int64)
    short = total - int(counts.sum())
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:short]] += 1
    return counts


def split_counts(
    class_counts: Sequence[int] | np.ndarray, fractions: Sequence[float]
) -> np.ndarray:
    """How many samples of each class go to each split.

    Returns an int array ``(num_classes, num_splits)`` whose rows sum to
    ``class_counts`` and whose columns sum (up to classes of one sample, which
    always go to split 0 = train) to the largest-remainder share of the total.
    A split with a positive fraction is never left empty while train has two
    or more samples.
    """
    counts = np.asarray(class_counts, dtype=np.int64)
    frac = np.asarray(fractions, dtype=np.float64)
    exact = counts[:, None] * frac[None, :]
    alloc = np.floor(exact).astype(np.int64)
    single = counts == 1
    alloc[single] = 0
    alloc[single, 0] = 1
    remainder = np.round(exact - np.floor(exact), 9)  # exact ties break by class order
    remainder[single] = 0.0
    targets = apportion(int(counts.sum()), frac)
    _assign_remainders(alloc, counts, remainder, targets)
    _fill_empty_splits(alloc, frac)
    return alloc


def _assign_remainders(
    alloc: np.ndarray, counts: np.ndarray, remainder: np.ndarray, targets: np.ndarray
) -> None:
    """Hand each class's leftover samples to splits, largest fractional part first."""
    for flat in np.argsort(-remainder, axis=None, kind="stable"):
        row, col = divmod(int(flat), alloc.shape[1])
        if remainder[row, col] <= 0:
            break
        if alloc[row].sum() < counts[row] and alloc[:, col].sum() < targets[col]:
            alloc[row, col] += 1
    for row in np.flatnonzero(alloc.sum(axis=1) < counts):  # units the greedy pass stranded
        while alloc[row].sum() < counts[row]:
            alloc[row, int(np.argmax(targets - alloc.sum(axis=0)))] += 1


def _fill_empty_splits(alloc: np.ndarray, frac: np.ndarray) -> None:
    """Move one train sample into each empty split that should not be empty."""
    for col in np.flatnonzero((frac > 0) & (alloc.sum(axis=0) == 0)):
        if col != 0 and alloc[:, 0].sum() >= 2:
            donor = int(np.argmax(alloc[:, 0]))
            alloc[donor, 0] -= 1
            alloc[donor, col] += 1


def stratified_split(
    labels: np.ndarray, fractions: Sequence[float], rng: np.random.Generator
) -> list[np.ndarray]:
    """Positions ``0..len(labels)-1`` divided into ``len(fractions)`` sorted, disjoint parts."""
    classes, inverse = np.unique(labels, return_inverse=True)
    alloc = split_counts(np.bincount(inverse, minlength=classes.size), fractions)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for c in range(classes.size):
        members = rng.permutation(np.flatnonzero(inverse == c))
        for s, chunk in enumerate(np.split(members, np.cumsum(alloc[c])[:-1])):
            parts[s].append(chunk)
    return [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]


def _stratified_cap(labels: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of a label-stratified subsample of exactly ``cap`` items, sorted."""
    classes, inverse = np.unique(labels, return_inverse=True)
    counts = np.bincount(inverse, minlength=classes.size)
    keep = apportion(cap, counts)
    chosen = [
        rng.choice(np.flatnonzero(inverse == c), size=int(keep[c]), replace=False)
        for c in range(classes.size)
    ]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


@dataclass(frozen=True)
class Repair:
    """What :func:`repair_minimum` did to a draw: the samples it moved and, per client that
    received any, how many (client id → samples)."""

    moved: int
    received: tuple[tuple[int, int], ...]

    def clients_text(self, most: int = 10) -> str:
        """``3, 7, 19`` (the first ``most``, then how many more)."""
        ids = [str(c) for c, _ in self.received]
        more = f" and {len(ids) - most} more" if len(ids) > most else ""
        return ", ".join(ids[:most]) + more

    def record(self) -> dict[str, object]:
        """As ``summary.json`` keeps it (``partition_repair``)."""
        return {"moved_samples": self.moved,
                "received": {str(c): n for c, n in self.received}}


def repair_minimum(parts: Sequence[np.ndarray], labels: np.ndarray, minimum: int,
                   rng: np.random.Generator) -> tuple[list[np.ndarray], Repair]:
    """Every client brought to ``minimum`` samples by moving the fewest: the total shortfall,
    one sample at a time, each from the client that then holds the most. A moved sample is
    of the class the receiving client holds most of where the donor has one (label skew
    kept), else of the donor's largest class; which one of that class, ``rng`` draws.
    ``ValueError`` where the clients hold fewer than ``len(parts) × minimum`` samples."""
    held = [list(np.asarray(p, dtype=np.int64)) for p in parts]
    total = sum(len(h) for h in held)
    if total < len(held) * minimum:
        raise ValueError(f"{total} samples cannot give {len(held)} clients >= {minimum} each")
    received: dict[int, int] = {}
    for client in range(len(held)):
        while len(held[client]) < minimum:
            sizes = [len(h) for h in held]
            donor = int(np.argmax(sizes))  # the most samples, the lowest id on a tie
            donor_labels = labels[held[donor]]
            own = np.bincount(labels[held[client]], minlength=int(labels.max()) + 1)
            wanted = [int(c) for c in np.argsort(-own, kind="stable") if own[c] > 0]
            cls = next((c for c in wanted if np.any(donor_labels == c)),
                       int(np.argmax(np.bincount(donor_labels))))
            candidates = np.flatnonzero(donor_labels == cls)
            sample = held[donor].pop(int(candidates[rng.integers(candidates.size)]))
            held[client].append(sample)
            received[client] = received.get(client, 0) + 1
    repaired = [np.sort(np.asarray(h, dtype=np.int64)) for h in held]
    return repaired, Repair(sum(received.values()), tuple(sorted(received.items())))


def dirichlet_partition(
    labels: np.ndarray, *, num_clients: int, alpha: float, min_partition_size: int, seed: int,
    repair_rng: Callable[[], np.random.Generator] | None = None,
) -> tuple[list[np.ndarray], Repair | None]:
    """Per-client sorted indices into ``labels`` from ``flwr_datasets``' DirichletPartitioner,
    and the :class:`Repair` where none of its draws gave every client ``min_partition_size``
    (its first draw, repaired with the generator ``repair_rng`` makes, only then; None: the
    draw needed none)."""
    try:
        return _dirichlet_draw(labels, num_clients, alpha, min_partition_size, seed), None
    except ValueError as exc:
        if repair_rng is None or labels.size < num_clients * min_partition_size:
            raise ValueError(
                f"Dirichlet partitioning of {labels.size} samples into {num_clients} clients "
                f"with alpha={alpha} could not give every client >= {min_partition_size} "
                f"samples ({exc}); raise dataset.alpha, lower dataset.min_partition_size "
                "or federation.num_clients"
            ) from exc
    first = _dirichlet_draw(labels, num_clients, alpha, 0, seed)
    parts, repair = repair_minimum(first, labels, min_partition_size, repair_rng())
    return parts, repair


def _dirichlet_draw(labels: np.ndarray, num_clients: int, alpha: float, minimum: int,
                    seed: int) -> list[np.ndarray]:
    """One DirichletPartitioner run (its own up to ten draws for ``minimum``); ValueError
    where none of them met it."""
    from datasets import Dataset
    from flwr_datasets.partitioner import DirichletPartitioner

    columns = {"label": labels.astype(np.int64), "row": np.arange(labels.size)}
    table = Dataset.from_dict(columns).with_format("arrow")  # whole-column reads, no row loop
    partitioner = DirichletPartitioner(
        num_partitions=num_clients,
        partition_by="label",
        alpha=float(alpha),
        min_partition_size=minimum,
        self_balancing=False,
        shuffle=False,
        seed=seed,
    )
    partitioner.dataset = table
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # its per-retry warnings
        rows = [partitioner.load_partition(i)["row"] for i in range(num_clients)]
    return [np.sort(np.asarray(r, dtype=np.int64)) for r in rows]


def _resolved(spec: DataSpec) -> DataSpec:
    """``spec`` with ``root`` resolved (config > environment > default), as a cache key."""
    root = resolve_root(spec.name, spec.root)
    return spec if root == spec.root else replace(spec, root=root)


def _raw(spec: DataSpec) -> RawImages:
    return load_raw(spec.name, spec.root, seed=spec.seed, synthetic_samples=spec.synthetic_samples)


@functools.lru_cache(maxsize=8)
def _cached_partition(spec: DataSpec) -> tuple[tuple[np.ndarray, ...], Repair | None]:
    labels = _raw(spec).labels
    parts, repair = dirichlet_partition(
        labels,
        num_clients=spec.num_clients,
        alpha=spec.alpha,
        min_partition_size=spec.min_partition_size,
        seed=int_seed(spec.seed, DATA_PARTITION),
        repair_rng=lambda: numpy_rng(spec.seed, PARTITION_REPAIR),
    )
    if repair is not None:
        logging.getLogger("pfednas").warning(
            "Dirichlet α=%g left clients below %d samples in all 10 draws: the first draw "
            "kept, %d samples moved to clients %s (summary.json: partition_repair)",
            spec.alpha, spec.min_partition_size, repair.moved, repair.clients_text())
    cap = spec.max_samples_per_client
    if cap is not None:
        parts = [
            p
            if p.size <= cap
            else p[_stratified_cap(labels[p], cap, numpy_rng(spec.seed, PARTITION_CAP, i))]
            for i, p in enumerate(parts)
        ]
    for p in parts:
        p.setflags(write=False)
    return tuple(parts), repair


def partition(spec: DataSpec) -> list[np.ndarray]:
    """Each client's sorted sample indices into the pooled dataset (``load_arrays``).

    Deterministic in ``spec``; the arrays are read-only and cached per process.
    """
    validate_spec(spec)
    return list(_cached_partition(_resolved(spec))[0])


def partition_repair(spec: DataSpec) -> Repair | None:
    """What had to be moved for every client of ``spec`` to hold its minimum (None: the
    Dirichlet draw needed nothing)."""
    validate_spec(spec)
    return _cached_partition(_resolved(spec))[1]


def load_client_data(spec: DataSpec, client_id: int) -> ClientData:
    """Client ``client_id``'s normalised train / val / test splits.

    The pooled data and the partition are cached per process, so many clients
    simulated in one worker load the dataset once. The split is drawn from
    ``SeedSequence([seed, CLIENT_SPLIT, client_id])``.
    """
    if not 0 <= client_id < spec.num_clients:
        raise ValueError(f"client_id must be in [0, {spec.num_clients}), got {client_id}")
    indices = partition(spec)[client_id]
    resolved = _resolved(spec)
    raw = _raw(resolved)
    train, val, test = stratified_split(
        raw.labels[indices], spec.fractions, numpy_rng(spec.seed, CLIENT_SPLIT, client_id)
    )
    norm = normalisation(spec.name)
    return ClientData(
        train=select(raw, indices[train], norm),
        val=select(raw, indices[val], norm),
        test=select(raw, indices[test], norm),
    )


def tuning_splits(data: ClientData, seed: int, client_id: int) -> ClientData:
    """A tuning run's splits (``eval_split=val``) for a method that selects on validation
    data: the validation split halved, stratified.

    Such a method (PerFedRLNAS's reward, HAPFNAS's subnet measurements, FedNAS's
    architecture steps, SPIDER's perturbation decisions) cannot also be scored on what it
    selected on. Half of the validation split stays ``val`` (what it selects on); the other
    half becomes ``test`` (what the run reports). ``train`` is the reported runs' own, and
    the real test split is never read. The halves are drawn from
    ``SeedSequence([seed, TUNING_SPLIT, client_id])``. A method that never reads its validation
    split is scored on all of it (``pfednas.app.client_app.client_env``).
    """
    if len(data.val.y) < 2:
        raise ValueError(f"client {client_id}: a tuning run splits the validation split in "
                         f"two and needs >= 2 validation samples, got {len(data.val.y)} "
                         f"(raise dataset.val_fraction or the client's samples)")
    select_on, score = stratified_split(data.val.y, (0.5, 0.5),
                                        numpy_rng(seed, TUNING_SPLIT, client_id))
    return ClientData(train=data.train,
                      val=ArrayDataset(x=data.val.x[select_on], y=data.val.y[select_on]),
                      test=ArrayDataset(x=data.val.x[score], y=data.val.y[score]))
