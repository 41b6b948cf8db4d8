"""One suite over every registered search space (Prepare / Execute / Assert)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pfednas.search import SPACES, Arch, SearchSpace, Supernet, get_space
from pfednas.search.space import TaskShape

TASK = TaskShape(num_classes=10, in_channels=1, image_size=8)
ATOL = 1e-5  # extract(a)(x) vs supernet(x, a), eval mode, float32


@pytest.fixture(scope="module", params=sorted(SPACES))
def space(request: pytest.FixtureRequest) -> SearchSpace:
    return get_space(request.param)


@pytest.fixture(scope="module")
def supernet(space: SearchSpace) -> Supernet:
    torch.manual_seed(0)
    net = space.build_supernet(
        num_classes=TASK.num_classes, in_channels=TASK.in_channels, image_size=TASK.image_size
    )
    _randomise_batchnorm(net)
    return net.eval()


def _randomise_batchnorm(net: torch.nn.Module) -> None:
    """Non-trivial running statistics, so that sliced buffers matter in eval mode."""
    gen = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


def _archs(space: SearchSpace, n: int = 3, seed: int = 0) -> list[Arch]:
    rng = np.random.default_rng(seed)
    return [space.min_arch(), space.max_arch(), *(space.sample(rng) for _ in range(n))]


def test_forward_backward_supernet_and_extracted(space: SearchSpace, supernet: Supernet) -> None:
    x = torch.randn(4, 1, 8, 8)
    arch = space.sample(np.random.default_rng(3))
    sub = supernet.extract(arch).train()

    supernet.train()
    try:
        supernet(x, arch).sum().backward()
    finally:
        supernet.eval()
    sub(x).sum().backward()

    assert supernet(x, arch).shape == (4, 10)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in supernet.parameters())
    assert all(p.grad is not None for p in sub.parameters())
    supernet.zero_grad(set_to_none=True)


def test_extract_matches_supernet_forward(space: SearchSpace, supernet: Supernet) -> None:
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    for arch in _archs(space):
        sub = supernet.extract(arch).eval()
        with torch.no_grad():
            expected, got = supernet(x, arch), sub(x)
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
        assert [tuple(t.shape) for t in sub.state_dict().values()] == [
            a.shape for a in supernet.slice(arch)
        ]


def test_extract_holds_copies(space: SearchSpace, supernet: Supernet) -> None:
    arch = space.max_arch()
    sub = supernet.extract(arch)
    before = supernet.state_arrays()
    with torch.no_grad():
        for p in sub.parameters():
            p.add_(1.0)
    after = supernet.state_arrays()
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_scatter_of_slice_restores_active_region_only(space: SearchSpace) -> None:
    net = space.build_supernet(num_classes=10, in_channels=1, image_size=8)
    arch = space.sample(np.random.default_rng(5))
    original = net.slice(arch)
    modified = [np.asarray(a + 1) for a in net.state_arrays()]
    net.load_state_arrays(modified)

    net.scatter(arch, original)

    state, regions = net.state_arrays(), net.regions(arch)
    expected = [a.copy() for a in modified]
    for (i, where), value in zip(regions, original, strict=True):
        expected[i][where] = value
    assert all(np.array_equal(a, b) for a, b in zip(state, expected, strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(state, modified, strict=True))


def test_closed_form_shapes_match_built_network(space: SearchSpace) -> None:
    for arch in _archs(space, n=4, seed=7):
        config = space.net_config(arch, TASK)
        fast = space.state_shapes(config, TASK)
        built = SearchSpace.state_shapes(space, config, TASK)
        assert fast == built


def test_cost_grows_from_min_to_max(space: SearchSpace, supernet: Supernet) -> None:
    small, large = (
        supernet.cost(space.min_arch(), batch_size=8),
        supernet.cost(space.max_arch(), batch_size=8),
    )
    assert 0 < small.params < large.params
    assert 0 < small.flops < large.flops
    assert 0 < small.memory_bytes < large.memory_bytes
    assert large.params == sum(p.numel() for p in supernet.parameters())
    assert large.payload_bytes == sum(a.nbytes for a in supernet.state_arrays())
    assert small.params == sum(p.numel() for p in supernet.extract(space.min_arch()).parameters())


def test_sample_follows_given_probabilities(space: SearchSpace) -> None:
    rng = np.random.default_rng(11)
    probs = [rng.dirichlet(np.ones(len(d.choices))) for d in space.dimensions]
    n = 4000

    draws = np.array([space.sample(rng, probs).indices for _ in range(n)])

    for d, p in enumerate(probs):
        freq = np.bincount(draws[:, d], minlength=len(p)) / n
        np.testing.assert_allclose(freq, p, atol=0.03)


def test_string_round_trip_and_encoding(space: SearchSpace) -> None:
    archs = _archs(space, n=20, seed=13)
    lengths = {space.encode(a).shape for a in archs}
    for arch in archs:
        text = arch.to_str()
        assert text.startswith(f"{space.name}:")
        assert space.arch_from_str(text) == arch
        assert space.arch_from_indices(arch.indices) == arch
    assert len(lengths) == 1
    assert hash(archs[0]) == hash(space.arch_from_str(archs[0].to_str()))


def test_head_parameter_names_exist(space: SearchSpace, supernet: Supernet) -> None:
    sub = supernet.extract(space.min_arch())
    body, head = sub.split_body_head()
    assert head == sub.head_parameter_names()
    assert set(body).isdisjoint(head) and body


def test_other_input_shapes(space: SearchSpace) -> None:
    for channels, size in ((1, 28), (3, 32)):
        net = space.build_supernet(num_classes=5, in_channels=channels, image_size=size).eval()
        with torch.no_grad():
            out = net(torch.randn(2, channels, size, size), space.min_arch())
        assert out.shape == (2, 5)


def test_unknown_space_name() -> None:
    with pytest.raises(ValueError, match="known"):
        get_space("resnet")


def test_bad_arch_string() -> None:
    space = get_space("darts_s2")
    with pytest.raises(ValueError):
        space.arch_from_str("darts_s2:n_xx-r_yy")
    with pytest.raises(ValueError):
        space.arch_from_str("vit:c16d1k3")


def test_darts_mask_extract_drops_ops_and_accepts_sub_mask() -> None:
    space = get_space("darts_s2", allow_empty_edges=True)
    net = space.build_supernet(num_classes=10, in_channels=1, image_size=8).eval()
    arch = space.arch_from_str("darts_s2:n_" + "s" * 14 + "-r_" + "c" * 13 + "o")
    sub = net.extract(arch).eval()
    mask = space.mask(arch)
    sub_mask = type(mask)(
        tuple((False, False) if i == 0 else e for i, e in enumerate(mask.normal)), mask.reduce
    )
    x = torch.randn(2, 1, 8, 8)

    with torch.no_grad():
        out_sub_mask = sub(x, sub_mask)
        expected = net(x, space.arch_from_mask(sub_mask))

    assert not any(
        "sep_conv_3x3" in k for k in sub.state_dict() if ".edges." in k and _is_normal(space, k)
    )
    torch.testing.assert_close(out_sub_mask, expected, atol=ATOL, rtol=0)
    with pytest.raises(ValueError):
        sub(x, space.mask(space.max_arch()))


def _is_normal(space: SearchSpace, key: str) -> bool:
    cell = int(key.split(".")[1])
    return cell not in (space.layers // 3, 2 * space.layers // 3)  # type: ignore[attr-defined]
