"""Tests for pfednas.data.shift: feature-skew options, per-client draws and transformations."""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

import numpy as np
import pytest

from pfednas.data.shift import ClientShift, FeatureSkew, apply_shift, draw_shifts
from pfednas.seeding import FEATURE_NOISE, FEATURE_SKEW, numpy_rng

SIDE = 28


def _images(n: int = 64, channels: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, channels, SIDE, SIDE), dtype=np.float32)


def _checkerboard(n: int = 4) -> np.ndarray:
    board = (np.indices((SIDE, SIDE)).sum(axis=0) % 2).astype(np.float32)
    return np.broadcast_to(board, (n, 1, SIDE, SIDE)).copy()


def _flat(value: float, n: int = 8) -> np.ndarray:
    return np.full((n, 1, SIDE, SIDE), value, dtype=np.float32)


def _noise_rng(client: int = 0) -> np.random.Generator:
    return numpy_rng(0, FEATURE_NOISE, client)


# --------------------------------------------------------------------------- options


def test_defaults_are_inactive_and_identity_leaves_pixels_unchanged() -> None:
    # Prepare
    images = _images()
    # Execute
    shifts = draw_shifts(FeatureSkew(), 5, numpy_rng(0, FEATURE_SKEW))
    out = apply_shift(images, shifts[0], _noise_rng())
    # Assert
    assert not FeatureSkew().active
    assert FeatureSkew().problems() == []
    assert all(s == ClientShift() and s.identity for s in shifts)
    assert np.array_equal(out, images)
    assert shifts[0].label() == "none"
    assert shifts[0].record() == {}


@pytest.mark.parametrize("key, value", [
    ("rotation_groups", -1), ("rotation_groups", 2.5),
    ("brightness", -0.1), ("brightness", 1.5), ("brightness", math.nan),
    ("contrast", 1.0), ("contrast", -0.2), ("contrast", math.inf),
    ("noise", -0.01), ("noise", math.nan),
    ("blur", -1.0), ("blur", math.inf),
    ("resolution", 0.0), ("resolution", 1.2), ("resolution", math.nan),
])
def test_problems_name_the_key_and_value_of_each_bad_option(key: str, value: float) -> None:
    # Prepare
    options: dict[str, Any] = {key: value}
    skew = FeatureSkew(**options)
    # Execute
    problems = skew.problems()
    # Assert
    assert len(problems) == 1
    assert problems[0].startswith(f"dataset.feature_skew.{key} must be ")
    assert problems[0].endswith(f"got {value!r}")
    with pytest.raises(ValueError, match=f"dataset.feature_skew.{key}"):
        draw_shifts(skew, 4, numpy_rng(0, FEATURE_SKEW))


def test_edge_values_are_valid_and_any_kind_makes_the_skew_active() -> None:
    # Prepare
    edges = FeatureSkew(rotation_groups=1, brightness=1.0, contrast=0.0, resolution=1.0)
    kinds = [FeatureSkew(rotation_groups=2), FeatureSkew(brightness=0.1),
             FeatureSkew(contrast=0.1), FeatureSkew(noise=0.1), FeatureSkew(blur=0.5),
             FeatureSkew(resolution=0.5)]
    # Execute
    problems = [s.problems() for s in [edges, *kinds]]
    # Assert
    assert problems == [[]] * 7
    assert not FeatureSkew(rotation_groups=1).active
    assert all(s.active for s in kinds)


# --------------------------------------------------------------------------- draws


def test_same_seed_gives_same_shifts_and_pixels_and_another_seed_differs() -> None:
    # Prepare
    skew = FeatureSkew(rotation_groups=4, brightness=0.2, contrast=0.3, noise=0.05,
                       blur=1.0, resolution=0.6)
    images = _images()
    # Execute
    first = draw_shifts(skew, 8, numpy_rng(3, FEATURE_SKEW))
    second = draw_shifts(skew, 8, numpy_rng(3, FEATURE_SKEW))
    other = draw_shifts(skew, 8, numpy_rng(4, FEATURE_SKEW))
    pixels = apply_shift(images, first[2], numpy_rng(3, FEATURE_NOISE, 2))
    again = apply_shift(images, second[2], numpy_rng(3, FEATURE_NOISE, 2))
    # Assert
    assert first == second
    assert first != other
    assert np.array_equal(pixels, again)


@pytest.mark.parametrize("groups, clients", [(2, 7), (3, 10), (4, 4), (4, 9)])
def test_rotation_groups_are_balanced_and_evenly_spaced(groups: int, clients: int) -> None:
    # Prepare
    skew = FeatureSkew(rotation_groups=groups)
    # Execute
    shifts = draw_shifts(skew, clients, numpy_rng(0, FEATURE_SKEW))
    # Assert
    sizes = Counter(s.group for s in shifts)
    assert set(sizes) == set(range(groups))
    assert max(sizes.values()) - min(sizes.values()) <= 1
    assert all(s.group is not None and s.rotation == s.group * 360 / groups for s in shifts)


def test_group_assignment_is_a_seeded_permutation() -> None:
    # Prepare
    skew = FeatureSkew(rotation_groups=2)
    # Execute
    assignments = {tuple(s.group for s in draw_shifts(skew, 10, numpy_rng(seed, FEATURE_SKEW)))
                   for seed in range(5)}
    # Assert: not simply client i in group i % k for every seed
    assert len(assignments) > 1


def test_one_kind_draws_the_same_when_other_kinds_switch_on() -> None:
    # Prepare
    alone = FeatureSkew(rotation_groups=3, noise=0.1)
    crowded = FeatureSkew(rotation_groups=3, brightness=0.3, contrast=0.5, noise=0.1,
                          blur=2.0, resolution=0.5)
    # Execute
    a = draw_shifts(alone, 12, numpy_rng(0, FEATURE_SKEW))
    b = draw_shifts(crowded, 12, numpy_rng(0, FEATURE_SKEW))
    # Assert
    kept = [(s.group, s.rotation, s.noise) for s in a]
    assert kept == [(s.group, s.rotation, s.noise) for s in b]
    assert all(s.brightness != 0 and s.blur != 0 and s.resolution != 1 for s in b)


def test_draws_stay_within_their_ranges() -> None:
    # Prepare
    skew = FeatureSkew(brightness=0.2, contrast=0.3, noise=0.05, blur=1.5, resolution=0.6)
    # Execute
    shifts = draw_shifts(skew, 200, numpy_rng(1, FEATURE_SKEW))
    # Assert
    assert all(-0.2 <= s.brightness <= 0.2 and 0.7 <= s.contrast <= 1.3 for s in shifts)
    assert all(0 <= s.noise <= 0.05 and 0 <= s.blur <= 1.5 for s in shifts)
    assert all(0.6 <= s.resolution <= 1 and s.group is None for s in shifts)
    assert min(s.brightness for s in shifts) < 0 < max(s.brightness for s in shifts)


# --------------------------------------------------------------------------- transformations


def test_quarter_turns_equal_rot90_exactly() -> None:
    # Prepare
    images = _images(channels=3)
    # Execute
    turned = [apply_shift(images, ClientShift(rotation=90.0 * q), _noise_rng()) for q in (1, 2, 3)]
    # Assert
    for q, out in zip((1, 2, 3), turned, strict=True):
        assert np.array_equal(out, np.rot90(images, q, axes=(2, 3)))


def test_other_angles_turn_counter_clockwise_like_quarter_turns() -> None:
    # Prepare: one bright pixel right of the centre
    images = np.zeros((1, 1, 9, 9), dtype=np.float32)
    images[0, 0, 4, 8] = 1.0
    # Execute
    quarter = apply_shift(images, ClientShift(rotation=90.0), _noise_rng())
    eighth = apply_shift(images, ClientShift(rotation=45.0), _noise_rng())
    # Assert: right -> top at 90°, right -> top-right at 45°
    assert np.unravel_index(np.argmax(quarter[0, 0]), (9, 9)) == (0, 4)
    row, col = np.unravel_index(np.argmax(eighth[0, 0]), (9, 9))
    assert row in (1, 2) and col in (6, 7)


def test_brightness_shifts_the_mean_by_its_offset() -> None:
    # Prepare
    images = _flat(0.4)
    # Execute
    up = apply_shift(images, ClientShift(brightness=0.25), _noise_rng())
    down = apply_shift(images, ClientShift(brightness=-0.25), _noise_rng())
    # Assert
    assert up.mean() == pytest.approx(0.65, abs=1e-6)
    assert down.mean() == pytest.approx(0.15, abs=1e-6)


def test_contrast_scales_the_spread_around_each_image_mean() -> None:
    # Prepare: values in [0.4, 0.6] so no pixel is clipped
    images = 0.4 + 0.2 * _images()
    # Execute
    low = apply_shift(images, ClientShift(contrast=0.5), _noise_rng())
    high = apply_shift(images, ClientShift(contrast=1.5), _noise_rng())
    # Assert
    std = images.std(axis=(1, 2, 3))
    np.testing.assert_allclose(low.std(axis=(1, 2, 3)), 0.5 * std, rtol=1e-4)
    np.testing.assert_allclose(high.std(axis=(1, 2, 3)), 1.5 * std, rtol=1e-4)
    np.testing.assert_allclose(low.mean(axis=(1, 2, 3)), images.mean(axis=(1, 2, 3)), atol=1e-6)


def test_noise_gives_a_flat_image_its_std() -> None:
    # Prepare
    images = _flat(0.5, n=32)
    # Execute
    out = apply_shift(images, ClientShift(noise=0.05), _noise_rng())
    # Assert
    assert out.std() == pytest.approx(0.05, rel=0.02)
    assert out.mean() == pytest.approx(0.5, abs=1e-3)
    assert not np.array_equal(out, apply_shift(images, ClientShift(noise=0.05), _noise_rng(1)))


def test_blur_lowers_the_variance_of_a_checkerboard() -> None:
    # Prepare
    board = _checkerboard()
    # Execute
    light = apply_shift(board, ClientShift(blur=0.5), _noise_rng())
    heavy = apply_shift(board, ClientShift(blur=2.0), _noise_rng())
    # Assert
    assert heavy.var() < light.var() < board.var()
    assert heavy.mean() == pytest.approx(board.mean(), abs=1e-3)


def test_lower_resolution_changes_a_checkerboard_and_keeps_flat_images_and_shape() -> None:
    # Prepare
    board = _checkerboard()
    flat = _flat(0.3)
    # Execute
    coarse = apply_shift(board, ClientShift(resolution=0.5), _noise_rng())
    flat_out = apply_shift(flat, ClientShift(resolution=0.5), _noise_rng())
    # Assert
    assert coarse.shape == board.shape
    assert coarse.var() < 0.1 * board.var()
    assert coarse.mean() == pytest.approx(board.mean(), abs=1e-3)
    np.testing.assert_allclose(flat_out, flat, atol=1e-6)


def test_output_is_float32_in_the_unit_range_with_the_input_shape() -> None:
    # Prepare
    images = _images(n=16, channels=3).astype(np.float64)
    before = images.copy()
    strong = ClientShift(rotation=30.0, brightness=0.6, contrast=1.9, noise=0.5, blur=1.0,
                         resolution=0.4)
    # Execute
    out = apply_shift(images, strong, _noise_rng())
    # Assert
    assert out.dtype == np.float32 and out.shape == images.shape
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.array_equal(images, before)


def test_record_is_json_ready_and_keeps_only_what_differs_from_the_identity() -> None:
    # Prepare
    shift = ClientShift(rotation=90.0, noise=0.05, group=1)
    skew = FeatureSkew(rotation_groups=4, brightness=0.2, contrast=0.3, noise=0.05,
                       blur=1.0, resolution=0.6)
    # Execute
    record = shift.record()
    drawn = [s.record() for s in draw_shifts(skew, 6, numpy_rng(0, FEATURE_SKEW))]
    # Assert
    assert record == {"rotation": 90.0, "noise": 0.05, "group": 1}
    assert json.loads(json.dumps(drawn)) == drawn
    assert ClientShift(group=0).record() == {"group": 0}
    assert shift.label() == "rot 90°, noise 0.05"
