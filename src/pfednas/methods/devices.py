"""Construction of the methods for unequal devices without search: HeteroFL and FedRolex
(``strategies/width_slice.py``, ``clients/width_slice.py``) and the two controls of search
(``strategies/in_budget.py``; their clients train subnets as PerFedRLNAS's do)."""

from __future__ import annotations

from flwr.app import Context
from flwr.client import NumPyClient

from pfednas.clients.common import ClientEnv
from pfednas.clients.width_slice import WidthSliceClient
from pfednas.config import RunSettings, task_shape
from pfednas.methods import perfedrlnas
from pfednas.methods.fixed import seeded_supernet
from pfednas.search.width import WidthSlicer
from pfednas.strategies import Budget, PersonalizedStrategy
from pfednas.strategies.budget import Roster
from pfednas.strategies.in_budget import InBudgetStrategy
from pfednas.strategies.width_slice import WidthSliceStrategy
from pfednas.wire.messages import Sgd
from pfednas.wire.roles import state_roles


def width_slicer(settings: RunSettings) -> WidthSlicer:
    return WidthSlicer(settings.search_space.build(), task_shape(settings))


def width_slice_strategy(settings: RunSettings, budget: Budget, sgd: Sgd,
                         roster: Roster) -> PersonalizedStrategy:
    """HeteroFL / FedRolex (the options say which extraction): the seeded global model (the
    space's largest network, the same initial weights every method's supernet has)."""
    supernet = seeded_supernet(settings)
    return WidthSliceStrategy(budget=budget, sgd=sgd,
                              slicer=WidthSlicer(supernet.space, supernet.task),
                              initial_arrays=supernet.state_arrays(),
                              array_roles=state_roles(supernet.net), options=settings.options,
                              roster=roster)


def width_slice_client(settings: RunSettings, env: ClientEnv, context: Context
                       ) -> NumPyClient:
    return WidthSliceClient(env, width_slicer(settings), settings.search_space.as_dict(),
                            settings.options)


def in_budget_strategy(settings: RunSettings, budget: Budget, sgd: Sgd,
                       roster: Roster) -> PersonalizedStrategy:
    """largest_in_budget / random_in_budget: PerFedRLNAS's strategy with each client's
    architecture fixed from its budget (the options say which rule)."""
    options = settings.options
    return InBudgetStrategy(choice=type(options).CHOICE, budget=budget,
                            sgd=sgd, supernet=seeded_supernet(settings),
                            options=options, roster=roster)


in_budget_client = perfedrlnas.client
