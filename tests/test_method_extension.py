"""A method from outside the package (issue 64 item 2): one options class, one strategy, one
client and one row, joined by one :func:`pfednas.methods.register` call from this module, with
no edit anywhere else; it composes, is checked, shows in ``--help``, runs end to end in process
and is reported as its row of facts says.

The toy is FedAvg with a server step size η (FedOpt's server SGD, Reddi et al., ICLR'21):
w ← w + η (avg − w), η = 1 being FedAvg. Its client is FedAvg's."""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flwr.app import Message
from hydra.errors import ConfigCompositionException

from pfednas.config import ConfigError, compose, settings_from_cfg
from pfednas.config.help import render
from pfednas.methods import METHODS, register, unregister
from pfednas.methods.baselines import fedavg_client
from pfednas.methods.fixed import fits_all_roster, model_arrays
from pfednas.options import OPTIONS
from pfednas.options.baselines import FedAvgOptions
from pfednas.options.facts import FACTS, MethodFacts
from pfednas.records import StageResult
from pfednas.report.cli import build_report
from pfednas.run.inprocess import InProcessRun, run_inprocess
from pfednas.settings import RunSettings
from pfednas.strategies import Budget, FedAvgFTStrategy, PersonalizedStrategy
from pfednas.strategies.budget import Roster
from pfednas.strategies.outgoing import Outgoing
from pfednas.wire.messages import Sgd

NAME = "server_step"
SMALL = ["federation.num_clients=3", "federation.clients_per_round=3", "federation.num_rounds=1",
         "federation.local_epochs=2", "method.finetune_epochs=1", "method.arch=min"]


@dataclasses.dataclass(frozen=True)
class ServerStepOptions(FedAvgOptions):
    """FedAvg with a server step size: the global model moves η of the way to the average."""

    server_lr: float = 0.5  # η (1: FedAvg)


class ServerStepStrategy(FedAvgFTStrategy):
    """FedAvg's round, then w ← w + η (avg − w) on the floating-point arrays."""

    def __init__(self, *, server_lr: float, **fedavg: Any) -> None:
        super().__init__(**fedavg)
        self.server_lr = server_lr

    def aggregate_train(self, server_round: int, replies: Iterable[Message],
                        sent: Outgoing[Any] | None = None) -> StageResult:
        before = self.arrays
        result = super().aggregate_train(server_round, replies, sent)
        eta = self.server_lr  # (1 − η) w + η avg: avg exactly at η = 1
        self.arrays = [(1 - eta) * w + eta * avg if avg.dtype.kind == "f" else avg
                       for w, avg in zip(before, self.arrays, strict=True)]
        return result


def server_step_strategy(settings: RunSettings, budget: Budget, sgd: Sgd,
                         roster: Roster) -> PersonalizedStrategy:
    options: ServerStepOptions = settings.options
    arrays, roles = model_arrays(settings)
    return ServerStepStrategy(
        server_lr=options.server_lr, budget=budget, sgd=sgd,
        initial_arrays=arrays, array_roles=roles, finetune_epochs=options.finetune_epochs,
        finetune_scope=options.finetune_scope,
        roster=fits_all_roster(settings, roster, deployment=budget.deployment,
                               model=model_arrays))


# its row: a baseline, named "+FT" where it fine-tunes, as FedAvg is
FACTS_ROW = MethodFacts(NAME, ServerStepOptions, "ServerStep", baseline=True, ft_named=True)


@pytest.fixture
def server_step() -> Iterator[str]:
    """The toy registered for one test, then gone (registration is process-wide)."""
    register(facts=FACTS_ROW, strategy=server_step_strategy, client=fedavg_client)
    try:
        yield NAME
    finally:
        unregister(NAME)


def test_one_register_call_makes_a_method_known_to_the_config_its_checks_and_help(
        server_step: str) -> None:
    # Execute
    settings = settings_from_cfg(compose([f"method={server_step}", "method.server_lr=0.25"]))
    help_text = render([f"method={server_step}"])

    # Assert: one row in the facts, the options and the builders, in the report's order
    assert list(FACTS)[-1] == list(METHODS)[-1] == server_step
    assert OPTIONS[server_step] is ServerStepOptions
    assert settings.options == ServerStepOptions(server_lr=0.25)
    assert settings.federation.weighting == "samples"  # its row's weighting
    assert f"  method: {', '.join(sorted(FACTS))}" in help_text
    assert "server_lr" in help_text and "FedAvg with a server step size" in help_text
    with pytest.raises(ConfigCompositionException, match="server_lr"):  # typed options
        compose([f"method={server_step}", "method.server_lr=fast"])
    with pytest.raises(ConfigError, match="finetune_epochs"):  # and checked
        settings_from_cfg(compose([f"method={server_step}", "method.finetune_epochs=-1"]))


@pytest.mark.slow
def test_a_registered_method_runs_end_to_end_and_is_reported_as_its_row_says(
        server_step: str, tmp_path: Path) -> None:
    # Execute: FedAvg (the report's reference) and the toy on the same setting, the toy with
    # η = 1 too; then the report of FedAvg's run and the toy's
    fedavg = run_inprocess(["method=fedavg", *SMALL], tmp_path / "fedavg")
    toy = run_inprocess([f"method={server_step}", *SMALL], tmp_path / server_step)
    as_fedavg = run_inprocess([f"method={server_step}", "method.server_lr=1.0", *SMALL])
    build_report([tmp_path / "fedavg", tmp_path / server_step], tmp_path / "report")
    with (tmp_path / "report" / "table.csv").open() as f:
        rows = {row["method"]: row for row in csv.DictReader(f)}

    # Assert: the toy's own server step ran: with η = 1 the clients evaluate FedAvg's model
    # bit for bit, with η = 0.5 another (their fine-tuned models' losses differ)
    def losses(run: InProcessRun, stage: str, key: str) -> list[float]:
        return [row[key] for row in getattr(run.records[-1], stage)]

    assert losses(toy, "train", "train_loss") == losses(fedavg, "train", "train_loss")
    assert losses(as_fedavg, "evaluation", "loss") == losses(fedavg, "evaluation", "loss")
    assert losses(toy, "evaluation", "loss") != losses(fedavg, "evaluation", "loss")
    # ... and the report classes it as its row says: a baseline with FedAvg's pair of rows
    # (as published, +FT with F = 1), the same ratio columns filled as FedAvg's (no error
    # ratios, a baseline's; unclassed, it would have had them as a NAS method's)
    ratios = [k for k in rows["fedavg"] if "ratio" in k]
    for name, reference in ((server_step, "fedavg"), (server_step + "+ft", "fedavg+ft")):
        assert rows[name]["finetune_epochs"] == rows[reference]["finetune_epochs"]
        assert [k for k in ratios if rows[name][k]] == [k for k in ratios if rows[reference][k]]
        assert rows[name]["compute_ratio_fedavg_ft"] == "1.0"  # FedAvg's training, client-side


def test_a_duplicate_or_malformed_registration_fails_with_one_error_and_changes_nothing(
        server_step: str) -> None:
    # Prepare
    before = (list(FACTS), list(METHODS), list(OPTIONS))

    @dataclasses.dataclass  # not frozen
    class Loose:
        x: int = 1

    bad = {  # each case's changes and the problem its error names
        "exists already": {"facts": FACTS_ROW},
        "'fedavg' exists already": {"facts": dataclasses.replace(FACTS_ROW, name="fedavg")},
        "lower-case": {"facts": dataclasses.replace(FACTS_ROW, name="Server-Step")},
        "must be frozen": {"facts": MethodFacts("loose", Loose, "Loose")},
        "strategy must be a builder": {"facts": dataclasses.replace(FACTS_ROW, name="other"),
                                       "strategy": None},
        "selects must be a list": {"facts": dataclasses.replace(FACTS_ROW, name="other"),
                                   "selects": "darts_s2"}}

    # Execute / Assert
    for problem, changes in bad.items():
        arguments: dict[str, Any] = {"strategy": server_step_strategy,
                                     "client": fedavg_client, **changes}
        with pytest.raises(ValueError, match=r"^register\(method='[^']*'\): .*" + problem):
            register(**arguments)
        assert (list(FACTS), list(METHODS), list(OPTIONS)) == before, problem
    with pytest.raises(ValueError, match="own methods"):
        unregister("fedavg")


def test_unregistering_leaves_every_table_as_it_was(server_step: str) -> None:
    # Prepare: the toy registered (by the fixture) and composed once
    compose([f"method={server_step}"])

    # Execute
    unregister(server_step)
    try:
        # Assert: no trace in the tables, the config group or a cached composition
        assert server_step not in FACTS and server_step not in METHODS
        assert server_step not in OPTIONS
        with pytest.raises(Exception, match=server_step):
            compose([f"method={server_step}"])
    finally:  # the fixture unregisters it again
        register(facts=FACTS_ROW, strategy=server_step_strategy, client=fedavg_client)
    assert list(FACTS) == list(METHODS)


def test_a_registered_method_selects_other_groups_as_its_yaml_would() -> None:
    # Prepare: the toy on DARTS's cells, which it selects itself (as conf/method/spider.yaml)
    facts = dataclasses.replace(FACTS_ROW, name="server_step_darts", spaces=("darts_s2",))
    register(facts=facts, strategy=server_step_strategy, client=fedavg_client,
             selects=[{"override /search_space@_global_.search_space": "darts_s2"}])
    try:
        # Execute
        settings = settings_from_cfg(compose(["method=server_step_darts",
                                              "method.server_lr=0.25"]))

        # Assert: its space selected, its options over its schema
        assert settings.search_space.name == "darts_s2"
        assert settings.options == ServerStepOptions(server_lr=0.25)
    finally:
        unregister("server_step_darts")
    # ... then no trace of either node
    for name in ("server_step_darts", "server_step_darts_defaults"):
        with pytest.raises(Exception, match=name):
            compose([f"method={name}"])
