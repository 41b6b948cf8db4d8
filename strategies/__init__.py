"""Server strategies: one ``flwr.serverapp.strategy.Strategy`` subclass per method.

Installed as ``pfednas.strategies``.
"""

from pfednas.strategies.base import Budget, PersonalizedStrategy, RoundRecord
from pfednas.strategies.fedavg import FedAvgFTStrategy
from pfednas.strategies.fedbabu import FedBABUOptions, FedBABUStrategy
from pfednas.strategies.fednas import FedNASOptions, FedNASStrategy
from pfednas.strategies.fedrep import FedRepOptions, FedRepStrategy
from pfednas.strategies.local import LocalStrategy
from pfednas.strategies.perfedrlnas import PerFedRLNASOptions, PerFedRLNASStrategy
from pfednas.strategies.spider import SpiderStrategy

__all__ = ["Budget", "FedAvgFTStrategy", "FedBABUOptions", "FedBABUStrategy", "FedNASOptions",
           "FedNASStrategy", "FedRepOptions", "FedRepStrategy", "LocalStrategy",
           "PerFedRLNASOptions", "PerFedRLNASStrategy", "PersonalizedStrategy", "RoundRecord",
           "SpiderStrategy"]
