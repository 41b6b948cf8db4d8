"""overlap_average over every registered space (Prepare / Execute / Assert)."""

from __future__ import annotations

import numpy as np
import pytest

from pfednas.nas.merge import overlap_average
from pfednas.search import SPACES, SearchSpace, Supernet, get_space


@pytest.fixture(scope="module", params=sorted(SPACES))
def setup(request: pytest.FixtureRequest) -> tuple[SearchSpace, Supernet]:
    space = get_space(request.param)
    return space, space.build_supernet(num_classes=10, in_channels=1, image_size=8)


def _perturbed(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    return [
        a + rng.integers(1, 5, size=a.shape).astype(a.dtype)
        if np.issubdtype(a.dtype, np.integer)
        else (a + rng.normal(size=a.shape)).astype(a.dtype)
        for a in arrays
    ]


def test_single_client_overwrites_its_region_only(setup: tuple[SearchSpace, Supernet]) -> None:
    space, net = setup
    rng = np.random.default_rng(0)
    arch = space.sample(rng)
    base, regions = net.state_arrays(), net.regions(arch)
    client = _perturbed(net.slice(arch), rng)

    merged = overlap_average(base, [(regions, client, 3.0)])

    covered = [np.zeros(a.shape, bool) for a in base]
    for (i, where), value in zip(regions, client, strict=True):
        np.testing.assert_allclose(merged[i][where], value, rtol=1e-6, atol=1e-6)
        covered[i][where] = True
    for m, b, c in zip(merged, base, covered, strict=True):
        assert m.dtype == b.dtype
        np.testing.assert_array_equal(m[~c], b[~c])


def test_identical_archs_equal_weighted_fedavg(setup: tuple[SearchSpace, Supernet]) -> None:
    space, net = setup
    rng = np.random.default_rng(1)
    arch = space.sample(rng)
    regions = net.regions(arch)
    clients = [_perturbed(net.slice(arch), rng) for _ in range(3)]
    weights = [10.0, 30.0, 60.0]

    merged = overlap_average(
        net.state_arrays(), [(regions, c, w) for c, w in zip(clients, weights, strict=True)]
    )

    for j, (i, where) in enumerate(regions):
        values = [c[j] for c in clients]
        if np.issubdtype(values[0].dtype, np.integer):
            expected = np.max(values, axis=0)  # integer buffers: max over clients
        else:
            expected = sum(
                w * v.astype(np.float64) for w, v in zip(weights, values, strict=True)
            ) / sum(weights)
        np.testing.assert_allclose(merged[i][where], expected, rtol=1e-5, atol=1e-6)


def test_overlap_divides_by_coverage() -> None:
    base = [np.zeros((4,), np.float32), np.array(7, np.int64)]
    small = ([(0, (slice(0, 2),)), (1, ())], [np.array([2.0, 2.0], np.float32), np.array(3)], 1.0)
    large = (
        [(0, (slice(0, 3),)), (1, ())],
        [np.array([4.0, 4.0, 4.0], np.float32), np.array(5)],
        1.0,
    )

    merged = overlap_average(base, [small, large])

    np.testing.assert_allclose(merged[0], [3.0, 3.0, 4.0, 0.0])
    assert merged[1].dtype == np.int64 and int(merged[1]) == 5
    assert base[0].sum() == 0  # inputs untouched


def test_zero_weight_and_no_contribution_keep_values() -> None:
    base = [np.arange(3, dtype=np.float32)]
    merged = overlap_average(base, [([(0, (slice(0, 3),))], [np.ones(3, np.float32)], 0.0)])
    np.testing.assert_array_equal(merged[0], base[0])
    np.testing.assert_array_equal(overlap_average(base, [])[0], base[0])


def test_merge_loads_back_into_supernet(setup: tuple[SearchSpace, Supernet]) -> None:
    space, net = setup
    rng = np.random.default_rng(2)
    archs = [space.sample(rng) for _ in range(3)]
    merged = overlap_average(
        net.state_arrays(), [(net.regions(a), net.slice(a), 1.0) for a in archs]
    )
    for m, b in zip(merged, net.state_arrays(), strict=True):
        np.testing.assert_allclose(
            m, b, rtol=1e-6, atol=1e-6
        )  # averaging copies of itself: unchanged
    net.load_state_arrays(merged)


def _per_entry_definition(
    supernet_arrays: list[np.ndarray], contributions: list[tuple[list, list, object]]
) -> list[np.ndarray]:
    """The merge by its definition: full-size float64 sums and coverage, client by client."""
    out = [a.copy() for a in supernet_arrays]
    sums: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    maxima: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for regions, arrays, weight in contributions:
        for (i, where), value in zip(regions, arrays, strict=True):
            base = supernet_arrays[i]
            if np.issubdtype(base.dtype, np.integer):
                if i not in maxima:
                    maxima[i] = (
                        np.full_like(base, np.iinfo(base.dtype).min),
                        np.zeros_like(base, bool),
                    )
                best, hit = maxima[i]
                best[where] = np.maximum(best[where], np.asarray(value, base.dtype))
                hit[where] = True
            elif weight > 0:  # type: ignore[operator]
                total, coverage = sums.setdefault(i, (np.zeros(base.shape), np.zeros(base.shape)))
                total[where] += weight * value  # type: ignore[operator]
                coverage[where] += weight
    for i, (total, coverage) in sums.items():
        covered = coverage > 0
        out[i][covered] = (total[covered] / coverage[covered]).astype(out[i].dtype)
    for i, (best, hit) in maxima.items():
        out[i][hit] = best[hit]
    return out


def test_matches_the_per_entry_definition_bit_for_bit(setup: tuple[SearchSpace, Supernet]) -> None:
    space, net = setup
    rng = np.random.default_rng(3)
    base = net.state_arrays()
    weights: list[object] = [1.0, 3, np.float32(2.5), np.float64(0.1), 0.0, 7.25, np.int64(4)]
    for trial in range(3):
        archs = [space.sample(rng) for _ in range(7)]
        if trial == 0:
            archs = archs[:1] * 4  # one region per tensor: the grouped path
        contributions = []
        for arch, weight in zip(archs, weights, strict=False):
            client = _perturbed(net.slice(arch), rng)
            if trial == 2:  # signed zeros must come out as in the definition
                client = [a if np.issubdtype(a.dtype, np.integer) else -0.0 * a for a in client]
            contributions.append((net.regions(arch), client, weight))

        merged = overlap_average(base, contributions)

        expected = _per_entry_definition(base, contributions)
        for m, e in zip(merged, expected, strict=True):
            assert m.dtype == e.dtype and m.shape == e.shape
            assert m.tobytes() == e.tobytes()
