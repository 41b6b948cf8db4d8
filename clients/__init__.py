"""Client roles: one ``NumPyClient`` subclass per role (installed as ``pfednas.clients``)."""

from pfednas.clients.fedavg import FedAvgClient
from pfednas.clients.local import LocalClient
from pfednas.clients.subnet import SubnetClient

__all__ = ["FedAvgClient", "LocalClient", "SubnetClient"]
