from __future__ import annotations

import numpy as np
import pytest

from pfednas.nas.fedavg import weighted_average


def test_weighted_average_matches_hand_computed_values() -> None:
    a = [np.array([1.0, 2.0], dtype=np.float32), np.array([10], dtype=np.int64)]
    b = [np.array([3.0, 6.0], dtype=np.float32), np.array([20], dtype=np.int64)]

    out = weighted_average([(a, 1.0), (b, 3.0)])

    np.testing.assert_allclose(out[0], [2.5, 5.0])
    assert out[0].dtype == np.float32
    assert out[1].dtype == np.int64 and out[1][0] == 18  # 17.5 rounds to even


def test_weighted_average_of_one_update_is_that_update() -> None:
    a = [np.arange(6, dtype=np.float32).reshape(2, 3)]

    out = weighted_average([(a, 7.0)])

    np.testing.assert_array_equal(out[0], a[0])


@pytest.mark.parametrize("updates", [[], [([np.zeros(2)], 0.0)],
                                     [([np.zeros(2)], 1.0), ([np.zeros(3)], 1.0)]])
def test_weighted_average_rejects_bad_input(updates: list) -> None:
    with pytest.raises(ValueError):
        weighted_average(updates)


def test_weighted_average_keeps_zero_dim_arrays_as_arrays() -> None:
    a = [np.array(3, dtype=np.int64), np.array(1.0, dtype=np.float32)]

    out = weighted_average([(a, 1.0), (a, 1.0)])

    assert all(isinstance(x, np.ndarray) and x.shape == () for x in out)


def test_weighted_average_is_the_ordered_elementwise_sum_bit_for_bit() -> None:
    # A BLAS reduction (np.tensordot) rounds as the CPU's kernel sums: its last bits differ
    # between machines and a federated run diverges from them. The average must be the
    # element-wise sum in client order, which every IEEE-754 CPU rounds alike.
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(1000) for _ in range(5)]
    weights = rng.random(5) + 0.1

    out = weighted_average([([a], float(w)) for a, w in zip(arrays, weights, strict=True)])

    share = weights / weights.sum()
    want = np.zeros(1000)
    for w, a in zip(share, arrays, strict=True):
        want += float(w) * a
    assert np.array_equal(out[0], want)
