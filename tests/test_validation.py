"""Malformed updates are recognised before anything of them is used."""

from __future__ import annotations

import numpy as np
import pytest

from pfednas.clients.faulty import Fault
from pfednas.wire.validation import array_specs, check_arrays, check_metrics

GOOD = [np.zeros((2, 3), np.float32), np.array(4, np.int64)]
SPEC = array_specs(GOOD)


@pytest.mark.parametrize(("arrays", "reason"), [
    (GOOD[:1], "expected 2 arrays"),
    ([np.zeros((3, 3), np.float32), GOOD[1]], "shape"),
    ([np.zeros((2, 3), np.float64), GOOD[1]], "dtype"),
    ([np.full((2, 3), np.nan, np.float32), GOOD[1]], "NaN"),
    ([np.full((2, 3), np.inf, np.float32), GOOD[1]], "NaN or Inf"),
])
def test_bad_arrays_are_named(arrays: list[np.ndarray], reason: str) -> None:
    problem = check_arrays(arrays, SPEC)

    assert problem is not None and reason in problem


def test_good_arrays_pass() -> None:
    assert check_arrays([a.copy() for a in GOOD], SPEC) is None


@pytest.mark.parametrize(("metrics", "reason"), [
    ({}, "num_examples"),
    ({"num_examples": 0}, "outside"),
    ({"num_examples": -3}, "outside"),
    ({"num_examples": 10**12}, "outside"),
    ({"num_examples": 2.5}, "integer"),
    ({"num_examples": 10, "accuracy": 1.5}, "accuracy"),
    ({"num_examples": 10, "val_accuracy": -0.1}, "val_accuracy"),
    ({"num_examples": 10, "train_loss": float("nan")}, "not finite"),
    ({"num_examples": 10, "train_seconds": -1.0}, "train_seconds"),
])
def test_bad_metrics_are_named(metrics: dict, reason: str) -> None:
    problem = check_metrics(metrics)

    assert problem is not None and reason in problem


def test_good_metrics_pass() -> None:
    assert check_metrics({"num_examples": 54, "accuracy": 0.9, "train_seconds": 0.2}) is None


def test_fault_plan_from_both_config_forms() -> None:
    a = Fault.from_config({"clients": [1, 2], "kind": "nan", "rounds": [2]})
    b = Fault.from_config({"plan": {3: "raise"}})

    assert a.kind_for(1, 2) == "nan" and a.kind_for(1, 1) is None and a.kind_for(5, 2) is None
    assert b.kind_for(3, 7) == "raise"
    with pytest.raises(ValueError):
        Fault.from_config({"clients": [1], "kind": "explode"})
