"""The method table: each method's server strategy and client role, joined to its facts.

A method is one options dataclass in :mod:`pfednas.options` (the one source of its defaults
and its config, checked before anything starts), one Strategy subclass in ``strategies/``, one
NumPyClient in ``clients/``, and one row: its facts in :data:`pfednas.options.facts.FACTS`
(its spaces, weighting, validation use and how the report names and classes it), joined here
to its strategy's and its client's construction (docs/ARCHITECTURE.md, "A method"). A method
from outside the package is one :func:`register` call (:mod:`pfednas.methods.registry`). The
ServerApp calls ``strategy``; the ClientApp calls ``client``.
"""

from __future__ import annotations

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
from pfednas.methods.registry import (
    METHODS,
    ClientBuilder,
    MethodSpec,
    own,
    register,
    unregister,
)

# pfednas's own methods, one per row of FACTS, in its order (the report's)
own("fedavg", baselines.fedavg_strategy, baselines.fedavg_client)
# FedProx: FedAvg's server (FedProxOptions extends FedAvgOptions), its own client
own("fedprox", baselines.fedavg_strategy, baselines.fedprox_client)
own("fedbn", baselines.fedbn_strategy, baselines.fedbn_client)
own("local", baselines.local_strategy, baselines.local_client)
own("perfedrlnas", perfedrlnas.strategy, perfedrlnas.client)
own("spider", darts.spider_strategy, darts.spider_client)
own("ditto", darts.spider_strategy, darts.spider_client)
own("fedrep", baselines.fedrep_strategy, baselines.fedrep_client)
own("fedbabu", baselines.fedbabu_strategy, baselines.fedbabu_client)
own("fednas", darts.fednas_strategy, darts.fednas_client)
own("hapfnas", hapfnas.strategy, hapfnas.client)
own("heterofl", devices.width_slice_strategy, devices.width_slice_client)
own("fedrolex", devices.width_slice_strategy, devices.width_slice_client)
own("largest_in_budget", devices.in_budget_strategy, devices.in_budget_client)
own("random_in_budget", devices.in_budget_strategy, devices.in_budget_client)

__all__ = ["FITS_ALL", "METHODS", "ClientBuilder", "MethodSpec", "StrategyBuilder",
           "client_profiles",
           "fits_all_arch",
           "fits_all_roster", "fits_all_on_profiles", "fixed_arch", "fixed_model_fn",
           "hapfnas_transfer", "initial_body", "initial_fixed_arrays", "parse_fixed_arch",
           "register", "seeded_supernet", "unheld_indices", "unregister"]
