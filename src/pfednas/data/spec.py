"""``DataSpec``: everything that determines the clients' data, and its cheap validation."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pfednas.data.arrays import DatasetInfo
from pfednas.data.partitioners import PARTITIONERS
from pfednas.data.registry import DATASET_NAMES, OWN, dataset_info, own_files
from pfednas.data.shift import FeatureSkew
from pfednas.data.synthetic import DEFAULT_SYNTHETIC_SAMPLES

_FRACTION_TOLERANCE = 1e-6
# the fewest classes a dataset, and a client's partition, may hold: with one, every
# prediction of that class is right and the personalized accuracy is 1.0 by construction
MIN_CLASSES = 2


@dataclass(frozen=True)
class DatasetOptions:
    """The ``dataset/`` group, typed: the one source of its defaults and what each option
    does; ``conf/dataset/<name>.yaml`` names the dataset and overrides what differs for it."""

    # digits | fashion_mnist | cifar10 | cifar100 | synthetic | own (your files: root)
    name: str = ""
    # the dataset's folder (fashion_mnist, cifar10, cifar100); null: its environment variable,
    # then its default place (conf/dataset/<name>.yaml says which); own: a .npz file or an
    # image folder with one sub-folder per class
    root: str | None = None
    # how samples are dealt to clients: iid | dirichlet | pathological | shard | size | linear |
    # square | exponential | dirichlet_sizes | natural_id (README "Data")
    partitioner: str = "dirichlet"
    alpha: float = 0.5              # dirichlet: label concentration (> 0); smaller = more skew
    classes_per_client: int = 2     # pathological: the classes each client holds
    shards_per_client: int = 2      # shard: label-sorted shards per client
    shard_size: int | None = None   # shard: samples per shard; null: as many as fit
    sizes: list[int] | None = None  # size: each client's samples (num_clients of them)
    size_alpha: float = 1.0         # dirichlet_sizes: concentration over client sizes (> 0)
    natural_id: str = "client"      # natural_id: the .npz array naming each sample's client
    min_partition_size: int = 10    # every client gets >= this many samples (Dirichlet redrawn)
    train_fraction: float = 0.6     # per-client split, stratified by label (SPIDER: 60/20/20)
    val_fraction: float = 0.2       # per-client validation share (searches select on it)
    test_fraction: float = 0.2      # per-client test share (the personalized evaluation's)
    # cap on a client's samples, a label-stratified subsample of its partition; null: no cap
    max_samples_per_client: int | None = None
    synthetic_samples: int = DEFAULT_SYNTHETIC_SAMPLES  # dataset=synthetic's size
    # per-client input transformations (covariate shift), drawn from the seed; all off
    feature_skew: FeatureSkew = field(default_factory=FeatureSkew)


@dataclass(frozen=True)
class DataSpec:
    """The data side of an experiment; equal specs give identical client data.

    Built from the Hydra ``dataset`` group plus the federation's ``seed`` and
    ``num_clients`` (``DataSpec.from_config``). Hashable, so it keys the
    per-process caches.

    Attributes
    ----------
    name : str
        One of ``digits``, ``fashion_mnist``, ``cifar10``, ``cifar100``, ``synthetic``,
        ``own``.
    num_clients : int
        K, the number of partitions.
    partitioner : str
        How samples are dealt (:mod:`pfednas.data.partitioners`); its parameters are
        ``alpha``, ``classes_per_client``, ``shards_per_client``, ``shard_size``, ``sizes``,
        ``size_alpha`` and ``natural_id`` (see :class:`DatasetOptions`).
    alpha : float
        Dirichlet concentration (> 0); small values give strong label skew.
    seed : int
        Root seed of the partition, the per-client cap and the splits.
    root : str | None
        Data directory (``fashion_mnist``, ``cifar10``, ``cifar100``); see
        ``registry`` for the environment-variable and default fallbacks.
    min_partition_size : int
        Every client gets at least this many samples (Dirichlet is redrawn).
    train_fraction, val_fraction, test_fraction : float
        Per-client split, stratified by label; they must sum to 1.
    max_samples_per_client : int | None
        Cap on a client's samples, a label-stratified subsample of its partition.
    synthetic_samples : int
        Size of the ``synthetic`` dataset (ignored otherwise).
    feature_skew : FeatureSkew
        Per-client input transformations (:mod:`pfednas.data.shift`).
    """

    name: str
    num_clients: int
    alpha: float
    seed: int
    root: str | None = DatasetOptions.root
    partitioner: str = DatasetOptions.partitioner
    classes_per_client: int = DatasetOptions.classes_per_client
    shards_per_client: int = DatasetOptions.shards_per_client
    shard_size: int | None = DatasetOptions.shard_size
    sizes: tuple[int, ...] | None = None
    size_alpha: float = DatasetOptions.size_alpha
    natural_id: str = DatasetOptions.natural_id
    min_partition_size: int = DatasetOptions.min_partition_size
    train_fraction: float = DatasetOptions.train_fraction
    val_fraction: float = DatasetOptions.val_fraction
    test_fraction: float = DatasetOptions.test_fraction
    max_samples_per_client: int | None = DatasetOptions.max_samples_per_client
    synthetic_samples: int = DatasetOptions.synthetic_samples
    feature_skew: FeatureSkew = field(default_factory=FeatureSkew)

    def __post_init__(self) -> None:
        """Config values as the hashable types a cache key needs: ``sizes`` a tuple,
        ``feature_skew`` a :class:`FeatureSkew` (from a mapping)."""
        if isinstance(self.sizes, list):
            object.__setattr__(self, "sizes", tuple(self.sizes))
        if isinstance(self.feature_skew, Mapping):
            known = {f.name for f in dataclasses.fields(FeatureSkew)}
            unknown = sorted(set(self.feature_skew) - known)
            if unknown:
                raise ValueError(f"unknown key(s) in dataset.feature_skew: {', '.join(unknown)}"
                                 f"; allowed: {', '.join(sorted(known))}")
            object.__setattr__(self, "feature_skew", FeatureSkew(**self.feature_skew))

    @property
    def fractions(self) -> tuple[float, float, float]:
        return (self.train_fraction, self.val_fraction, self.test_fraction)

    @classmethod
    def from_config(cls, dataset: Mapping[str, Any], *, num_clients: int, seed: int) -> DataSpec:
        """From a plain mapping of the ``dataset`` config group (keys = field names).

        Unknown keys are an error, so a typo in a YAML file does not pass silently.
        """
        fields = {f.name for f in dataclasses.fields(cls)} - {"num_clients", "seed"}
        unknown = sorted(set(dataset) - fields)
        if unknown:
            raise ValueError(f"unknown dataset config keys {unknown}; allowed: {sorted(fields)}")
        values = dict(dataset)
        if values.get("root") == "":
            values["root"] = None
        return cls(**values, num_clients=int(num_clients), seed=int(seed))


def spec_problems(spec: DataSpec) -> list[str]:
    """Every problem with ``spec`` found without loading data (empty: valid)."""
    if spec.name not in DATASET_NAMES:
        return [f"unknown dataset {spec.name!r}; known: {', '.join(DATASET_NAMES)}"]
    problems: list[str] = []
    if spec.num_clients < 1:
        problems.append(f"num_clients must be >= 1, got {spec.num_clients}")
    if not (math.isfinite(spec.alpha) and spec.alpha > 0):
        problems.append(f"dataset.alpha must be a finite number > 0, got {spec.alpha}")
    problems += _fraction_problems(spec)
    if spec.min_partition_size < 1:
        problems.append(f"dataset.min_partition_size must be >= 1, got {spec.min_partition_size}")
    cap = spec.max_samples_per_client
    if cap is not None and cap < spec.min_partition_size:
        problems.append(
            f"dataset.max_samples_per_client ({cap}) must be >= "
            f"dataset.min_partition_size ({spec.min_partition_size})"
        )
    if spec.name == OWN and not spec.root:
        return problems + [f"dataset={OWN} needs dataset.root: a .npz file (x, y, optionally "
                           f"{spec.natural_id}) or an image folder with one sub-folder per class"]
    info = spec_info(spec)
    problems += _class_problems(spec)
    problems += _partitioner_problems(spec, info.num_classes, info.num_samples)
    problems += spec.feature_skew.problems()
    if spec.name == "synthetic" and spec.synthetic_samples < info.num_classes:
        problems.append(
            f"dataset.synthetic_samples must be >= {info.num_classes}, got {spec.synthetic_samples}"
        )
    needed = spec.num_clients * spec.min_partition_size
    if spec.num_clients >= 1 and info.num_samples < needed:
        problems.append(
            f"dataset {spec.name!r} is too small for {spec.num_clients} clients: it has "
            f"{info.num_samples} samples but {spec.num_clients} clients x "
            f"min_partition_size {spec.min_partition_size} need {needed}; lower "
            "federation.num_clients or dataset.min_partition_size"
        )
    return problems


def spec_info(spec: DataSpec) -> DatasetInfo:
    """The facts of ``spec``'s dataset: static for a built-in one, read from the files (once
    per process) for ``own``."""
    return dataset_info(spec.name, synthetic_samples=spec.synthetic_samples, root=spec.root,
                        natural_id=spec.natural_id)


def sizing_names(spec: DataSpec) -> tuple[str, ...]:
    """The ``search_space.per_dataset`` keys that size a space for ``spec``'s data, first
    found wins: a built-in dataset's own name; for ``own``, ``own`` and then the built-in set
    nearest its shape (the same channels, the closest side), so a 28 px grey dataset is sized
    as Fashion-MNIST is."""
    if spec.name != OWN:
        return (spec.name,)
    info = spec_info(spec)
    builtins = [dataset_info(n) for n in DATASET_NAMES if n not in (OWN, "synthetic")]
    same = [b for b in builtins if b.in_channels == info.in_channels] or builtins
    nearest = min(same, key=lambda b: abs(b.image_size - info.image_size))
    return (OWN, nearest.name)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _partitioner_problems(spec: DataSpec, num_classes: int, num_samples: int) -> list[str]:
    """The partitioner's name and the parameters it reads, typed and in range."""
    name, k = spec.partitioner, spec.num_clients
    if name not in PARTITIONERS:
        return [f"dataset.partitioner: unknown {name!r}; known: {', '.join(PARTITIONERS)}"]
    problems: list[str] = []
    if name == "pathological" and not (_integer(spec.classes_per_client)
                                       and MIN_CLASSES <= spec.classes_per_client <= num_classes):
        problems.append(f"dataset.classes_per_client must be an integer in [{MIN_CLASSES}, "
                        f"{num_classes}] (the dataset's classes; a client of one class scores "
                        f"1.0 by construction), got {spec.classes_per_client!r}")
    if name == "shard":
        problems += _shard_problems(spec, num_samples)
    if name == "size":
        sizes = spec.sizes
        if sizes is None or len(sizes) != k or not all(_integer(n) and n >= 1 for n in sizes):
            problems.append(f"dataset.sizes must list num_clients={k} integers >= 1 for "
                            f"partitioner 'size', got {None if sizes is None else list(sizes)}")
        elif sum(sizes) > num_samples:
            problems.append(f"dataset.sizes sum to {sum(sizes)} but the dataset has "
                            f"{num_samples} samples")
    if name == "dirichlet_sizes" and not (isinstance(spec.size_alpha, (int, float))
                                          and math.isfinite(spec.size_alpha)
                                          and spec.size_alpha > 0):
        problems.append(f"dataset.size_alpha must be a finite number > 0, got {spec.size_alpha!r}")
    if name == "natural_id" and spec.name != OWN:
        problems.append(f"dataset.partitioner=natural_id needs the clients named in the data: "
                        f"dataset={OWN} with an .npz holding a {spec.natural_id!r} array "
                        f"(dataset {spec.name!r} has none)")
    return problems


def _class_problems(spec: DataSpec) -> list[str]:
    """Your own files hold at least :data:`MIN_CLASSES` classes, and so does each client the
    files name (``natural_id``); a built-in dataset always does."""
    if spec.name != OWN:
        return []
    own = own_files(spec.root, spec.natural_id)
    held = np.unique(own.labels)
    if held.size < MIN_CLASSES:
        names = ", ".join(own.classes[int(c)] for c in held) or "none"
        return [f"dataset.root={spec.root} holds {held.size} class ({names}); a classifier "
                f"needs at least {MIN_CLASSES} (with one, every prediction is right)"]
    if spec.partitioner != "natural_id" or own.clients is None:
        return []
    single = [int(c) for c in np.unique(own.clients)
              if np.unique(own.labels[own.clients == c]).size < MIN_CLASSES]
    if not single:
        return []
    more = f" (and {len(single) - 1} more)" if len(single) > 1 else ""
    return [f"dataset.partitioner=natural_id: client {spec.natural_id}={single[0]}{more} holds "
            f"one class in {spec.root}; each client needs at least {MIN_CLASSES} (with one, "
            "its personalized accuracy is 1.0 by construction)"]


def _shard_problems(spec: DataSpec, num_samples: int) -> list[str]:
    shards, size, k = spec.shards_per_client, spec.shard_size, spec.num_clients
    if not (_integer(shards) and shards >= 1):
        return [f"dataset.shards_per_client must be an integer >= 1, got {shards!r}"]
    if size is not None and not (_integer(size) and size >= 1):
        return [f"dataset.shard_size must be null or an integer >= 1, got {size!r}"]
    needed = k * shards * (size or 1)
    if needed > num_samples:
        return [f"dataset.shards_per_client={shards} x shard_size={size or 1} x {k} clients "
                f"needs {needed} samples; the dataset has {num_samples}"]
    return []


def _fraction_problems(spec: DataSpec) -> list[str]:
    problems: list[str] = []
    train, val, test = spec.fractions
    if not (train > 0 and test > 0 and val >= 0):
        problems.append(
            "dataset.train_fraction and dataset.test_fraction must be > 0 and "
            f"dataset.val_fraction >= 0, got {spec.fractions}"
        )
    elif abs(train + val + test - 1.0) > _FRACTION_TOLERANCE:
        problems.append(
            "dataset.train_fraction + val_fraction + test_fraction must sum to 1, "
            f"got {train} + {val} + {test} = {train + val + test:g}"
        )
    else:
        smallest = min(f for f in spec.fractions if f > 0)
        if spec.min_partition_size * smallest < 1:
            problems.append(
                f"dataset.min_partition_size ({spec.min_partition_size}) is too small for "
                f"a split fraction of {smallest}: a client could get an empty split; "
                f"use at least {math.ceil(1 / smallest - 1e-9)}"
            )
    return problems


def validate_spec(spec: DataSpec) -> None:
    """Raise one ``ValueError`` listing every problem of ``spec``; loads no data.

    Sizes come from ``dataset_info``, so this is instant. It cannot tell whether
    the Dirichlet draw itself succeeds (tiny alpha with many clients); for that
    exact check, call ``partition(spec)`` too (seconds: it loads the labels).
    """
    problems = spec_problems(spec)
    if problems:
        raise ValueError("invalid data configuration: " + "; ".join(problems))
