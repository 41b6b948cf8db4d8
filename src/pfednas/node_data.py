"""Which data a node trains on, from its node config.

Simulation and demo deployments: ``partition-id`` (and ``num-partitions``) pick a
Dirichlet partition of the configured dataset, identical for every method.
"""

from __future__ import annotations

from flwr.app import Context

from pfednas.config import RunSettings
from pfednas.data import ClientData, load_client_data


def client_id_of(context: Context) -> int:
    if "partition-id" not in context.node_config:
        raise ValueError("node config has no 'partition-id': start the SuperNode with "
                         "--node-config 'partition-id=<i> num-partitions=<K>'")
    return int(context.node_config["partition-id"])


def node_client_data(context: Context, settings: RunSettings) -> ClientData:
    """The node's train/val/test splits."""
    return load_client_data(settings.data, client_id_of(context))
