"""One suite over every registered search space (Prepare / Execute / Assert)."""

from __future__ import annotations

from copy import deepcopy

import numpy as np
import pytest
import torch

from pfednas.search import SPACES, Arch, SearchSpace, SpaceConfig, Supernet, get_space
from pfednas.search.cost_model import module_cost_terms
from pfednas.search.darts_cell import factorized_reduce
from pfednas.search.layers import (
    Act,
    At,
    BatchNorm,
    Container,
    Conv,
    LayerNorm,
    Linear,
    Part,
    build_into,
    plan_cost,
    plan_shapes,
    under,
)
from pfednas.search.space import TaskShape

TASK = TaskShape(num_classes=10, in_channels=1, image_size=8)
ATOL = 1e-5  # extract(a)(x) vs supernet(x, a), eval mode, float32


# configurations beside each space's default: mobilenetv3 with an elastic stem and head, as a
# space that reaches down to the smallest device levels is configured
VARIANTS = {"mobilenetv3_elastic_ends": ("mobilenetv3", {
    "stem_mults": [0.25, 0.5, 1.0], "head_mults": [0.125, 1.0], "width_mults": [0.25, 1.0]})}


@pytest.fixture(scope="module", params=sorted(SPACES) + sorted(VARIANTS))
def space(request: pytest.FixtureRequest) -> SearchSpace:
    name, config = VARIANTS.get(request.param, (request.param, {}))
    return get_space(name, **config)


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


def test_plan_shapes_match_built_network(space: SearchSpace) -> None:
    for arch in _archs(space, n=4, seed=7):
        config = space.net_config(arch, TASK)
        fast = space.state_shapes(config, TASK)
        with torch.device("meta"):
            net = space.build_net(config, TASK)
        assert fast == [(k, tuple(v.shape)) for k, v in net.state_dict().items()]


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


def test_a_space_config_is_read_only_and_builds_the_space_its_flat_form_names() -> None:
    # Prepare: a space group's flat form, as a config gives it
    flat = {"name": "mobilenetv3", "depths": [1, 2], "kernels": [3]}

    # Execute
    config = SpaceConfig.of(flat)
    flat["depths"] = [3]

    # Assert: its own copy, read-only, the same space as get_space builds
    assert config.name == "mobilenetv3" and config.as_dict() == {
        "name": "mobilenetv3", "depths": [1, 2], "kernels": [3]}
    with pytest.raises(TypeError):
        config.values["depths"] = [3]  # type: ignore[index]
    built, direct = config.build(), get_space("mobilenetv3", depths=[1, 2], kernels=[3])
    assert built.max_arch().to_str() == direct.max_arch().to_str()
    assert built.min_arch().to_str() == direct.min_arch().to_str()
    assert config == SpaceConfig.of(config.as_dict())


@pytest.mark.parametrize(("flat", "message"), [
    ({"name": "resnet"}, "unknown search space 'resnet'"),
    ({"depths": [1]}, "needs a name"),
    ({"name": 3}, "needs a name"),
])
def test_a_space_config_without_a_known_name_is_refused(flat: dict[str, object],
                                                        message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SpaceConfig.of(flat)


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


# -- fast paths against their definitions ------------------------------------------------
COST_TASKS = [TASK, TaskShape(10, 1, 28), TaskShape(5, 3, 32)]


@pytest.mark.parametrize("task", COST_TASKS, ids=lambda t: f"{t.in_channels}x{t.image_size}")
def test_plan_cost_equals_meta_forward(space: SearchSpace, task: TaskShape) -> None:
    net = space.build_supernet(
        num_classes=task.num_classes, in_channels=task.in_channels, image_size=task.image_size
    )
    for arch, batch in zip(_archs(space, n=1, seed=17), (1, 32, 3), strict=True):
        fast = net.cost(arch, batch_size=batch, optimizer_states=2)
        reference = net._reference_cost(arch, batch_size=batch, optimizer_states=2)
        assert fast == reference
        assert net.cost(arch, batch_size=batch, optimizer_states=2) == fast  # memoised
        assert all(type(v) is int for v in vars(fast).values())


PARTS = [  # (part, input): every kind of plan part, on a feature map or on tokens
    (Conv("c", 3, 8, 3, stride=2), (2, 3, 9, 9)),
    (Conv("c", 6, 6, 5, depthwise=True), (2, 6, 7, 7)),
    (Conv("c", 6, 4, 1, bias=True, pooled=True), (2, 6, 1, 1)),
    (BatchNorm("n", 5), (2, 5, 4, 4)),
    (BatchNorm("n", 5, affine=False), (2, 5, 4, 4)),
    (At(Conv("c", 3, 8, 1, stride=2), 9), (2, 3, 9, 9)),
    (Act("a", "identity", 5), (2, 5, 4, 4)),
    (Act("a", "hsigmoid", 5), (2, 5, 4, 4)),
    (Act("a", "relu", 5, pooled=True), (2, 5, 1, 1)),
    (LayerNorm("n", 6), (2, 9, 6)),
    (Linear("l", 6, 4), (2, 9, 6)),
    (Linear("l", 6, 4, pooled=True), (2, 6)),
]


@pytest.mark.parametrize(("part", "shape"), PARTS, ids=lambda p: getattr(p, "name", ""))
def test_each_plan_part_describes_the_module_it_builds(part: Part, shape: tuple[int, ...]) -> None:
    module = part.build()
    x = torch.randn(shape)
    with torch.no_grad():
        y = module(x)
    side = shape[-1] if len(shape) == 4 else int(shape[1] ** 0.5) if len(shape) == 3 else 1
    macs, act, out_side = part.cost(side)
    built = [(f"{part.name}.{k}", tuple(v.shape)) for k, v in module.state_dict().items()]
    assert part.shapes() == built
    assert (macs * shape[0], act * shape[0]) == module_cost_terms(module, (x,), y)
    assert out_side == (y.shape[-1] if y.dim() == 4 else side)


def test_a_plan_builds_nested_parts_in_order() -> None:
    parts = [Conv("c", 2, 4, 3), BatchNorm("n", 4)]
    plan = [Container("block", torch.nn.Sequential), *under("block", parts)]
    owner = torch.nn.Module()
    build_into(owner, plan)
    assert plan_shapes(plan) == [(k, tuple(v.shape)) for k, v in owner.state_dict().items()]
    assert plan_cost(plan, 5) == (4 * 25 * 2 * 9, 2 * 4 * 25)


def test_extract_structure_equals_a_new_build(space: SearchSpace, supernet: Supernet) -> None:
    for arch in _archs(space, n=3, seed=19):
        built, sub = supernet.template(arch), supernet.extract(arch)
        assert repr(sub) == repr(built)
        assert list(sub.state_dict()) == list(built.state_dict())
        for (name, m), (_, b) in zip(sub.named_modules(), built.named_modules(), strict=True):
            assert type(m) is type(b), name
            assert _plain_attributes(m) == _plain_attributes(b), name
            assert not m.training  # the supernet fixture is in eval mode
        assert all(p.requires_grad and p.device.type == "cpu" for p in sub.parameters())


def _plain_attributes(module: torch.nn.Module) -> dict[str, object]:
    """A module's own attributes, without its state / hook containers and its mode."""
    return {
        k: v for k, v in vars(module).items() if not isinstance(v, dict | set) and k != "training"
    }


def test_extract_fast_path_equals_loading_path(space: SearchSpace, supernet: Supernet) -> None:
    supernet.train()
    try:
        for arch in _archs(space, n=2, seed=23)[2:]:
            fast, slow = supernet.extract(arch), supernet._extract_by_loading(arch)
            assert fast.training and slow.training
            a, b = fast.state_dict(keep_vars=True), slow.state_dict(keep_vars=True)
            assert list(a) == list(b)
            for key in a:
                assert type(a[key]) is type(b[key]), key
                assert a[key].dtype == b[key].dtype and a[key].stride() == b[key].stride()
                assert a[key].requires_grad == b[key].requires_grad
                torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    finally:
        supernet.eval()


def test_extracted_subnets_are_independent(space: SearchSpace, supernet: Supernet) -> None:
    arch = space.sample(np.random.default_rng(29))
    one, two = supernet.extract(arch), supernet.extract(arch)
    calls: list[int] = []
    next(iter(one.modules())).register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        next(iter(one.parameters())).add_(1.0)
        two(torch.randn(1, 1, 8, 8))
    assert not calls
    assert not torch.equal(next(iter(one.parameters())), next(iter(two.parameters())))
    assert all(a is not b for a, b in zip(one.modules(), two.modules(), strict=True))


def test_slice_follows_every_kind_of_weight_update(space: SearchSpace) -> None:
    net = space.build_supernet(num_classes=10, in_channels=1, image_size=8)
    arch = space.sample(np.random.default_rng(31))
    net.slice(arch)  # warm the numpy mirror
    for update in ("in_place", "assign", "data"):
        shifted = [np.asarray(a + 1) for a in net.state_arrays()]
        if update == "in_place":
            net.load_state_arrays(shifted)
        elif update == "assign":
            tensors = [torch.as_tensor(a) for a in shifted]
            net.net.load_state_dict(dict(zip(net.state_keys(), tensors, strict=True)), assign=True)
        else:
            for p, a in zip(net.net.state_dict(keep_vars=True).values(), shifted, strict=True):
                p.data = torch.as_tensor(a)
        expected = [shifted[i][where] for i, where in net.regions(arch)]
        got = net.slice(arch)
        assert all(np.array_equal(g, e) for g, e in zip(got, expected, strict=True)), update
        extracted = list(net.extract(arch).state_dict().values())
        assert all(np.array_equal(t.numpy(), e) for t, e in zip(extracted, expected, strict=True))


def test_regions_memo_hands_out_fresh_lists(space: SearchSpace, supernet: Supernet) -> None:
    arch = space.max_arch()
    first = supernet.regions(arch)
    first.clear()
    assert len(supernet.regions(arch)) == len(supernet.state_keys())


def test_supernet_deepcopy_keeps_working() -> None:
    space = get_space("vit")  # the memos are space-independent; the smallest module tree
    net = space.build_supernet(num_classes=10, in_channels=1, image_size=8)
    arch = space.sample(np.random.default_rng(37))
    net.slice(arch)
    copy = deepcopy(net)
    copy.load_state_arrays([np.asarray(a + 1) for a in copy.state_arrays()])
    assert all(
        np.array_equal(a + 1, b) for a, b in zip(net.slice(arch), copy.slice(arch), strict=True)
    )


def test_sample_draws_like_generator_choice(space: SearchSpace) -> None:
    probs = [np.random.default_rng(41).dirichlet(np.ones(len(d.choices))) for d in space.dimensions]
    fast, plain = np.random.default_rng(43), np.random.default_rng(43)
    for _ in range(50):
        expected = tuple(int(plain.choice(len(p), p=p / p.sum())) for p in probs)
        assert space.sample(fast, probs).indices == expected
    assert fast.random() == plain.random()


@pytest.mark.parametrize("side", [7, 8])
def test_a_branch_plan_costs_what_its_module_does_from_the_side_it_starts_on(side: int) -> None:
    # DARTS's FactorizedReduce: both convs read the (padded) input, so the second one's
    # part starts At that side, not at the first conv's output
    plan = factorized_reduce("fr", 6, 6, side)
    owner = torch.nn.Module()
    build_into(owner, plan)
    x = torch.randn(2, 6, side, side)
    terms: list[tuple[int, int]] = []
    fr = owner.get_submodule("fr")
    for m in fr.modules():
        m.register_forward_hook(lambda m, i, o: terms.append(module_cost_terms(m, i, o)))
    with torch.no_grad():
        y = fr(x)
    assert plan_shapes(plan) == [(k, tuple(v.shape)) for k, v in owner.state_dict().items()]
    macs, act = plan_cost(plan, 99)  # the At parts fix the side: the walk's start is unused
    assert (2 * macs, 2 * act) == tuple(map(sum, zip(*terms, strict=True)))
    assert y.shape[-1] == -(-side // 2)
