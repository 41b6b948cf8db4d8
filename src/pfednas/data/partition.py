"""Non-IID client partitions and each client's stratified train / val / test split.

1. ``partition``: the partitioner ``dataset.partitioner`` names
   (:mod:`pfednas.data.partitioners`, ``flwr_datasets``' where it has one) gives each
   client its sample indices; an optional cap keeps a label-stratified subsample. The
   default, ``dirichlet`` (``DirichletPartitioner``: alpha, minimum size, seed), repairs a
   draw where its ten seeded draws all leave a client below the minimum (a small α over
   many clients): the first draw is kept and the fewest samples moved to the clients below
   it (:func:`repair_minimum`, recorded as :class:`Repair`), so any α > 0 partitions. Any
   other partitioner that leaves a client short is refused, naming the client.
2. ``stratified_split``: within a client, every class is divided between the
   splits in the requested fractions (largest-remainder rounding), so the
   test split keeps the client's label proportions; a class with a single
   sample goes to train.
3. ``load_client_data``: the client's rows, transformed by its feature skew
   (:mod:`pfednas.data.shift`) where one is set, and normalised.

Randomness comes from ``pfednas.seeding``'s streams (``DATA_PARTITION``,
``PARTITION_CAP``, ``CLIENT_SPLIT``, ``TUNING_SPLIT``, ``FEATURE_SKEW``, ``FEATURE_NOISE``),
so the same ``DataSpec`` yields the same data for every method, and no data stream meets
another purpose's.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from pfednas.data import deal_cache, partitioners
from pfednas.data.arrays import (
    ArrayDataset,
    ClientData,
    Normalisation,
    RawImages,
    normalise,
    select,
)
from pfednas.data.partitioners import apportion
from pfednas.data.registry import OWN, load_raw, normalisation, resolve_root
from pfednas.data.shift import ClientShift, apply_shift, draw_shifts
from pfednas.data.spec import DataSpec, validate_spec
from pfednas.seeding import (
    CLIENT_SPLIT,
    DATA_PARTITION,
    FEATURE_NOISE,
    FEATURE_SKEW,
    PARTITION_CAP,
    PARTITION_REPAIR,
    TUNING_SPLIT,
    int_seed,
    numpy_rng,
)


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
    from flwr_datasets.partitioner import DirichletPartitioner

    partitioner = DirichletPartitioner(
        num_partitions=num_clients,
        partition_by="label",
        alpha=float(alpha),
        min_partition_size=minimum,
        self_balancing=False,
        shuffle=False,
        seed=seed,
    )
    return partitioners.flwr_rows(partitioner, labels, num_clients)


def _resolved(spec: DataSpec) -> DataSpec:
    """``spec`` with ``root`` resolved (config > environment > default), as a cache key."""
    root = resolve_root(spec.name, spec.root)
    return spec if root == spec.root else replace(spec, root=root)


def _raw(spec: DataSpec) -> RawImages:
    return load_raw(spec.name, spec.root, seed=spec.seed, synthetic_samples=spec.synthetic_samples,
                    natural_id=spec.natural_id)


def deal(spec: DataSpec, raw: RawImages) -> tuple[list[np.ndarray], Repair | None]:
    """Every client's indices by ``spec.partitioner``, before the cap; the :class:`Repair` a
    Dirichlet draw needed. ``ValueError`` (one line) where a client is left below
    ``min_partition_size`` or the data cannot be dealt so."""
    labels, k, name = raw.labels, spec.num_clients, spec.partitioner
    seed = int_seed(spec.seed, DATA_PARTITION)
    if name == "dirichlet":
        return dirichlet_partition(
            labels, num_clients=k, alpha=spec.alpha, min_partition_size=spec.min_partition_size,
            seed=seed, repair_rng=lambda: numpy_rng(spec.seed, PARTITION_REPAIR))
    rng = numpy_rng(spec.seed, DATA_PARTITION)
    try:
        if name == "iid":
            parts = partitioners.iid(labels, k, rng)
        elif name == "pathological":
            parts = partitioners.pathological(labels, k, spec.classes_per_client, seed)
        elif name == "shard":
            parts = partitioners.shard(labels, k, spec.shards_per_client, spec.shard_size, seed)
        elif name == "size":
            parts = partitioners.sized(labels, spec.sizes or (), rng)
        elif name in partitioners.SIZE_FUNCTIONS:
            parts = partitioners.size_function(name, labels, k, rng)
        elif name == "dirichlet_sizes":
            sizes = partitioners.dirichlet_sizes(labels.size, k, spec.size_alpha,
                                                 spec.min_partition_size, rng)
            parts = partitioners.sized(labels, sizes, rng)
        elif name == "natural_id":
            if raw.clients is None:
                raise ValueError(f"dataset.natural_id={spec.natural_id!r}: {spec.root} has no "
                                 "such array naming each sample's client")
            parts = partitioners.natural(raw.clients, k, spec.natural_id)
        else:
            raise ValueError(f"dataset.partitioner: unknown {name!r}; known: "
                             f"{', '.join(partitioners.PARTITIONERS)}")
    except ValueError as err:
        if str(err).startswith("dataset."):
            raise
        if name in partitioners.SIZE_FUNCTIONS:
            raise ValueError(f"partitioner {name!r} gives its smallest client (0) less than one "
                             f"of {labels.size} samples over {k} clients (client k's share "
                             "grows with k); use fewer clients or another partitioner") from err
        raise ValueError(f"partitioner {name!r} cannot deal {labels.size} samples to {k} "
                         f"clients: {err}") from err
    short = partitioners.short_clients(parts, labels, spec.min_partition_size, name)
    if short is not None:
        raise ValueError(short)
    return parts, None


@functools.lru_cache(maxsize=8)
def _cached_partition(spec: DataSpec) -> tuple[tuple[np.ndarray, ...], Repair | None]:
    raw = _raw(spec)
    labels = raw.labels
    # dealt once on this machine (each process of a run deals the same; deal_cache)
    parts, repair = deal_cache.cached_deal(spec, labels, raw.clients, spec.num_clients,
                                           lambda: deal(spec, raw), Repair)
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
    """Each client's sorted sample indices into the pooled dataset (``load_raw``).

    Deterministic in ``spec``; the arrays are read-only and cached per process.
    """
    validate_spec(spec)
    return list(_cached_partition(_resolved(spec))[0])


def partition_repair(spec: DataSpec) -> Repair | None:
    """What had to be moved for every client of ``spec`` to hold its minimum (None: the
    Dirichlet draw needed nothing)."""
    validate_spec(spec)
    return _cached_partition(_resolved(spec))[1]


def client_shifts(spec: DataSpec) -> tuple[ClientShift, ...]:
    """Every client's input transformation (identity where ``feature_skew`` is off), drawn
    from the ``feature_skew`` stream."""
    return draw_shifts(spec.feature_skew, spec.num_clients, numpy_rng(spec.seed, FEATURE_SKEW))


def partition_record(spec: DataSpec) -> dict[str, object]:
    """How a simulated run's data was dealt, as ``summary.json`` keeps it: ``partition`` (the
    partitioner, each client's samples and, where a feature skew is on, each client's
    transformation) and ``partition_repair`` where a Dirichlet draw was repaired."""
    parts = partition(spec)
    dealt: dict[str, object] = {"partitioner": spec.partitioner,
                                "client_samples": [int(p.size) for p in parts],
                                "client_splits_sha256": client_split_hashes(spec)}
    if spec.feature_skew.active:
        dealt["feature_skew"] = {str(k): shift.record()
                                 for k, shift in enumerate(client_shifts(spec))}
    record: dict[str, object] = {"partition": dealt}
    repair = partition_repair(spec)
    if repair is not None:
        record["partition_repair"] = repair.record()
    return record


def client_split_hashes(spec: DataSpec) -> list[str]:
    """Each client's train / validation / test rows of the pooled dataset, hashed (SHA-256 of
    the three int64 index arrays, each led by its size; 16 hex digits): two runs dealt the same
    data to every client exactly where their lists are equal (the report checks it across a
    bench's methods)."""
    raw = _raw(_resolved(spec))
    out = []
    for client, indices in enumerate(partition(spec)):
        digest = hashlib.sha256()
        for split in stratified_split(raw.labels[indices], spec.fractions,
                                      numpy_rng(spec.seed, CLIENT_SPLIT, client)):
            rows = np.ascontiguousarray(indices[split], dtype=np.int64)
            digest.update(np.int64(rows.size).tobytes())
            digest.update(rows.tobytes())
        out.append(digest.hexdigest()[:16])
    return out


def client_split_labels(spec: DataSpec) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Each client's train / validation / test labels, split as its client splits them
    (:func:`load_client_data`), without reading it a single image more."""
    labels = _raw(_resolved(spec)).labels
    out = []
    for client, indices in enumerate(partition(spec)):
        train, val, test = stratified_split(labels[indices], spec.fractions,
                                            numpy_rng(spec.seed, CLIENT_SPLIT, client))
        out.append((labels[indices[train]], labels[indices[val]], labels[indices[test]]))
    return out


def _train_rows(spec: DataSpec, raw: RawImages) -> np.ndarray:
    """The pooled rows of every client's training split."""
    rows = []
    for client, indices in enumerate(partition(spec)):
        train, _, _ = stratified_split(raw.labels[indices], spec.fractions,
                                       numpy_rng(spec.seed, CLIENT_SPLIT, client))
        rows.append(indices[train])
    return np.concatenate(rows)


@functools.lru_cache(maxsize=4)
def _own_normalisation(spec: DataSpec) -> Normalisation:
    raw = _raw(spec)
    scale = float(raw.scale or 1.0)
    x = raw.images[_train_rows(spec, raw)].astype(np.float64) / scale
    mean = x.mean(axis=(0, 2, 3))
    std = np.maximum(x.std(axis=(0, 2, 3)), 1e-6)  # a constant channel stays finite
    return Normalisation(scale=scale, mean=tuple(float(m) for m in mean),
                         std=tuple(float(s) for s in std))


def data_normalisation(spec: DataSpec) -> Normalisation:
    """The normalisation of ``spec``'s inputs: a built-in dataset's fixed one; for ``own``,
    per-channel mean and std over every client's training split (no validation or test
    sample, no transformation), computed once per process."""
    if spec.name != OWN:
        return normalisation(spec.name)
    validate_spec(spec)
    return _own_normalisation(_resolved(spec))


def load_client_data(spec: DataSpec, client_id: int) -> ClientData:
    """Client ``client_id``'s normalised train / val / test splits.

    The pooled data and the partition are cached per process, so many clients
    simulated in one worker load the dataset once. The split is drawn from
    ``SeedSequence([seed, CLIENT_SPLIT, client_id])``; a client's feature-skew
    transformation (:func:`client_shifts`) is applied to all three splits before they are
    normalised, its noise drawn from ``SeedSequence([seed, FEATURE_NOISE, client_id])``.
    """
    if not 0 <= client_id < spec.num_clients:
        raise ValueError(f"client_id must be in [0, {spec.num_clients}), got {client_id}")
    indices = partition(spec)[client_id]
    resolved = _resolved(spec)
    raw = _raw(resolved)
    train, val, test = stratified_split(
        raw.labels[indices], spec.fractions, numpy_rng(spec.seed, CLIENT_SPLIT, client_id)
    )
    norm = data_normalisation(spec)
    if not spec.feature_skew.active:
        return ClientData(train=select(raw, indices[train], norm),
                          val=select(raw, indices[val], norm),
                          test=select(raw, indices[test], norm))
    shift = client_shifts(spec)[client_id]
    noise = numpy_rng(spec.seed, FEATURE_NOISE, client_id)
    scale = np.float32(norm.scale)

    def shifted(rows: np.ndarray) -> ArrayDataset:
        images = apply_shift(raw.images[rows].astype(np.float32) / scale, shift, noise)
        return ArrayDataset(x=normalise(images, replace(norm, scale=1.0)),
                            y=raw.labels[rows].astype(np.int64))

    return ClientData(train=shifted(indices[train]), val=shifted(indices[val]),
                      test=shifted(indices[test]))


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
