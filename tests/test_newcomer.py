"""A newcomer's path (issue 17): every method by its name alone, results that say what was
chosen, a quiet console, cheap intermediate evaluations, missing clients never silent.

The end-to-end checks are beside the real runs that serve them: the console, the quick and
final evaluations and a missing client in test_e2e.py (its FedAvg run), HAPFNAS's in
test_hapfnas_e2e.py and SPIDER's (its own search space, `pfednas report --tensorboard`) in
test_spider_e2e.py.
"""

from __future__ import annotations

import subprocess

import pytest

from pfednas.app.results import format_table, missing_clients_error
from pfednas.cli import SUBCOMMANDS
from pfednas.config import compose
from pfednas.methods import METHODS
from pfednas.run.inprocess import run_inprocess
from pfednas.run.launcher import console_line
from tests.conftest import PFEDNAS, REPO


# -- 1. every method by its name alone --------------------------------------------------------
@pytest.mark.parametrize("method", ["spider", "ditto"])
def test_cross_silo_methods_bring_their_federation_and_the_command_line_still_wins(
        method: str) -> None:
    # Execute: the method alone, then with a federation value and group on the command line
    alone = compose([f"method={method}"])
    explicit = compose([f"method={method}", "federation.num_clients=20"])
    default = compose([f"method={method}", "federation=default"])
    fedavg = compose(["method=fedavg"])

    # Assert: 8 silos, each in every round, one local epoch; the command line wins
    fed = alone.federation
    assert (fed.num_clients, fed.clients_per_round, fed.local_epochs) == (8, 8, 1)
    assert fed.num_rounds == 30 and fed.lr == fedavg.federation.lr  # the rest is default's
    assert explicit.federation.num_clients == 20 and explicit.federation.num_rounds == 30
    assert default.federation == fedavg.federation  # federation=default: the main job's
    assert alone.search_space.name == "darts_s2"
    assert fedavg.federation.num_clients == 20  # other methods keep the default federation


# -- 2. hapfnas on the default dataset -----------------------------------------------------------
# HAPFNAS on the default dataset (digits: the clients hold the whole pool), no transfer
# overrides; only the phases and the search are shortened.
HAPFNAS = ["method=hapfnas", "federation.num_clients=4", "federation.clients_per_round=2",
           "federation.num_rounds=3", "federation.local_epochs=1", "method.distill_rounds=1",
           "method.search_rounds=1", "method.knowledge_width=4", "method.knowledge_epochs=1",
           "method.distill.steps=2", "method.predictor.archs_per_client=2",
           "method.predictor.trees=5", "method.predictor.folds=2",
           "method.evolution.population=4", "method.evolution.generations=2",
           "method.evolution.parents=2", "search_space.depths=[1,2]",
           "search_space.base_widths=[8,16,24]", "search_space.kernels=[3,5]",
           "search_space.stage_strides=[1,2,2]", "search_space.stage_se=[false,true,true]",
           "search_space.stage_acts=[relu,hswish,hswish]", "search_space.head_width=64"]


@pytest.mark.slow
def test_hapfnas_on_digits_runs_with_its_default_transfer_source(
        capsys: pytest.CaptureFixture[str]) -> None:
    # The in-process runner: the transfer set is the server's; Flower and Ray change nothing
    # in it (the real HAPFNAS run is in tests/test_hapfnas_e2e.py, with a held-out pool)
    summary = run_inprocess(HAPFNAS).summary

    assert summary["hapfnas"]["transfer_source"] == "synthetic"
    assert "transfer.source=auto -> synthetic" in capsys.readouterr().out
    assert summary["num_clients_evaluated"] == 4


# -- 3. per-client architecture, cost and budget; the table counts them: beside the real HAPFNAS
# run that serves them, in tests/test_hapfnas_e2e.py


# -- 4. the README matches the code ----------------------------------------------------------------
def test_readme_lists_every_method_and_subcommand_and_no_planned_method() -> None:
    readme = (REPO / "README.md").read_text()

    assert "planned" not in readme
    for method in METHODS:
        assert f"| `{method}` |" in readme or f"| `{method}` /" in readme \
            or f"/ `{method}` |" in readme, method
        assert f"`{method}`" in readme.split("| `method/` |")[1].splitlines()[0], method
    for name in SUBCOMMANDS:
        assert f"pfednas {name}" in readme, name
    assert "same budgets" not in readme


# -- 5. the console: our lines once, Flower's notices in logs/ (the real run's: test_e2e.py) -----
def test_console_line_routes_our_lines_warnings_and_flower_notices() -> None:
    shown: set[str] = set()

    assert console_line("[pfednas] round 1/2 | 3.0s\n", shown) is not None
    assert console_line("[pfednas] round 1/2 | 3.0s\n", shown) is None  # not twice
    assert console_line("| method | fedavg |\n", shown) is not None
    assert console_line("\x1b[93mWARNING \x1b[0m:   A client failed: boom\n", shown) is not None
    assert console_line("\x1b[93mWARNING \x1b[0m:   Since flwr 1.32, default simulated "
                        "SuperNodes changed from 10 to 2.\n", shown) is None
    assert console_line("\x1b[92mINFO \x1b[0m:      Starting Flower Simulation\n", shown) is None


# -- 7., 8. quick intermediate evaluations, a missing client stated (the real run's: test_e2e.py)
def test_missing_clients_pass_only_when_allowed() -> None:
    summary = {"clients_missing": [2, 5], "num_clients_evaluated": 8, "method": "fedavg",
               "dataset": "digits", "personalized_acc_mean": 0.9, "personalized_acc_std": 0.1,
               "personalized_acc_min": 0.7, "personalized_acc_p10": 0.75, "rounds": 2,
               "wall_seconds": 1.0, "bytes_up": 0, "bytes_down": 0}

    assert "misses 2 of 10 clients (ids 2, 5)" in str(missing_clients_error(summary,
                                                                             allowed=False))
    assert missing_clients_error(summary, allowed=True) is None
    assert missing_clients_error({**summary, "clients_missing": []}, allowed=False) is None
    assert "8 of 10 (2 MISSING)" in format_table(summary)


# -- 9. pfednas --help lists the subcommands ------------------------------------------------------
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_subcommands_groups_and_options(flag: str) -> None:
    result = subprocess.run([str(PFEDNAS), flag], capture_output=True, text=True, check=False,
                            timeout=120)

    assert result.returncode == 0, result.stderr[-2000:]
    for name, (_, text) in SUBCOMMANDS.items():
        assert f"  {name}" in result.stdout and text in result.stdout, name
    assert "config groups (GROUP=CHOICE):" in result.stdout  # then every option, described
    assert "  federation.num_clients=20  # K: clients in the federation" in result.stdout
