"""``pfednas partition``: a run's partition shown before anything trains (issue 63)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pfednas.config import compose, settings_from_cfg
from pfednas.data import partition, partition_record
from pfednas.data.preview import client_splits, format_splits
from pfednas.report.preview import main

RUN = ["dataset.partitioner=pathological", "dataset.classes_per_client=2",
       "federation.num_clients=6"]


def test_each_clients_sizes_and_classes_are_its_splits() -> None:
    labels = [(np.array([0, 0, 1]), np.array([1]), np.array([0])),
              (np.array([2, 2, 2, 2]), np.array([], dtype=int), np.array([2]))]

    rows = client_splits(labels, shifts=["rot 90", "rot 0"])

    assert [(r.samples, r.train, r.val, r.test, r.classes) for r in rows] == [
        (5, 3, 1, 1, 2), (5, 4, 0, 1, 1)]
    assert rows[0].largest == ((0, 0.6), (1, 0.4)) and rows[1].largest == ((2, 1.0),)
    text = format_splits(rows, class_names=["zero", "one", "two"])
    assert "zero 60%, one 40%" in text and "feature skew" in text and "rot 90" in text
    assert text.splitlines()[-1] == "2 clients, 10 samples: 5 to 5 per client (median 5), " \
        "1 to 2 classes"


def test_the_preview_shows_the_partition_a_run_deals_and_draws_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Execute
    code = main([*RUN, "--plot", str(tmp_path / "plot.png")])

    # Assert: one row per client, its samples those the run deals, two classes each
    out = capsys.readouterr().out
    assert code == 0 and (tmp_path / "plot.png").stat().st_size > 0
    spec = settings_from_cfg(compose(RUN)).data
    dealt = partition_record(spec)["partition"]["client_samples"]  # type: ignore[index]
    table = [line.split() for line in out.splitlines()[2:2 + spec.num_clients]]
    assert [int(row[1]) for row in table] == dealt == [p.size for p in partition(spec)]
    assert {row[5] for row in table} == {"2"}
    assert "pathological classes_per_client=2" in out.splitlines()[0]


def test_a_bad_override_stops_it_with_one_line_and_no_plot(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["dataset.partitioner=zipf", "--plot", str(tmp_path / "plot.png")])

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "dataset.partitioner: unknown 'zipf'" in err[0]
    assert not (tmp_path / "plot.png").exists()
