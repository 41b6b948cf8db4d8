"""The results page's time axis per row (pfednas.report.time_table) on constructed runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from pfednas.report.collect import Run
from pfednas.report.time_table import row_figures, time_cell, within_cell


def _run(label: str, seed: int, points: list[tuple[float, float]], *, no_ft: float | None = None
         ) -> Run:
    """A run whose round r (1-based) takes the given simulated seconds and, where the
    accuracy is not None, evaluates one client at it."""
    rounds = []
    for r, (seconds, accuracy) in enumerate(points, start=1):
        evaluation = [] if accuracy is None else [{"client_id": 0, "accuracy": accuracy}]
        if evaluation and no_ft is not None and r == len(points):
            evaluation[0]["accuracy_no_ft"] = no_ft
        rounds.append({"round": r, "simulated_seconds": seconds, "train": [],
                       "evaluation": evaluation})
    config = {"label": label, "dataset": {"alpha": 0.3}, "seed": seed,
              "federation": {"num_clients": 1}, "search_space": {"name": "mobilenetv3"}}
    return Run(Path(f"/{label}/{seed}"), {"method": label, "dataset": "d", "seed": seed},
               rounds, config)


def test_time_to_the_best_baselines_accuracy_and_accuracy_within_fedavgs_time() -> None:
    # Prepare: per seed, the best baseline reaches 0.8 at 40 s; FedAvg+FT runs 50 s; the NAS
    # row reaches 0.8 at 20 s on seed 0 and at 30 s on seed 1
    best = {0: _run("fedbabu", 0, [(20, 0.5), (20, 0.8)]),
            1: _run("fedbabu", 1, [(20, 0.5), (20, 0.8)])}
    fedavg = {s: _run("fedavg", s, [(25, 0.6), (25, 0.79)]) for s in (0, 1)}
    nas = [_run("nas", 0, [(10, 0.7), (10, 0.8), (40, 0.85)]),
           _run("nas", 1, [(10, 0.7), (20, 0.81), (30, 0.84)])]

    # Execute
    figures = row_figures(nas, best, fedavg, published=False, heavy_tailed=False)
    short = row_figures([_run("nas", 0, [(10, 0.7), (10, 0.75)])], best, fedavg,
                        published=False, heavy_tailed=False)

    # Assert: ratios 20/40 and 30/40; within 50 s: 0.8 (seed 0, at 20 s) and 0.81 (at 30 s)
    assert figures.seconds == pytest.approx((60 + 60) / 2)
    assert figures.to_target == pytest.approx((0.5 + 0.75) / 2) and figures.reached == 2
    assert figures.within == pytest.approx((0.8 + 0.81) / 2)
    # the cell prints the accuracy it timed to: the best baseline's final 0.8
    assert time_cell(figures) == "0.62× (target 0.8000)" and within_cell(figures) == "0.8050"
    assert short.to_target is None and time_cell(short) == "not reached (0/1; target 0.8000)"


def test_a_row_as_published_is_timed_on_its_figure_without_fine_tuning() -> None:
    # Prepare: fine-tuned 0.9 at the end, 0.6 as published
    best = {0: _run("fedbabu", 0, [(10, 0.7)])}
    fedavg = {0: _run("fedavg", 0, [(10, 0.7)])}
    nas = [_run("nas", 0, [(5, 0.5), (5, 0.9)], no_ft=0.6)]

    # Execute
    ft = row_figures(nas, best, fedavg, published=False, heavy_tailed=False)
    published = row_figures(nas, best, fedavg, published=True, heavy_tailed=False)

    # Assert: +FT reaches 0.7 at its last evaluation; as published it never does
    assert ft.to_target == pytest.approx(1.0) and published.to_target is None
    assert published.within == pytest.approx(0.6)
