"""``pfednas deploy local`` reproduces its simulation by default (issue 63, item 2): every
node takes the hardware profile the simulation draws for its client and the server builds
the run as the simulation does; ``--profiles measured`` has the nodes claim their own, and
the server says which clients' profiles and models differ from the simulation's. The
deployment itself, bit for bit against the in-process run, is test_deploy.py's first test."""

from __future__ import annotations

import dataclasses
import math

import pytest

from pfednas.config import ConfigError, compose, settings_from_cfg
from pfednas.deploy.arguments import UsageError, profile_source
from pfednas.hardware.profile import MB, STATED, ClientProfile, profile_changes
from pfednas.methods import client_profiles, seeded_supernet
from pfednas.methods.build import build_strategy
from pfednas.methods.fixed import deployment_changes
from pfednas.nas.aggregation import MEDIAN

BASE = ["method=fedavg", "federation.num_clients=3", "federation.clients_per_round=3"]


def settings(*overrides: str):  # type: ignore[no-untyped-def]
    return settings_from_cfg(compose([*BASE, *overrides]))


@pytest.mark.parametrize(("flag", "overrides", "stated", "source"), [
    (None, [], False, "simulated"),
    (None, [], True, "nodes"),
    ("measured", [], False, "nodes"),
    ("simulated", ["federation.profiles=simulated"], False, "simulated"),
    (None, ["federation.profiles=nodes"], False, "nodes"),
])
def test_a_local_deployment_takes_the_simulated_profiles_unless_asked_otherwise(
        flag: str | None, overrides: list[str], stated: bool, source: str) -> None:
    out, chosen = profile_source(flag, overrides, stated)
    assert chosen == source
    assert [o for o in out if o.startswith("federation.profiles=")] == [
        f"federation.profiles={source}"]


@pytest.mark.parametrize(("flag", "overrides", "stated", "message"), [
    ("measured", ["federation.profiles=simulated"], False, "disagree"),
    ("simulated", [], True, "--node-profile states a node's own hardware"),
])
def test_contradicting_profile_choices_are_refused(flag: str, overrides: list[str],
                                                   stated: bool, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        profile_source(flag, overrides, stated)


def test_an_unknown_profile_source_is_refused() -> None:
    with pytest.raises(ConfigError, match="federation.profiles must be nodes|simulated"):
        settings("federation.profiles=guess")


def test_a_deployment_with_simulated_profiles_is_built_as_its_simulation() -> None:
    # Prepare: one setting, as a simulation and as deployments of either profile source
    simulated = build_strategy(settings("federation.profiles=simulated"), deployment=False)
    as_simulated = build_strategy(settings("federation.profiles=simulated"), deployment=True)
    claiming = build_strategy(settings("federation.profiles=nodes"), deployment=True)

    # Assert: the same profiles, merge, update bound and weighting as the simulation (only
    # the evaluation timeout, a deployment's guard against a dead node, differs) ...
    assert as_simulated.profiles == simulated.profiles == client_profiles(
        settings("federation.profiles=simulated"))
    assert as_simulated.profile_bounds is None
    assert dataclasses.replace(as_simulated.budget, eval_timeout=None) == \
        dataclasses.replace(simulated.budget, eval_timeout=None)
    assert as_simulated.budget.eval_timeout is not None
    # ... where nodes that claim their hardware get the deployment's bounds and defaults
    assert claiming.profiles == {} and claiming.profile_bounds is not None
    assert claiming.budget.deployment and claiming.budget.aggregation.rule == MEDIAN
    assert claiming.budget.update_norm_bound is not None


def test_the_clients_whose_claimed_profile_differs_are_named_with_both_profiles() -> None:
    drawn = client_profiles(settings())
    claimed = dict(drawn)
    claimed[1] = ClientProfile(memory_bytes=14_800 * MB, macs_per_second=2e9,
                               bandwidth_bps=drawn[1].bandwidth_bps, source=STATED)

    lines = profile_changes(drawn, claimed)

    assert len(lines) == 1 and lines[0].startswith("client 1: its node's stated profile")
    ratio = 14_800 * MB / drawn[1].memory_bytes
    assert f"{ratio:.3g}x the simulation's memory budget" in lines[0]
    assert profile_changes(drawn, drawn) == []
    unbounded = {0: dataclasses.replace(drawn[0], memory_bytes=math.inf)}
    assert "another memory budget" in profile_changes(drawn, unbounded)[0]


def test_fits_all_chosen_from_larger_claims_is_reported_against_the_simulations_choice() -> None:
    # Prepare: every node claims room for the largest model
    run = settings("federation.profiles=nodes")
    supernet = seeded_supernet(run)
    largest = supernet.space.max_arch()
    roomy = {cid: dataclasses.replace(p, memory_bytes=1e12, source=STATED)
             for cid, p in client_profiles(run).items()}

    # Execute
    lines = deployment_changes(run, roomy, largest.to_str())

    # Assert: each client named, then fits_all's choice against the simulation's
    assert [line.split(":")[0] for line in lines] == ["client 0", "client 1", "client 2",
                                                     "fits_all"]
    assert lines[-1].startswith(f"fits_all: the nodes' profiles chose "
                                f"{supernet.cost(largest).params:,} parameters")
    assert deployment_changes(run, client_profiles(run), None) == []
