"""How the pooled samples are dealt to the clients: one function per partitioner, by name.

Each takes the pooled labels (and, for ``natural_id``, each sample's client id) and returns
every client's sorted indices. Where ``flwr_datasets`` ships the partitioner it is used:

========================  ======================================================  ==========
name                      what each client gets                                    flwr
========================  ======================================================  ==========
``iid``                   an equal, uniformly drawn share                          Iid
``dirichlet``             label shares ~ Dirichlet(α) (label skew; today's)        Dirichlet
``pathological``          ``classes_per_client`` classes only                      Pathological
``shard``                 ``shards_per_client`` label-sorted shards                Shard
``size``                  ``sizes[k]`` samples, labels IID                         Size
``linear`` / ``square``   a share ∝ k+1 / (k+1)² / e^(k+1), labels IID              Linear,
``exponential``                                                                    Square, Exp.
``dirichlet_sizes``       the minimum + a Dirichlet(``size_alpha``) share of the   Size
                          rest (quantity skew), labels IID
``natural_id``            the samples its own id names (the data's ``client``)     (np.unique)
========================  ======================================================  ==========

A partitioner that deals samples in row order (iid and the size-based ones) gets the rows in
an order drawn from the partition seed, as ``FederatedDataset`` shuffles; ``dirichlet`` reads
them in order, as it always has, so its partitions are unchanged.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

PARTITIONERS: tuple[str, ...] = (
    "iid", "dirichlet", "pathological", "shard", "size", "linear", "square", "exponential",
    "dirichlet_sizes", "natural_id",
)
SIZE_FUNCTIONS = ("linear", "square", "exponential")  # flwr's IdToSizeFnc partitioners
# The dataset options each partitioner reads (the others it ignores).
PARAMETERS: dict[str, tuple[str, ...]] = {
    "iid": (), "dirichlet": ("alpha",), "pathological": ("classes_per_client",),
    "shard": ("shards_per_client", "shard_size"), "size": ("sizes",), "linear": (),
    "square": (), "exponential": (), "dirichlet_sizes": ("size_alpha",),
    "natural_id": ("natural_id",),
}


def partition_words(partitioner: str, values: Mapping[str, Any]) -> str:
    """A partition in words, from the dataset options ``values`` (a :class:`DataSpec`'s or a
    saved config's): the partitioner and each parameter it reads that is set,
    ``dirichlet alpha=0.3``, ``shard shards_per_client=2, shard_size=30``,
    ``natural_id by 'writer'``."""
    if partitioner == "natural_id":
        shown = [f"by {values.get('natural_id')!r}"]
    else:
        shown = [f"{k}={values[k]}" for k in PARAMETERS.get(partitioner, ())
                 if values.get(k) is not None]
    return " ".join([partitioner, ", ".join(shown)]).strip()


def apportion(total: int, weights: Sequence[float] | np.ndarray) -> np.ndarray:
    """Split ``total`` into integers proportional to ``weights`` (largest remainder)."""
    w = np.asarray(weights, dtype=np.float64)
    exact = total * w / w.sum()
    counts = np.floor(exact).astype(np.int64)
    short = total - int(counts.sum())
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:short]] += 1
    return counts


def flwr_rows(partitioner: Any, labels: np.ndarray, num_clients: int,
              order: np.ndarray | None = None) -> list[np.ndarray]:
    """Run a ``flwr_datasets`` partitioner over the pooled labels (read in ``order``, default
    row order) and return each client's sorted row indices. Its ``ValueError`` passes on."""
    from datasets import Dataset

    rows = np.arange(labels.size) if order is None else np.asarray(order, dtype=np.int64)
    columns = {"label": labels[rows].astype(np.int64), "row": rows}
    partitioner.dataset = Dataset.from_dict(columns).with_format("arrow")  # column reads
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Dirichlet's per-retry warnings
        warnings.simplefilter("ignore", FutureWarning)  # pyarrow's, from Shard's label sort
        parts = [partitioner.load_partition(i)["row"] for i in range(num_clients)]
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def iid(labels: np.ndarray, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    from flwr_datasets.partitioner import IidPartitioner

    return flwr_rows(IidPartitioner(num_clients), labels, num_clients,
                     rng.permutation(labels.size))


def pathological(labels: np.ndarray, num_clients: int, classes_per_client: int,
                 seed: int) -> list[np.ndarray]:
    """Each client holds ``classes_per_client`` classes, its first ``k mod C`` (so every class
    is used), the rest drawn; a class's samples are split evenly among its clients."""
    from flwr_datasets.partitioner import PathologicalPartitioner

    return flwr_rows(PathologicalPartitioner(
        num_partitions=num_clients, partition_by="label",
        num_classes_per_partition=classes_per_client,
        class_assignment_mode="first-deterministic", shuffle=True, seed=seed),
        labels, num_clients)


def shard(labels: np.ndarray, num_clients: int, shards_per_client: int,
          shard_size: int | None, seed: int) -> list[np.ndarray]:
    """FedAvg's pathological non-IID split: the samples sorted by label are cut into shards
    of ``shard_size`` (default: as many as fit), and each client gets ``shards_per_client``."""
    from flwr_datasets.partitioner import ShardPartitioner

    return flwr_rows(ShardPartitioner(
        num_partitions=num_clients, partition_by="label",
        num_shards_per_partition=shards_per_client, shard_size=shard_size, shuffle=True,
        seed=seed), labels, num_clients)


def sized(labels: np.ndarray, sizes: tuple[int, ...] | list[int] | np.ndarray,
          rng: np.random.Generator) -> list[np.ndarray]:
    """Client ``k`` gets ``sizes[k]`` samples, labels IID (a row order drawn from ``rng``)."""
    from flwr_datasets.partitioner import SizePartitioner

    sizes = [int(s) for s in sizes]
    return flwr_rows(SizePartitioner(sizes), labels, len(sizes), rng.permutation(labels.size))


def size_function(name: str, labels: np.ndarray, num_clients: int,
                  rng: np.random.Generator) -> list[np.ndarray]:
    """flwr's ``linear``, ``square`` or ``exponential`` quantity skew, labels IID."""
    from flwr_datasets.partitioner import (
        ExponentialPartitioner,
        LinearPartitioner,
        SquarePartitioner,
    )

    kind = {"linear": LinearPartitioner, "square": SquarePartitioner,
            "exponential": ExponentialPartitioner}[name]
    with np.errstate(over="ignore", invalid="ignore"):
        return flwr_rows(kind(num_clients), labels, num_clients, rng.permutation(labels.size))


def dirichlet_sizes(num_samples: int, num_clients: int, size_alpha: float, minimum: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Client sizes: ``minimum`` each, and the rest dealt by shares ~ Dirichlet(``size_alpha``)
    (largest remainder), so every client meets the minimum with no redraw."""
    rest = num_samples - num_clients * minimum
    if rest < 0:
        raise ValueError(f"{num_samples} samples cannot give {num_clients} clients >= "
                         f"{minimum} each")
    shares = rng.dirichlet(np.full(num_clients, float(size_alpha)))
    return minimum + apportion(rest, shares)


def natural(clients: np.ndarray, num_clients: int, key: str) -> list[np.ndarray]:
    """Client ``k`` gets the samples of the ``k``-th smallest id in ``clients``; the ids must
    number exactly ``num_clients``."""
    ids = np.unique(clients)
    if ids.size != num_clients:
        raise ValueError(f"the data's {key!r} array names {ids.size} clients but "
                         f"federation.num_clients={num_clients}; set it to {ids.size}")
    inverse = np.searchsorted(ids, clients)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=ids.size))[:-1]
    return [np.sort(p).astype(np.int64) for p in np.split(order, bounds)]


def short_clients(parts: list[np.ndarray], labels: np.ndarray, minimum: int,
                  partitioner: str) -> str | None:
    """One line naming the first client below ``minimum`` samples and its label counts
    (None: every client holds enough)."""
    short = [k for k, p in enumerate(parts) if p.size < minimum]
    if not short:
        return None
    first = short[0]
    classes, counts = np.unique(labels[parts[first]], return_counts=True)
    held = ", ".join(f"{int(c)}: {int(n)}" for c, n in zip(classes, counts, strict=True))
    more = f" (and {len(short) - 1} more clients)" if len(short) > 1 else ""
    return (f"partitioner {partitioner!r} leaves client {first} with {parts[first].size} "
            f"samples (per label {{{held}}}){more}; its splits need >= {minimum} "
            "(dataset.min_partition_size): use fewer clients or another partitioner")
