"""Server strategies: one ``flwr.serverapp.strategy.Strategy`` subclass per method.

Installed as ``pfednas.strategies``.
"""

from pfednas.strategies.base import Budget, PersonalizedStrategy, RoundRecord
from pfednas.strategies.fedavg import FedAvgFTStrategy
from pfednas.strategies.local import LocalStrategy
from pfednas.strategies.perfedrlnas import PerFedRLNASOptions, PerFedRLNASStrategy

__all__ = ["Budget", "FedAvgFTStrategy", "LocalStrategy", "PerFedRLNASOptions",
           "PerFedRLNASStrategy", "PersonalizedStrategy", "RoundRecord"]
