"""Construction of PerFedRLNAS (``strategies/perfedrlnas.py``; clients train subnets,
``clients/subnet.py``)."""

from __future__ import annotations

from flwr.app import Context
from flwr.client import NumPyClient

from pfednas.clients import SubnetClient
from pfednas.clients.common import ClientEnv
from pfednas.config import RunSettings, task_shape
from pfednas.methods.fixed import seeded_supernet
from pfednas.options.perfedrlnas import PerFedRLNASOptions
from pfednas.strategies import Budget, PerFedRLNASStrategy, PersonalizedStrategy
from pfednas.strategies.budget import Roster
from pfednas.wire.messages import Sgd


def strategy(settings: RunSettings, budget: Budget, sgd: Sgd,
             roster: Roster) -> PersonalizedStrategy:
    return PerFedRLNASStrategy(budget=budget, sgd=sgd,
                               supernet=seeded_supernet(settings), options=settings.options,
                               roster=roster)


def client(settings: RunSettings, env: ClientEnv, context: Context) -> NumPyClient:
    options: PerFedRLNASOptions = settings.options
    return SubnetClient(env, settings.search_space.build(), task_shape(settings),
                        bn_recalibrate=options.bn_recalibrate,
                        personal_head=options.personal_head,
                        state=context.state, sandwich_students=options.sandwich_students)
