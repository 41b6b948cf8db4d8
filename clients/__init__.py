"""Client roles: one ``NumPyClient`` subclass per role (installed as ``pfednas.clients``)."""

from pfednas.clients.fedavg import FedAvgClient
from pfednas.clients.local import LocalClient

__all__ = ["FedAvgClient", "LocalClient"]
