"""Datasets, Dirichlet client partitions and per-client splits (no Flower app imports).

Typical use, in a client::

    spec = DataSpec.from_config(dataset_cfg, num_clients=k, seed=seed)
    validate_spec(spec)                      # cheap: before any Flower/Ray process
    data = load_client_data(spec, client_id)  # cached pooled arrays + partition
"""

from pfednas.data.arrays import ArrayDataset, ClientData, DataError, DatasetInfo
from pfednas.data.partition import (
    Repair,
    dirichlet_partition,
    load_client_data,
    partition,
    partition_repair,
    split_counts,
    stratified_split,
    tuning_splits,
)
from pfednas.data.registry import DATASET_NAMES, dataset_info, load_arrays
from pfednas.data.spec import DatasetOptions, DataSpec, spec_problems, validate_spec

__all__ = [
    "DATASET_NAMES",
    "ArrayDataset",
    "ClientData",
    "DataError",
    "DataSpec",
    "DatasetOptions",
    "DatasetInfo",
    "dataset_info",
    "Repair",
    "dirichlet_partition",
    "partition_repair",
    "load_arrays",
    "load_client_data",
    "partition",
    "spec_problems",
    "split_counts",
    "stratified_split",
    "tuning_splits",
    "validate_spec",
]
