"""Client hardware profiles: the simulated draws pinned, node config and probe, the claims
a deployment refuses, the fits_all floor and the clients no architecture fits."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from pfednas.config import SIMULATION_ENV, ConfigError, compose, settings_from_cfg
from pfednas.hardware.profile import (
    MB,
    MEASURED,
    SIMULATED,
    STATED,
    ClientProfile,
    ProfileBounds,
    profile_problem,
)
from pfednas.methods import client_profiles, fits_all_arch, fits_all_on_profiles, seeded_supernet
from pfednas.nas.fitting import fits_all_budgets
from pfednas.node.probe import (
    MEMORY_MARGIN,
    MemoryReading,
    cgroup_memory,
    no_room_for,
    node_profile,
    process_private,
    read_memory,
    stated_fields,
)
from pfednas.search import get_space
from pfednas.search.memory_bound import budgeted_cost
from pfednas.strategies import Budget, PerFedRLNASOptions, PerFedRLNASStrategy
from pfednas.strategies.budget import Roster
from pfednas.strategies.fedavg import FedAvgFTStrategy
from pfednas.strategies.hapfnas import HAPFNASOptions
from tests.conftest import SGD, spread

# HEAD's draws (before profiles existed) for `method=perfedrlnas seed=3` on the default
# digits federation: each memory budget ÷ the largest subnet's training memory, and each
# slowdown; and the baselines' fits_all architecture for `method=fedavg seed=3`
PINNED_FRACTIONS = [0.5579665253757335, 0.4332028582215885, 0.5790691027679025,
                    0.34000210439662726, 0.4377186190069705, 0.9673187127398922]
PINNED_SLOWDOWNS = [1.4100202473513457, 3.651250333331982, 3.6958297408313747,
                    2.7330263708488234, 3.071681370027438, 1.3067416279897055]
PINNED_FITS_ALL = ("mobilenetv3:r1-w12d1_k5e4_k5e3_k5e3-w24d1_k5e3_k5e4_k3e6-w36d1_k5e6_k5e4_"
                   "k5e4-w48d3_k5e4_k3e6_k5e3")


@pytest.fixture
def simulation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SIMULATION_ENV, "1")


# Messages need the task identity Flower sets inside a run (conftest.run_id).
pytestmark = pytest.mark.usefixtures("run_id")


# -- simulation: the published draws ------------------------------------------------------------
def test_simulated_profiles_are_the_draws_published_results_were_made_with(
        simulation: None) -> None:
    from pfednas.methods.build import build_strategy

    # Execute: the seeded strategies of both NAS methods and the baselines' fits_all
    perfed = build_strategy(settings_from_cfg(compose(["method=perfedrlnas", "seed=3"])))
    hapfnas = build_strategy(settings_from_cfg(compose(["method=hapfnas", "seed=3",
                                                        "federation.num_rounds=8"])))
    baseline = settings_from_cfg(compose(["method=fedavg", "method.arch=fits_all", "seed=3"]))
    fedavg = build_strategy(baseline)
    arch = fits_all_arch(seeded_supernet(baseline), client_profiles(baseline), 3,
                         baseline.federation.batch_size)

    # Assert: HEAD's values, to the last bit
    assert isinstance(perfed, PerFedRLNASStrategy)
    largest = perfed.memory(perfed.space.max_arch())
    first = [perfed.profiles[c] for c in range(6)]
    assert [p.memory_bytes / largest for p in first] == PINNED_FRACTIONS
    assert [p.speed_factor for p in first] == PINNED_SLOWDOWNS
    assert all(p.bandwidth_bps == 100e6 and p.macs_per_second == 1e9 for p in first)
    assert {p.source for p in perfed.profiles.values()} == {SIMULATED}
    assert [hapfnas.client_budgets[c] for c in range(6)] == [p.memory_bytes for p in first]  # type: ignore[attr-defined]
    assert arch.to_str() == PINNED_FITS_ALL
    # one home: every method of the seed runs on the same devices, recorded in its summary
    assert fedavg.profiles == perfed.profiles == hapfnas.profiles
    assert fedavg.summary_extra([])["profiles"] == perfed.summary_extra([])["profiles"]
    assert perfed.round_time_source == "cost_model"


# -- a node's own profile: node config and probe ---------------------------------------------------
def tiny_supernet() -> Any:
    return get_space("mobilenetv3").build_supernet(num_classes=10, in_channels=1, image_size=8)


def test_a_stated_profile_is_taken_from_the_node_config_without_measuring() -> None:
    config = {"partition-id": 0, "memory-budget-mb": 40, "macs-per-second": 2.5e9,
              "bandwidth-mbps": 20.0}

    def never() -> Any:
        raise AssertionError("a fully stated profile measures nothing")

    result = node_profile(config, build_supernet=never, default_bandwidth_mbps=100.0)

    assert result.record == {"memory-budget-mb": 40.0, "macs-per-second": 2.5e9,
                             "bandwidth-mbps": 20.0, "source": STATED}


@pytest.mark.parametrize("value", ["abc", -5, 0, float("nan"), True])
def test_a_malformed_node_config_value_names_its_key(value: Any) -> None:
    with pytest.raises(ValueError, match="node config memory-budget-mb="):
        stated_fields({"memory-budget-mb": value})


def test_the_probe_measures_memory_and_speed_within_two_seconds() -> None:
    # Execute: a real probe of this machine, memory stated away from nothing
    tic = time.perf_counter()
    result = node_profile({"bandwidth-mbps": 50}, build_supernet=tiny_supernet,
                          default_bandwidth_mbps=100.0)
    took = time.perf_counter() - tic

    # Assert: bounded in time; real, positive figures; the memory what read_memory says
    # less the margin (what this process holds may move by a few MB in between)
    assert result.seconds <= 2.2 and took <= 2.5
    assert result.record["source"] == MEASURED and result.record["bandwidth-mbps"] == 50.0
    speed = float(result.record["macs-per-second"])
    assert 1e6 < speed < 1e13
    reading = read_memory()
    expected = reading.budget_bytes() / MB
    assert float(result.record["memory-budget-mb"]) == pytest.approx(expected, rel=0.05)
    assert expected < (reading.limit_bytes / MB) * (1 - MEMORY_MARGIN)


def test_cgroup_limits_are_read_v2_v1_and_unlimited_is_none(tmp_path: Path) -> None:
    # Prepare: a v2 tree whose parent is tighter than the leaf, a v1 tree, an unlimited one
    v2 = tmp_path / "v2"
    (v2 / "pod" / "box").mkdir(parents=True)
    (v2 / "pod" / "memory.max").write_text("1073741824\n")
    (v2 / "pod" / "memory.current").write_text("104857600\n")
    (v2 / "pod" / "box" / "memory.max").write_text("max\n")
    member_v2 = tmp_path / "cgroup_v2"
    member_v2.write_text("0::/pod/box\n")
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("536870912\n")
    (v1 / "memory" / "memory.usage_in_bytes").write_text("0\n")
    member_v1 = tmp_path / "cgroup_v1"
    member_v1.write_text("4:memory:/\n0::/\n")
    open_v1 = tmp_path / "open"
    (open_v1 / "memory").mkdir(parents=True)
    (open_v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")

    # Execute / Assert
    assert cgroup_memory(v2, member_v2)[:2] == (1073741824.0, 104857600.0)  # type: ignore[index]
    assert cgroup_memory(v1, member_v1)[:2] == (536870912.0, 0.0)  # type: ignore[index]
    assert cgroup_memory(open_v1, member_v1) is None


def test_a_second_process_starts_only_where_the_container_has_room_for_it(
        tmp_path: Path) -> None:
    # Prepare: the containers test's silos at the kept model's measurement (a ClientApp
    # holding ~607 MiB), and this process's private memory as /proc states it
    held = 607 * MB
    silo = {name: MemoryReading(limit * MB, held, "cgroup v2 memory.max")
            for name, limit in (("2 GiB", 2048), ("1 GiB", 1024), ("670 MiB", 670))}
    status = tmp_path / "status"
    status.write_text("VmRSS:\t  558740 kB\nRssAnon:\t  313720 kB\nRssFile:\t  245020 kB\n")

    # Execute
    need = process_private(status)
    verdicts = {name: no_room_for(reading, need) for name, reading in silo.items()}

    # Assert: the private part only (file pages are shared); the 670 MiB silo is told why
    assert need == 313720 * 1024
    assert verdicts["2 GiB"] is None and verdicts["1 GiB"] is None
    assert verdicts["670 MiB"] == ("63 MiB free (cgroup v2 memory.max), a second process "
                                   "needs about 306 MiB")
    assert process_private(tmp_path / "missing") == 0.0


# -- claims --------------------------------------------------------------------------------------
BOUNDS = ProfileBounds(memory_budget_mb=(8.0, 4096.0), macs_per_second=(1e6, 1e12),
                       bandwidth_mbps=(1.0, 1000.0))
GOOD = {"memory-budget-mb": 64.0, "macs-per-second": 2e9, "bandwidth-mbps": 100.0,
        "source": MEASURED}


def test_a_claim_within_the_bounds_is_the_clients_profile() -> None:
    claim = profile_problem(7, 2, GOOD, BOUNDS, None)

    assert claim == ClientProfile(memory_bytes=64 * MB, macs_per_second=2e9,
                                  bandwidth_bps=100e6, source=MEASURED)


@pytest.mark.parametrize(("change", "reason"), [
    ({"memory-budget-mb": 1e7}, "outside the operator's bounds"),
    ({"macs-per-second": 10.0}, "outside the operator's bounds"),
    ({"memory-budget-mb": float("nan")}, "not a finite number"),
    ({"memory-budget-mb": -64.0}, "outside the operator's bounds"),
    ({"bandwidth-mbps": "fast"}, "not a finite number"),
    ({"macs-per-second": True}, "not a finite number"),
    ({"source": "simulated"}, "is not stated|measured"),
])
def test_a_bad_claim_is_refused_in_one_line_naming_the_node(change: dict[str, Any],
                                                            reason: str) -> None:
    claim = profile_problem(7, 2, {**GOOD, **change}, BOUNDS, None)

    assert isinstance(claim, str) and "\n" not in claim
    assert claim.startswith("node 7 (client id 2): hardware profile refused: ")
    assert reason in claim and claim.endswith("the node does not get its client id")


def test_a_profile_changed_after_first_contact_is_refused() -> None:
    first = profile_problem(7, 2, GOOD, BOUNDS, None)
    assert isinstance(first, ClientProfile)

    again = profile_problem(7, 2, GOOD, BOUNDS, first)
    changed = profile_problem(7, 2, {**GOOD, "memory-budget-mb": 32.0}, BOUNDS, first)

    assert again == first
    assert isinstance(changed, str) and "changed after first contact" in changed


def test_bad_operator_bounds_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="federation.profile_bounds.memory_budget_mb"):
        settings_from_cfg(compose(["federation.profile_bounds.memory_budget_mb=[10,1]"]))
    with pytest.raises(ConfigError, match="federation.min_budget_mb"):
        settings_from_cfg(compose(["federation.min_budget_mb=-1"]))


class QueryGrid:
    """Nodes 100.. answer the client-id query with their client id and a profile record."""

    def __init__(self, profiles: list[dict[str, Any] | None]) -> None:
        self.profiles, self.replies = profiles, {}  # type: ignore[var-annotated]

    def get_node_ids(self) -> list[int]:
        return [100 + c for c in range(len(self.profiles))]

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for i, msg in enumerate(messages):
            msg.metadata.__dict__["_message_id"] = f"q{msg.metadata.dst_node_id}-{i}"
            cid = msg.metadata.dst_node_id - 100
            content = RecordDict({"metrics": MetricRecord({"client_id": cid})})
            if self.profiles[cid] is not None:
                content["profile"] = ConfigRecord(self.profiles[cid])
            self.replies[msg.metadata.message_id] = Message(content, reply_to=msg)
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, ids: Iterable[str]) -> list[Message]:
        return [self.replies.pop(i) for i in ids if i in self.replies]


def deployed_fedavg(clients: int = 3) -> FedAvgFTStrategy:
    budget = Budget(num_clients=clients, clients_per_round=clients, num_rounds=1,
                    local_epochs=1, eval_every=1, round_timeout=0.5, seed=0, deployment=True)
    return FedAvgFTStrategy(budget=budget, sgd=SGD, initial_arrays=[],
                            finetune_epochs=0, roster=Roster(profile_bounds=BOUNDS))


def test_connect_binds_claimed_profiles_and_refuses_a_node_outside_the_bounds(
        caplog: pytest.LogCaptureFixture) -> None:
    # Prepare: node 101 claims 100 GB, outside the operator's 4 GB
    grid = QueryGrid([GOOD, {**GOOD, "memory-budget-mb": 1e5}, {**GOOD, "source": STATED}])
    strategy = deployed_fedavg()

    # Execute: the run cannot start without client 1, as with a refused id claim
    with pytest.raises(RuntimeError, match=r"no node answered for client ids \[1\]"):
        strategy.connect(grid, poll_seconds=0.05)  # type: ignore[arg-type]

    # Assert
    assert strategy.node_of == {0: 100, 2: 102}
    assert strategy.profiles[0].memory_bytes == 64 * MB
    assert strategy.profiles[2].source == STATED and 1 not in strategy.profiles
    assert "node 101 (client id 1): hardware profile refused: memory-budget-mb=100000" \
        in caplog.text


def test_a_simulation_reads_no_profile_from_the_nodes() -> None:
    budget = Budget(num_clients=2, clients_per_round=2, num_rounds=1, local_epochs=1,
                    eval_every=1, round_timeout=1.0, seed=0)
    strategy = FedAvgFTStrategy(budget=budget, sgd=SGD, initial_arrays=[],
                                finetune_epochs=0)

    strategy.connect(QueryGrid([None, None]), poll_seconds=0.05)  # type: ignore[arg-type]

    assert strategy.node_of == {0: 100, 1: 101} and strategy.profiles == {}


# -- who trains: the fits_all floor, unfit clients -----------------------------------------------
def digits_settings(*overrides: str) -> Any:
    return settings_from_cfg(compose(["method=fedavg", "method.arch=fits_all",
                                      "federation.num_clients=3",
                                      "federation.clients_per_round=3", *overrides]))


def memory_of(settings: Any) -> Any:
    supernet = seeded_supernet(settings)
    # a deployment compares claimed bytes with the calibrated bound of real training memory
    return supernet, lambda a: float(budgeted_cost(supernet.cost(
        a, batch_size=settings.federation.batch_size), supernet.space.name,
        real_bytes=True).memory_bytes)


def claimed(memory_bytes: float) -> ClientProfile:
    return ClientProfile(memory_bytes=memory_bytes, macs_per_second=1e9, bandwidth_bps=1e8,
                         source=STATED)


def test_fits_all_excludes_a_client_below_the_floor_instead_of_shrinking_everybody() -> None:
    # Prepare: two roomy clients and one claiming just above the smallest subnet (below the
    # default floor, a quarter of the way from the smallest subnet's memory to the largest's)
    settings = digits_settings()
    supernet, memory = memory_of(settings)
    largest, smallest = memory(supernet.space.max_arch()), memory(supernet.space.min_arch())
    roomy, less = smallest + 0.8 * (largest - smallest), smallest + 0.6 * (largest - smallest)
    profiles = {0: claimed(roomy), 1: claimed(1.01 * smallest), 2: claimed(less)}

    # Execute
    arch, excluded = fits_all_on_profiles(settings, profiles, ProfileBounds())
    shrunk, none = fits_all_on_profiles(settings, profiles, ProfileBounds(min_budget_mb=0.0))

    # Assert: client 1 excluded with its reason; the architecture the other two admit,
    # larger than the one client 1's claim would force on all
    assert list(excluded) == [1] and "below the operator's floor" in excluded[1]
    assert memory(arch) <= less
    params = supernet.cost(arch).params
    assert arch == fits_all_budgets(supernet.space, memory, [roomy, less],
                                    lambda a: float(supernet.cost(a).params), settings.seed)
    assert none == {} and params > supernet.cost(shrunk).params
    assert memory(shrunk) <= 1.01 * smallest


def test_the_operator_sets_the_floor_in_mb() -> None:
    settings = digits_settings()
    supernet, memory = memory_of(settings)
    largest, smallest = memory(supernet.space.max_arch()), memory(supernet.space.min_arch())
    between = smallest + 0.3 * (largest - smallest)  # fits a subnet, below the operator's floor
    profiles = {0: claimed(0.9 * largest), 1: claimed(between), 2: claimed(0.9 * largest)}

    _, excluded = fits_all_on_profiles(settings, profiles, ProfileBounds(
        min_budget_mb=(smallest + 0.5 * (largest - smallest)) / MB))

    assert list(excluded) == [1] and "below the operator's floor" in excluded[1]


def perfed(*, deployment: bool, **options: Any) -> PerFedRLNASStrategy:
    space = get_space("vit", stem_width=8, conv_widths=[[8, 12], [12, 16]], conv_depths=[1, 2],
                      conv_kernels=[3, 5], transformer_widths=[[16, 24], [24, 32]],
                      transformer_depths=[1, 2], heads=[1, 2], head_dim=8, mlp_ratios=[2, 3])
    budget = Budget(num_clients=3, clients_per_round=3, num_rounds=2, local_epochs=1,
                    eval_every=1, round_timeout=10, seed=0, deployment=deployment)
    supernet = space.build_supernet(num_classes=10, in_channels=1, image_size=8)
    strategy = PerFedRLNASStrategy(
        budget=budget, sgd=SGD, supernet=supernet,
        options=PerFedRLNASOptions(**options),
        roster=Roster(profiles={} if deployment else spread(supernet, 3)))
    strategy.node_of = {c: 100 + c for c in range(3)}
    return strategy


def test_a_client_no_architecture_fits_is_excluded_and_the_run_goes_on() -> None:
    # Prepare: a deployment whose client 1 claims less than the smallest subnet needs
    strategy = perfed(deployment=True)
    smallest = strategy.memory(strategy.space.min_arch())
    largest = strategy.memory(strategy.space.max_arch())
    strategy.profiles = {0: claimed(largest), 1: claimed(0.5 * smallest), 2: claimed(largest)}

    # Execute: what connect does once the claims are in, then a round's messages
    strategy.profiles_bound()
    sampled = strategy.sample_clients(1)
    evaluations = strategy.record(strategy.without_excluded(strategy.configure_evaluate(1)))
    summary = strategy.summary_extra([])

    # Assert: never trained, never evaluated, and the results say why
    assert sampled == [0, 2]
    assert sorted(m.metadata.dst_node_id for m in evaluations) == [100, 102]
    assert summary["excluded_clients"] == [{"client_id": 1, "reason": strategy.excluded[1]}]
    assert "no architecture of the search space fits it" in strategy.excluded[1]
    assert [p["source"] for p in summary["profiles"]] == [STATED] * 3
    assert summary["round_time_source"] == "server_clock"


def test_without_fits_all_a_small_budget_only_limits_its_own_client() -> None:
    strategy = perfed(deployment=True)
    largest = strategy.memory(strategy.space.max_arch())
    smallest = strategy.memory(strategy.space.min_arch())
    strategy.profiles = {0: claimed(largest), 1: claimed(1.01 * smallest), 2: claimed(largest)}

    strategy.profiles_bound()

    assert strategy.excluded == {}
    assert strategy.memory(strategy.personalized_arch(1)) <= 1.01 * smallest


def test_a_deployment_times_clients_on_the_server_clock() -> None:
    # Prepare: client 0 was sent a subnet and replied after 3.5 s on the server's clock
    strategy = perfed(deployment=True)
    strategy.profiles = {c: claimed(math.inf) for c in range(3)}
    arch = strategy.space.min_arch()
    strategy.current.reply_seconds = {100: 3.5}
    simulated = perfed(deployment=False)

    # Execute
    measured = strategy.round_time(0, {"num_examples": 40}, (arch, 1000), 1000)
    modelled = simulated.round_time(0, {"num_examples": 40}, (arch, 1000), 1000)

    # Assert: the server's clock, not the cost model (which gives its own figure)
    assert measured == 3.5 and modelled != 3.5
    assert simulated.summary_extra([])["round_time_source"] == "cost_model"


def test_hapfnas_in_a_deployment_budgets_memory_only() -> None:
    from pfednas.methods.hapfnas import strategy as hapfnas_strategy

    settings = settings_from_cfg(compose(["method=hapfnas", "method.budget_metric=params",
                                          "federation.num_rounds=8"]))
    budget = Budget(num_clients=20, clients_per_round=5, num_rounds=8, local_epochs=1,
                    eval_every=1, round_timeout=10, seed=0, deployment=True)

    with pytest.raises(ValueError, match="method.budget_metric must be memory"):
        hapfnas_strategy(settings, budget, SGD, Roster())
    assert HAPFNASOptions.from_config({}).budget_metric == "memory"


def test_a_profile_reports_the_clients_own_speed_in_the_nodes_units() -> None:
    simulated = ClientProfile(memory_bytes=64 * MB, macs_per_second=1e9, bandwidth_bps=1e8,
                              speed_factor=4.0)
    unbudgeted = replace(claimed(math.inf), source=MEASURED)

    assert simulated.to_json() == {"memory_budget_mb": 64.0, "macs_per_second": 2.5e8,
                                   "bandwidth_mbps": 100.0, "source": SIMULATED}
    assert unbudgeted.to_json()["memory_budget_mb"] is None


@pytest.mark.parametrize("arch", ["fits_all", "min"])
def test_a_deployed_baselines_evaluation_rows_carry_its_architecture_and_budget(
        arch: str) -> None:
    # Prepare: FedAvg deployed on three nodes claiming 64 MB, 96 MB and 4 GB
    from pfednas.app.results import arch_counts
    from pfednas.methods.build import build_strategy

    budgets = (64.0, 96.0, 4096.0)
    strategy = build_strategy(digits_settings(f"method.arch={arch}"), deployment=True)
    grid = QueryGrid([{**GOOD, "memory-budget-mb": mb} for mb in budgets])

    # Execute: first contact binds the claims (and fits_all chooses from them)
    strategy.connect(grid, poll_seconds=0.05)  # type: ignore[arg-type]
    rows = [{"client_id": cid, **strategy.evaluation_details(cid)} for cid in range(3)]

    # Assert: as a simulation's rows, against each client's claimed budget in real bytes
    assert [r["budget"] for r in rows] == [mb * MB for mb in budgets]
    assert all(r["budget_metric"] == "memory" and r["within_budget"] for r in rows)
    assert all(r["cost"] == r["memory_bytes"] <= r["budget"] for r in rows)
    assert len({r["arch"] for r in rows}) == 1
    # the chosen architecture is what the summary (and the ServerApp's lines on what the
    # claims changed) read; a fixed min is no choice
    chosen = strategy.profile_summary().get("fixed_arch")
    assert chosen == (rows[0]["arch"] if arch == "fits_all" else None)
    assert arch_counts(rows) == {"distinct_archs": 1, "within_budget_share": 1.0}
