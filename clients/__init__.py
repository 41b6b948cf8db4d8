"""Client roles: one ``NumPyClient`` subclass per role (installed as ``pfednas.clients``)."""

# ruff: noqa: E402 (the tree is checked before any module of it loads)

from pfednas import check_same_tree

check_same_tree(__name__, __file__)

from pfednas.clients.fedavg import FedAvgClient, FedProxClient
from pfednas.clients.fedbabu import FedBABUClient
from pfednas.clients.fedbn import FedBNClient
from pfednas.clients.fednas import FedNASClient
from pfednas.clients.fedrep import FedRepClient
from pfednas.clients.local import LocalClient
from pfednas.clients.spider import SpiderClient
from pfednas.clients.subnet import SubnetClient

__all__ = ["FedAvgClient", "FedBABUClient", "FedBNClient", "FedNASClient", "FedProxClient",
           "FedRepClient", "LocalClient", "SpiderClient", "SubnetClient"]
