"""Datasets, client partitions, feature skew and per-client splits (no Flower app imports).

Typical use, in a client::

    spec = DataSpec.from_config(dataset_cfg, num_clients=k, seed=seed)
    validate_spec(spec)                      # cheap: before any Flower/Ray process
    data = load_client_data(spec, client_id)  # cached pooled arrays + partition
"""

from pfednas.data.arrays import ArrayDataset, ClientData, DataError, DatasetInfo
from pfednas.data.partition import (
    Repair,
    client_shifts,
    client_split_labels,
    data_normalisation,
    dirichlet_partition,
    load_client_data,
    partition,
    partition_record,
    partition_repair,
    split_counts,
    stratified_split,
    tuning_splits,
)
from pfednas.data.partitioners import PARTITIONERS
from pfednas.data.registry import DATASET_NAMES, OWN, dataset_info, load_arrays
from pfednas.data.shift import ClientShift, FeatureSkew
from pfednas.data.spec import DatasetOptions, DataSpec, spec_info, spec_problems, validate_spec

__all__ = [
    "DATASET_NAMES",
    "OWN",
    "PARTITIONERS",
    "ClientShift",
    "FeatureSkew",
    "client_shifts",
    "client_split_labels",
    "data_normalisation",
    "partition_record",
    "spec_info",
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
