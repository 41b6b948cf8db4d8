"""Construction of HAPFNAS (``strategies/hapfnas.py``; ``clients/hapfnas.py``): the server's
transfer set (unheld pool samples or synthetic inputs) and the clients' knowledge models."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch
from flwr.app import Context
from flwr.client import NumPyClient

from pfednas.clients.common import ClientEnv
from pfednas.clients.hapfnas import HAPFNASClient, knowledge_model
from pfednas.config import ConfigError, RunSettings, task_shape
from pfednas.data import data_normalisation
from pfednas.data.arrays import select
from pfednas.data.holdout import unheld_indices
from pfednas.data.registry import load_raw
from pfednas.hardware.profile import simulated_budgets
from pfednas.methods.fixed import level_cost, seeded_supernet
from pfednas.nas.distill import TransferSet, synthetic_inputs
from pfednas.options.hapfnas import HAPFNASOptions, TransferOptions
from pfednas.records import cost_in
from pfednas.search import Supernet
from pfednas.seeding import HAPFNAS_TRANSFER, MODEL_INIT, int_seed, numpy_rng
from pfednas.strategies import Budget, PersonalizedStrategy
from pfednas.strategies.budget import Roster
from pfednas.strategies.hapfnas import HAPFNASStrategy
from pfednas.wire.messages import Sgd

__all__ = ["client", "hapfnas_transfer", "strategy", "unheld_indices"]


def hapfnas_transfer(settings: RunSettings, options: TransferOptions) -> TransferSet:
    """The server's transfer set: unheld pool samples or synthetic inputs (see nas/distill.py).

    The labelled report split is the held-out part (holdout) or, for synthetic inputs,
    as many unheld pool samples as there are held-out inputs (None if there are none).
    """
    spec, task = settings.data, task_shape(settings)
    options = options.resolve(spec)
    raw = load_raw(spec.name, spec.root, seed=spec.seed, synthetic_samples=spec.synthetic_samples,
                   natural_id=spec.natural_id)
    norm = data_normalisation(spec)
    rng = numpy_rng(settings.seed, HAPFNAS_TRANSFER)
    free = rng.permutation(unheld_indices(spec))
    n_distill, n_held = options.counts()
    if options.source == "synthetic":
        x = synthetic_inputs(options.size, (task.in_channels, task.image_size, task.image_size),
                             rng)
        labelled = select(raw, np.sort(free[:n_held]), norm) if free.size else None
        return TransferSet(distill=x[:n_distill], heldout=x[n_distill:], labelled=labelled)
    if free.size < options.size:
        raise ConfigError(f"method.transfer.size={options.size} > {free.size} unheld samples")
    held = select(raw, np.sort(free[n_distill:options.size]), norm)
    return TransferSet(distill=select(raw, np.sort(free[:n_distill]), norm).x, heldout=held.x,
                       labelled=held)


def _knowledge_fn(settings: RunSettings, width: int) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int_seed(settings.seed, MODEL_INIT, HAPFNAS_TRANSFER))
            return knowledge_model(task_shape(settings), width)
    return build


def strategy(settings: RunSettings, budget: Budget, sgd: Sgd,
             roster: Roster) -> PersonalizedStrategy:
    opts: HAPFNASOptions = settings.options
    transfer = opts.transfer.resolve(settings.data)
    if transfer != opts.transfer:
        print(f"[pfednas] hapfnas: method.transfer.source=auto -> {transfer.source} "
              f"({settings.data.name}, {settings.data.num_clients} clients)", flush=True)
        opts = dataclasses.replace(opts, transfer=transfer)
    supernet = seeded_supernet(settings)
    return HAPFNASStrategy(budget=budget, sgd=sgd, supernet=supernet,
                           options=opts, transfer=hapfnas_transfer(settings, opts.transfer),
                           knowledge_fn=_knowledge_fn(settings, opts.knowledge_width),
                           roster=roster,
                           client_budgets=metric_budgets(settings, supernet, opts.budget_metric,
                                                         deployment=budget.deployment))


def metric_budgets(settings: RunSettings, supernet: Supernet, metric: str, *,
                   deployment: bool) -> dict[int, float] | None:
    """A simulation's budgets in a ``budget_metric`` other than memory: the same seeded draw
    of ``federation.hardware`` as the memory budgets, on the largest subnet's cost in
    ``metric``; None where the budgets are the profiles' memory."""
    if metric == "memory" or deployment:
        return None
    fed = settings.federation
    largest = supernet.cost(supernet.space.max_arch(), batch_size=fed.batch_size)
    return dict(enumerate(simulated_budgets(
        fed.num_clients, fed.hardware, cost_in(largest, metric), settings.seed,
        level_cost(supernet, fed.hardware, fed.batch_size, metric))))


def client(settings: RunSettings, env: ClientEnv, context: Context) -> NumPyClient:
    opts: HAPFNASOptions = settings.options
    return HAPFNASClient(env, settings.search_space.build(), task_shape(settings),
                         knowledge_width=opts.knowledge_width,
                         bn_recalibrate=opts.bn_recalibrate,
                         personal_head=opts.personal_head, state=context.state,
                         sandwich_students=opts.sandwich_students)
