"""The report's figures and table read as they should (issue 63 item 8): rounds on whole
ticks, every title and label inside its figure, α only where it dealt the data, a small run's
compute never 0.00, no column without a figure."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text

from pfednas.report import plots
from pfednas.report.archs import ArchMatrix
from pfednas.report.cli import panel_title
from pfednas.report.table import aggregate, markdown, run_row
from tests.test_report import _run

LONG = ("perfedrlnas on fashion_mnist, pathological classes_per_client=2, rotation_groups=4 "
        "seed=3, K=20 N=5 R=40 E=3, simulated: 7 distinct of 20; Spearman ρ(label dist, "
        "arch dist) = 0.42")


def _texts(fig: Figure) -> list[Text]:
    """Every title and axis label the figure draws."""
    texts = [fig._suptitle] if fig._suptitle is not None else []  # noqa: SLF001
    for ax in fig.axes:
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label]
    return [t for t in texts if t.get_text()]


def _outside(fig: Figure) -> list[str]:
    """The titles and labels that reach past the figure's edges, once it is drawn."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    box = fig.bbox
    return [t.get_text() for t in _texts(fig)
            if (e := t.get_window_extent(renderer)).x0 < box.x0 - 1 or e.x1 > box.x1 + 1
            or e.y0 < box.y0 - 1 or e.y1 > box.y1 + 1]


def _curve(rounds: list[int]) -> plots.Curve:
    r = np.array(rounds)
    return plots.Curve("fedavg", r, np.linspace(0.5, 0.9, len(r)), r * 10.0, r * 20.0)


@pytest.mark.parametrize("rounds", [[2], [1, 2, 3], [5, 10, 15, 20, 25, 30, 35, 40]])
def test_round_axes_tick_whole_rounds(rounds: list[int]) -> None:
    figures = [plots.accuracy_curves({"digits α=0.5": [_curve(rounds)]}, x="round"),
               plots.loss_curves({"digits α=0.5": [_curve(rounds)]})]

    for fig in figures:
        fig.canvas.draw()
        ax = fig.axes[0]
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]

        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_every_title_and_label_lies_inside_its_figure() -> None:
    # Prepare: a heatmap of four clients, a partition and curves, each with a long title
    rng = np.random.default_rng(0)
    matrix = ArchMatrix(client_ids=(0, 1, 2, 3), dimensions=tuple(f"s{i}_width" for i in range(6)),
                        num_choices=(3,) * 6, indices=rng.integers(0, 3, (4, 6)))
    histograms = rng.integers(1, 30, (4, 10))

    # Execute
    figures = {"heatmap": plots.arch_heatmap(matrix, histograms, title=LONG),
               "partition": plots.partition_figure(histograms, None, title=LONG),
               "curves": plots.accuracy_curves({LONG: [_curve([1, 2])]}, x="wall"),
               "clients": plots.client_accuracy_distribution({LONG: {"fedavg": [0.5, 0.7]}})}

    # Assert
    assert {name: _outside(fig) for name, fig in figures.items()} == {
        name: [] for name in figures}


def test_alpha_is_in_a_title_only_where_it_dealt_the_data() -> None:
    def dealt(partitioner: str) -> str:
        run = _run("fedavg", 0, [0.5, 0.7])
        config = {**run.config, "dataset": {**run.config["dataset"],
                                            "partitioner": partitioner}}
        return panel_title(dataclasses.replace(run, config=config))

    assert dealt("dirichlet") == "digits α=0.5"
    assert dealt("iid") == "digits, iid"
    assert "α" not in dealt("natural_id") and "α" not in dealt("shard")


def test_a_small_runs_table_shows_its_compute_and_no_column_without_figures() -> None:
    # Prepare: two-round runs: 2,160 client sample-passes; no load, ratios or seeds' spread
    rows = [dataclasses.replace(run_row(_run(m, 0, [0.5, 0.7])), sample_passes=2160,
                                simulated_seconds=None, simulated_seconds_heavy=None)
            for m in ("fedavg", "local")]

    # Execute
    text = markdown(aggregate(rows, ["fedavg", "local"]))

    # Assert
    header, _, first, *_ = [line for line in text.splitlines() if line.startswith("|")]
    columns = [c.strip() for c in header.strip("|").split("|")]
    cells = dict(zip(columns, (c.strip() for c in first.strip("|").split("|")), strict=True))
    assert cells["client sample-passes (k)"] == "2.16"
    assert not {"load", "± std seeds", "sim. s", "err ÷ best baseline"} & set(columns)
    assert cells["method"] == "fedavg" and cells["α"] == "0.5"
