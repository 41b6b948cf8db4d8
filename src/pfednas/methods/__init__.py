"""The method table: each method's server strategy and client role, joined to its facts.

Adding a method = its options dataclass in :mod:`pfednas.options` (the one source of its
defaults and its config, checked before anything starts), its row of facts in
:data:`pfednas.options.facts.FACTS` (its spaces, weighting, validation use and how the report
names and classes it), a Strategy subclass in ``strategies/``, a NumPyClient in ``clients/``,
its construction in a module of this package, and one row here (docs/ARCHITECTURE.md, "A
method"). The ServerApp calls ``strategy``; the ClientApp calls ``client``.
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
from pfednas.options.facts import FACTS, MethodFacts

ClientBuilder = Callable[[RunSettings, ClientEnv, Context], NumPyClient]


@dataclass(frozen=True)
class MethodSpec:
    facts: MethodFacts  # what the code knows about it: options, spaces, how it is reported
    strategy: StrategyBuilder
    client: ClientBuilder

    @property
    def name(self) -> str:
        return self.facts.name

    @property
    def spaces(self) -> tuple[str, ...]:
        """The search spaces the method works on (empty: every one)."""
        return self.facts.spaces

    @property
    def selects_on_val(self) -> bool:
        return self.facts.selects_on_val

    @property
    def exports_from_checkpoint(self) -> bool:
        return self.facts.exports_from_checkpoint


def _row(name: str, strategy: StrategyBuilder, client: ClientBuilder) -> MethodSpec:
    return MethodSpec(FACTS[name], strategy, client)


# one row per row of FACTS, in its order (the report's)
METHODS: Mapping[str, MethodSpec] = MappingProxyType({spec.name: spec for spec in (
    _row("fedavg", baselines.fedavg_strategy, baselines.fedavg_client),
    # FedProx: FedAvg's server (FedProxOptions extends FedAvgOptions), its own client
    _row("fedprox", baselines.fedavg_strategy, baselines.fedprox_client),
    _row("local", baselines.local_strategy, baselines.local_client),
    _row("perfedrlnas", perfedrlnas.strategy, perfedrlnas.client),
    _row("spider", darts.spider_strategy, darts.spider_client),
    _row("ditto", darts.spider_strategy, darts.spider_client),
    _row("fedrep", baselines.fedrep_strategy, baselines.fedrep_client),
    _row("fedbabu", baselines.fedbabu_strategy, baselines.fedbabu_client),
    _row("fednas", darts.fednas_strategy, darts.fednas_client),
    _row("hapfnas", hapfnas.strategy, hapfnas.client),
    _row("heterofl", devices.width_slice_strategy, devices.width_slice_client),
    _row("fedrolex", devices.width_slice_strategy, devices.width_slice_client),
    _row("largest_in_budget", devices.in_budget_strategy, devices.in_budget_client),
    _row("random_in_budget", devices.in_budget_strategy, devices.in_budget_client),
)})

__all__ = ["FITS_ALL", "METHODS", "MethodSpec", "StrategyBuilder", "client_profiles",
           "fits_all_arch",
           "fits_all_roster", "fits_all_on_profiles", "fixed_arch", "fixed_model_fn",
           "hapfnas_transfer", "initial_body", "initial_fixed_arrays", "parse_fixed_arch",
           "seeded_supernet", "unheld_indices"]
