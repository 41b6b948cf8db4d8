"""Construction of the methods on the darts_s2 cell space: SPIDER, Ditto (SPIDER's trainer
with the local architecture fixed) and the global federated NAS reference FedNAS."""

from __future__ import annotations

import torch
from flwr.app import Context
from flwr.client import NumPyClient

from pfednas.clients import SpiderClient
from pfednas.clients.common import ClientEnv
from pfednas.clients.fednas import FedNASClient
from pfednas.clients.spider_state import run_fingerprint
from pfednas.config import ConfigError, RunSettings, task_shape
from pfednas.methods.fixed import seeded_supernet
from pfednas.options.baselines import FedNASOptions
from pfednas.options.spider import SpiderOptions
from pfednas.search import DartsS2Space
from pfednas.search.darts_mixed import DartsMixedNet
from pfednas.seeding import MODEL_INIT, int_seed
from pfednas.strategies import Budget, PersonalizedStrategy, SpiderStrategy
from pfednas.strategies.budget import Roster
from pfednas.strategies.fednas import FedNASStrategy
from pfednas.wire.messages import Sgd


def spider_options(settings: RunSettings) -> SpiderOptions:
    """SPIDER's / Ditto's options, as the run's config records them (a tuning run, which
    scores validation data, cannot train on it: :func:`pfednas.config.settings_from_cfg`)."""
    options: SpiderOptions = settings.options
    return options


def darts_space(settings: RunSettings) -> DartsS2Space:
    space = settings.search_space.build()
    if not isinstance(space, DartsS2Space):
        raise ConfigError(f"method={settings.method} needs search_space=darts_s2, "
                          f"got {space.name!r}")
    return space


def spider_strategy(settings: RunSettings, budget: Budget, sgd: Sgd,
                    roster: Roster) -> PersonalizedStrategy:
    darts_space(settings)
    options = spider_options(settings)
    return SpiderStrategy(budget=budget, sgd=sgd,
                          supernet=seeded_supernet(settings),
                          participation=options.participation,
                          finetune_epochs=options.finetune_epochs,
                          finetune_scope=options.finetune_scope, roster=roster)


def spider_client(settings: RunSettings, env: ClientEnv, context: Context) -> NumPyClient:
    directory = str(context.node_config.get("checkpoint-dir", "")).strip() or None
    fingerprint = run_fingerprint(settings.method, settings.method_options,
                                  settings.search_space.as_dict(), settings.data,
                                  settings.seed)
    return SpiderClient(env, darts_space(settings), task_shape(settings),
                        spider_options(settings), context.state, fingerprint=fingerprint,
                        checkpoint_dir=directory)


def fednas_strategy(settings: RunSettings, budget: Budget, sgd: Sgd,
                    roster: Roster) -> PersonalizedStrategy:
    space = darts_space(settings)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int_seed(settings.seed, MODEL_INIT))
        net = DartsMixedNet(space, task_shape(settings))
    return FedNASStrategy(budget=budget, sgd=sgd, net=net,
                          options=settings.options, roster=roster)


def fednas_client(settings: RunSettings, env: ClientEnv, context: Context) -> NumPyClient:
    options: FedNASOptions = settings.options
    return FedNASClient(env, darts_space(settings), task_shape(settings),
                        bn_recalibrate=options.bn_recalibrate)
