"""``DataSpec``: everything that determines the clients' data, and its cheap validation."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pfednas.data.registry import DATASET_NAMES, dataset_info
from pfednas.data.synthetic import DEFAULT_SYNTHETIC_SAMPLES

_FRACTION_TOLERANCE = 1e-6


@dataclass(frozen=True)
class DatasetOptions:
    """The ``dataset/`` group, typed: the one source of its defaults and what each option
    does; ``conf/dataset/<name>.yaml`` names the dataset and overrides what differs for it."""

    # digits | fashion_mnist | cifar10 | cifar100 | synthetic
    name: str = ""
    # the dataset's folder (fashion_mnist, cifar10, cifar100); null: its environment variable,
    # then its default place (conf/dataset/<name>.yaml says which)
    root: str | None = None
    alpha: float = 0.5              # Dirichlet concentration (> 0); smaller = more label skew
    min_partition_size: int = 10    # every client gets >= this many samples (Dirichlet redrawn)
    train_fraction: float = 0.6     # per-client split, stratified by label (SPIDER: 60/20/20)
    val_fraction: float = 0.2       # per-client validation share (searches select on it)
    test_fraction: float = 0.2      # per-client test share (the personalized evaluation's)
    # cap on a client's samples, a label-stratified subsample of its partition; null: no cap
    max_samples_per_client: int | None = None
    synthetic_samples: int = DEFAULT_SYNTHETIC_SAMPLES  # dataset=synthetic's size


@dataclass(frozen=True)
class DataSpec:
    """The data side of an experiment; equal specs give identical client data.

    Built from the Hydra ``dataset`` group plus the federation's ``seed`` and
    ``num_clients`` (``DataSpec.from_config``). Hashable, so it keys the
    per-process caches.

    Attributes
    ----------
    name : str
        One of ``digits``, ``fashion_mnist``, ``cifar10``, ``cifar100``, ``synthetic``.
    num_clients : int
        K, the number of Dirichlet partitions.
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
    """

    name: str
    num_clients: int
    alpha: float
    seed: int
    root: str | None = DatasetOptions.root
    min_partition_size: int = DatasetOptions.min_partition_size
    train_fraction: float = DatasetOptions.train_fraction
    val_fraction: float = DatasetOptions.val_fraction
    test_fraction: float = DatasetOptions.test_fraction
    max_samples_per_client: int | None = DatasetOptions.max_samples_per_client
    synthetic_samples: int = DatasetOptions.synthetic_samples

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
        cap = values.get("max_samples_per_client")
        return cls(
            name=str(values["name"]),
            num_clients=int(num_clients),
            alpha=float(values["alpha"]),
            seed=int(seed),
            root=None if values.get("root") in (None, "") else str(values["root"]),
            min_partition_size=int(values.get("min_partition_size", 10)),
            train_fraction=float(values.get("train_fraction", 0.6)),
            val_fraction=float(values.get("val_fraction", 0.2)),
            test_fraction=float(values.get("test_fraction", 0.2)),
            max_samples_per_client=None if cap is None else int(cap),
            synthetic_samples=int(values.get("synthetic_samples", DEFAULT_SYNTHETIC_SAMPLES)),
        )


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
    info = dataset_info(spec.name, synthetic_samples=spec.synthetic_samples)
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
