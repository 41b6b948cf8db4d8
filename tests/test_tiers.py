"""Accuracy by device tier: per-client rows grouped by budget (discrete levels, else budget
quintiles), in ``summary.json``, the console table and ``pfednas report``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from pfednas.app.results import (
    accuracy_by_tier,
    format_table,
    rate_text,
    split_even,
    summarize,
    tier_table,
)
from pfednas.config import compose
from pfednas.records import RoundRecord
from pfednas.report.cli import build_report
from pfednas.report.collect import Run, find_run_dirs
from pfednas.report.tiers import pooled_tiers, tier_series

MIB = 2**20
RATES = (1, 1 / 2, 1 / 4, 1 / 8, 1 / 16)


def _row(client: int, budget: float | None, accuracy: float, **extra: Any) -> dict[str, Any]:
    row = {"client_id": client, "accuracy": accuracy, "num_params": 100, **extra}
    if budget is not None:
        row.update(budget=budget, budget_metric="memory")
    return row


def _levels() -> list[dict[str, Any]]:
    """Ten clients, two per HeteroFL rate; the budget of rate r is 16 r MiB."""
    return [_row(i, 16 * MIB * RATES[i % 5], 0.5 + 0.1 * (i % 5) + 0.02 * (i // 5),
                 accuracy_no_ft=0.3 + 0.1 * (i % 5), params=1000 * (i % 5 + 1),
                 within_budget=i != 4, level=RATES[i % 5]) for i in range(10)]


# -- the pure grouping --------------------------------------------------------------------------
def test_discrete_levels_are_one_tier_each_labelled_by_rate_smallest_first() -> None:
    tiers = accuracy_by_tier(_levels())

    assert [t["tier"] for t in tiers] == ["r=1/16", "r=1/8", "r=1/4", "r=1/2", "r=1"]
    smallest = tiers[0]  # clients 4 and 9
    assert smallest == {"tier": "r=1/16", "clients": 2, "budget_metric": "memory",
                        "budget_min": float(MIB), "budget_max": float(MIB), "level": 1 / 16,
                        "accuracy": pytest.approx(0.91), "accuracy_no_ft": pytest.approx(0.7),
                        "params": 5000.0, "within_budget_share": 0.5}
    assert [t["clients"] for t in tiers] == [2] * 5
    assert [t["within_budget_share"] for t in tiers[1:]] == [1.0] * 4


def test_discrete_budgets_without_levels_are_labelled_by_their_mib() -> None:
    rows = [_row(i, MIB * (1 + i % 3), 0.6) for i in range(9)]

    tiers = accuracy_by_tier(rows)

    assert [(t["tier"], t["clients"]) for t in tiers] == [("1.00 MiB", 3), ("2.00 MiB", 3),
                                                          ("3.00 MiB", 3)]
    assert "level" not in tiers[0] and "params" not in tiers[0]


def test_continuous_budgets_are_cut_into_quintiles_as_equal_as_possible() -> None:
    # Prepare: 12 distinct budgets, dealt to clients in a shuffled order
    order = [7, 2, 11, 0, 5, 9, 1, 10, 3, 8, 6, 4]
    rows = [_row(c, MIB * (1 + 0.5 * rank), 0.5 + 0.01 * rank) for c, rank in enumerate(order)]

    # Execute
    tiers = accuracy_by_tier(rows)

    # Assert: sizes 3, 3, 2, 2, 2 by budget rank; each tier's range and mean
    assert [t["tier"] for t in tiers] == ["Q1", "Q2", "Q3", "Q4", "Q5"]
    assert [t["clients"] for t in tiers] == [3, 3, 2, 2, 2]
    assert (tiers[0]["budget_min"], tiers[0]["budget_max"]) == (1.0 * MIB, 2.0 * MIB)
    assert (tiers[4]["budget_min"], tiers[4]["budget_max"]) == (6.0 * MIB, 6.5 * MIB)
    assert tiers[0]["accuracy"] == pytest.approx(0.51)
    assert tiers[4]["accuracy"] == pytest.approx(0.605)


def test_rows_without_a_finite_budget_have_no_tiers() -> None:
    assert accuracy_by_tier([_row(i, None, 0.5) for i in range(6)]) == []
    assert accuracy_by_tier([_row(i, float("inf"), 0.5) for i in range(6)]) == []
    assert accuracy_by_tier([]) == []
    partly = accuracy_by_tier([_row(0, None, 0.1), _row(1, MIB, 0.9)])
    assert [(t["clients"], t["accuracy"]) for t in partly] == [(1, 0.9)]


def test_fewer_clients_than_quintiles_give_one_group_each_never_an_empty_one() -> None:
    assert split_even(list(range(3)), 5) == [[0], [1], [2]]
    assert split_even(list(range(7)), 5) == [[0, 1], [2, 3], [4], [5], [6]]
    # three clients with continuous budgets: a tier each (at most 8 distinct budgets)
    tiers = accuracy_by_tier([_row(i, MIB * (1.1 + i), 0.5) for i in range(3)])
    assert [t["tier"] for t in tiers] == ["1.10 MiB", "2.10 MiB", "3.10 MiB"]


def test_a_figure_some_rows_lack_is_left_out_of_every_tier() -> None:
    rows = _levels()
    del rows[3]["accuracy_no_ft"]

    tiers = accuracy_by_tier(rows)

    assert all("accuracy_no_ft" not in t and "accuracy" in t for t in tiers)
    assert "as published" not in tier_table(tiers) and "| acc " in tier_table(tiers)


def test_rates_read_as_fractions() -> None:
    assert [rate_text(r) for r in (*RATES, 3 / 8, 0.7071)] == [
        "1", "1/2", "1/4", "1/8", "1/16", "3/8", "0.7071"]


# -- summary.json and the console table ---------------------------------------------------------
def _summary(evaluation: list[dict[str, Any]]) -> dict[str, Any]:
    return summarize(method="fedavg", dataset="digits", wall_seconds=1.0,
                     records=[RoundRecord(round=1, evaluation=evaluation, eval_kind="final")])


def test_summary_has_the_tiers_only_where_clients_have_budgets() -> None:
    levels = _summary([{**r, "loss": 1.0} for r in _levels()])
    plain = _summary([{**_row(i, None, 0.5), "loss": 1.0} for i in range(4)])

    assert levels["accuracy_by_tier"] == accuracy_by_tier(levels["per_client"])
    assert levels["per_client"][0]["level"] == 1.0  # the level survives into per_client
    assert "accuracy_by_tier" not in plain
    assert "accuracy by device tier" not in format_table(plain)


def test_console_table_shows_a_row_per_tier_with_both_figures() -> None:
    table = format_table(_summary([{**r, "loss": 1.0} for r in _levels()]))

    block = table[table.index("accuracy by device tier"):].splitlines()
    assert "| tier   | clients | budget MiB | acc +FT | as published | params | in budget |" \
        in block
    assert "| r=1/16 | 2       | 1.00       | 0.9100  | 0.7000       | 5,000  | 1/2       |" \
        in block
    # every line a table's: the launcher passes only those to the console
    assert all(line.startswith(("+-", "| ")) for line in table.splitlines())


# -- pfednas report ------------------------------------------------------------------------------
def _write_run(folder: Path, seed: int, rows: list[dict[str, Any]], method: str = "fedavg") -> Run:
    summary = {**_summary([{**r, "loss": 1.0} for r in rows]), "method": method, "seed": seed,
               "bytes_up": 10, "bytes_down": 20}
    config = OmegaConf.to_container(compose(["federation.num_clients=10", f"seed={seed}"]))
    assert isinstance(config, dict)
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "metrics.jsonl").write_text(json.dumps(
        RoundRecord(round=1, evaluation=rows, eval_kind="final").to_json()) + "\n")
    (folder / "resolved_config.yaml").write_text(OmegaConf.to_yaml(config))
    return Run(path=folder, summary=summary, rounds=[],
               config={str(k): v for k, v in config.items()})


def test_report_pools_seeds_by_tier_and_writes_the_plot_and_the_section(tmp_path: Path) -> None:
    # Prepare: two seeds of the levels, the second 0.1 less accurate everywhere
    second = [{**r, "accuracy": r["accuracy"] - 0.1} for r in _levels()]
    runs = [_write_run(tmp_path / "runs" / f"seed={s}", s, rows)
            for s, rows in ((0, _levels()), (1, second))]

    # Execute
    pooled = pooled_tiers(runs)
    series = tier_series("fedavg", runs)
    table = build_report(find_run_dirs([tmp_path / "runs"]), tmp_path / "report")

    # Assert
    assert [(t["tier"], t["clients"]) for t in pooled] == [
        ("r=1/16", 4), ("r=1/8", 4), ("r=1/4", 4), ("r=1/2", 4), ("r=1", 4)]
    assert pooled[0]["accuracy"] == pytest.approx(0.86)
    assert series is not None and series.tier_budgets.tolist() == [1, 2, 4, 8, 16]
    assert len(series.accuracies) == 20
    assert (tmp_path / "report" / "acc_by_tier.png").is_file()
    text = table.read_text()
    assert "## Accuracy by device tier" in text
    assert "| fedavg | 0.5 | mobilenetv3 | 0,1 | r=1/16 | 4 | 1.00 MiB | 0.8600 | 0.7000 | " \
        "5,000 | 50% |" in text


def test_report_of_runs_without_budgets_has_no_tier_section(tmp_path: Path) -> None:
    _write_run(tmp_path / "runs" / "seed=0", 0, [_row(i, None, 0.5) for i in range(10)])

    table = build_report(find_run_dirs([tmp_path / "runs"]), tmp_path / "report")

    assert "device tier" not in table.read_text()
    assert not (tmp_path / "report" / "acc_by_tier.png").exists()
