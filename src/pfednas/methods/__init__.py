"""The method table: each method's server strategy and client role, built from the settings.

Adding a method = its options dataclass in :mod:`pfednas.options` (the one source of its
defaults and its config, checked before anything starts), a Strategy subclass in
``strategies/``, a NumPyClient in ``clients/``, its construction in a module of this package,
and one row here (docs/ARCHITECTURE.md, "A method"). The ServerApp calls ``strategy``; the ClientApp
calls ``client``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from flwr.app import Context
from flwr.client import NumPyClient

from pfednas.clients.common import ClientEnv
from pfednas.config import RunSettings
from pfednas.methods import baselines, darts, devices, hapfnas, perfedrlnas
from pfednas.methods.fixed import (
    FITS_ALL,
    StrategyBuilder,
    client_profiles,
    fits_all_arch,
    fits_all_on_profiles,
    fits_all_roster,
    fixed_arch,
    fixed_model_fn,
    initial_body,
    initial_fixed_arrays,
    parse_fixed_arch,
    seeded_supernet,
)
from pfednas.methods.hapfnas import hapfnas_transfer, unheld_indices
from pfednas.options import SPACES

ClientBuilder = Callable[[RunSettings, ClientEnv, Context], NumPyClient]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    strategy: StrategyBuilder
    client: ClientBuilder
    # whether its clients choose anything by their validation split (a reward, measurements,
    # architecture steps, decisions): a tuning run then scores the other half of it
    selects_on_val: bool = False
    # whether a client's model can be cut from the server's checkpoint (``pfednas export
    # --from-checkpoint``): the run then checkpoints its final round too
    exports_from_checkpoint: bool = False

    @property
    def spaces(self) -> tuple[str, ...]:
        """The search spaces the method works on (empty: every one)."""
        return SPACES.get(self.name, ())


METHODS: Mapping[str, MethodSpec] = MappingProxyType({spec.name: spec for spec in (
    MethodSpec("fedavg", baselines.fedavg_strategy, baselines.fedavg_client),
    MethodSpec("local", baselines.local_strategy, baselines.local_client),
    MethodSpec("perfedrlnas", perfedrlnas.strategy, perfedrlnas.client, selects_on_val=True,
               exports_from_checkpoint=True),
    MethodSpec("spider", darts.spider_strategy, darts.spider_client, selects_on_val=True),
    MethodSpec("ditto", darts.spider_strategy, darts.spider_client),
    MethodSpec("fedrep", baselines.fedrep_strategy, baselines.fedrep_client),
    MethodSpec("fedbabu", baselines.fedbabu_strategy, baselines.fedbabu_client),
    MethodSpec("fednas", darts.fednas_strategy, darts.fednas_client, selects_on_val=True),
    MethodSpec("hapfnas", hapfnas.strategy, hapfnas.client, selects_on_val=True,
               exports_from_checkpoint=True),
    MethodSpec("heterofl", devices.width_slice_strategy, devices.width_slice_client),
    MethodSpec("fedrolex", devices.width_slice_strategy, devices.width_slice_client),
    # the controls measure validation accuracy as PerFedRLNAS's clients do, but choose nothing
    MethodSpec("largest_in_budget", devices.in_budget_strategy, devices.in_budget_client),
    MethodSpec("random_in_budget", devices.in_budget_strategy, devices.in_budget_client),
)})

__all__ = ["FITS_ALL", "METHODS", "MethodSpec", "StrategyBuilder", "client_profiles",
           "fits_all_arch",
           "fits_all_roster", "fits_all_on_profiles", "fixed_arch", "fixed_model_fn",
           "hapfnas_transfer", "initial_body", "initial_fixed_arrays", "parse_fixed_arch",
           "seeded_supernet", "unheld_indices"]
