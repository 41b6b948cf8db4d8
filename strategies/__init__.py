"""Server strategies: one :class:`PersonalizedStrategy` subclass per method (the hooks of
``flwr.serverapp.strategy.Strategy``, run by their own round loop).

Installed as ``pfednas.strategies``.
"""

# ruff: noqa: E402 (the tree is checked before any module of it loads)

from pfednas import check_same_tree

check_same_tree(__name__, __file__)

from pfednas.strategies.base import Budget, PersonalizedStrategy
from pfednas.strategies.fedavg import FedAvgFTStrategy
from pfednas.strategies.fedbabu import FedBABUOptions, FedBABUStrategy
from pfednas.strategies.fednas import FedNASOptions, FedNASStrategy
from pfednas.strategies.fedrep import FedRepOptions, FedRepStrategy
from pfednas.strategies.fixed_arch import FixedArchStrategy
from pfednas.strategies.local import LocalStrategy
from pfednas.strategies.perfedrlnas import PerFedRLNASOptions, PerFedRLNASStrategy
from pfednas.strategies.spider import SpiderStrategy

__all__ = ["Budget", "FedAvgFTStrategy", "FedBABUOptions", "FedBABUStrategy", "FedNASOptions",
           "FedNASStrategy", "FedRepOptions", "FedRepStrategy", "FixedArchStrategy",
           "LocalStrategy", "PerFedRLNASOptions", "PerFedRLNASStrategy", "PersonalizedStrategy",
           "SpiderStrategy"]
