"""In-place distillation within a client's subnet (``method.sandwich_students``,
:mod:`pfednas.nas.sandwich`)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pfednas.clients import SubnetClient
from pfednas.clients.common import ClientEnv
from pfednas.clients.subnet import build_subnet, recalibrate_on
from pfednas.config import compose, settings_from_cfg
from pfednas.data import ArrayDataset, ClientData
from pfednas.nas.distill import kd_loss
from pfednas.nas.sandwich import InPlaceDistillation, nested_students
from pfednas.options import check_method
from pfednas.search import Supernet, TaskShape, get_space
from pfednas.train import evaluate

TASK = TaskShape(num_classes=10, in_channels=1, image_size=8)
# the devices preset's elastic ends: the nested students reach the smallest widths
SPACE = get_space("mobilenetv3", stem_mults=[0.25, 0.5, 1.0], head_mults=[0.125, 0.5, 1.0],
                  width_mults=[0.25, 0.5, 1.0])
CONFIG = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 8,
          "server_round": 1, "local_epochs": 4}


def _dataset(n: int, seed: int) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = rng.standard_normal((n, 1, 8, 8)) + y[:, None, None, None] / 5
    return ArrayDataset(x.astype(np.float32), y.astype(np.int64))


ENV = ClientEnv(client_id=2, data=ClientData(_dataset(48, 1), _dataset(16, 2), _dataset(64, 3)),
                device=torch.device("cpu"), seed=0)


@pytest.fixture(scope="module")
def supernet() -> Supernet:
    torch.manual_seed(0)
    net = SPACE.build_supernet(num_classes=10, in_channels=1, image_size=8)
    gen = torch.Generator().manual_seed(1)
    for m in net.modules():  # running statistics that matter in eval mode
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return net.eval()


def test_students_are_the_smallest_then_draws_nested_in_the_subnet() -> None:
    # Prepare
    rng = np.random.default_rng(0)
    archs = [SPACE.sample(rng) for _ in range(20)]

    # Execute
    drawn = [(a, nested_students(SPACE, a, rng, 3)) for a in archs]

    # Assert: the space's smallest first, every student at or below the subnet in every
    # dimension, and some strictly between
    for arch, students in drawn:
        assert len(students) == 3 and students[0] == SPACE.min_arch()
        assert all(s <= a for st in students for s, a in zip(st.indices, arch.indices,
                                                             strict=True))
    assert any(st not in (SPACE.min_arch(), a) for a, sts in drawn for st in sts[1:])
    assert nested_students(SPACE, archs[0], rng, 0) == []


def test_a_nested_student_runs_on_the_subnet_as_the_supernet_would_extract_it(
        supernet: Supernet) -> None:
    # Prepare: a subnet built from its slice, students nested in it
    rng = np.random.default_rng(3)
    x = torch.randn(5, 1, 8, 8)

    for _ in range(6):
        arch = SPACE.sample(rng)
        net = build_subnet(SPACE, TASK, arch.to_str(), supernet.slice(arch)).eval()
        for student in nested_students(SPACE, arch, rng, 3):
            # Execute
            with torch.no_grad():
                out = net(x, SPACE.net_config(student, TASK))
                ref = supernet.extract(student).eval()(x)

            # Assert: the same weights, the same function
            torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def _fit(supernet: Supernet, students: int, seed: int = 0, **config: float
         ) -> tuple[list[np.ndarray], dict[str, float]]:
    arch = SPACE.max_arch()
    client = SubnetClient(dataclasses.replace(ENV, seed=seed), SPACE, TASK,
                          bn_recalibrate=False, sandwich_students=students)
    arrays, _, metrics = client.fit(supernet.slice(arch),
                                    {**CONFIG, **config, "arch": arch.to_str()})
    return arrays, metrics


def _student_kl(arrays: list[np.ndarray]) -> float:
    """The smallest subnet's KL to the subnet on the client's test inputs (BatchNorm on
    the batch's statistics, as the students trained: the running ones are shared)."""
    arch = SPACE.max_arch()
    net = build_subnet(SPACE, TASK, arch.to_str(), arrays).train()
    x = torch.as_tensor(ENV.data.test.x)
    with torch.no_grad():
        teacher = torch.softmax(net(x), dim=1)
        return float(kd_loss(net(x, SPACE.net_config(SPACE.min_arch(), TASK)), teacher, 1.0))


@pytest.mark.slow
def test_students_learn_the_subnets_outputs_and_their_passes_are_counted(
        supernet: Supernet) -> None:
    # Execute: the same client, round and subnet without and with two students
    plain, plain_metrics = _fit(supernet, 0)
    sandwich, sandwich_metrics = _fit(supernet, 2)

    # the smallest subnet's KL to the subnet, over three clients' seeds at a gentler rate:
    # one run's KL moves with the CPU's floating point (two torch threads instead of one
    # reversed it, 0.650 against 0.642; issue 61, finding 0), their mean keeps its margin
    # (0.43 against 0.54 with one thread, 0.42 against 0.52 with two)
    kl = {n: np.mean([_student_kl(_fit(supernet, n, seed, lr=0.02)[0]) for seed in range(3)])
          for n in (0, 2)}

    # Assert: the same arrays travel; the smallest subnet follows the subnet more closely;
    # the students' forward + backward passes add to the training MACs, the samples do not
    assert [a.shape for a in sandwich] == [a.shape for a in plain]
    assert kl[2] < kl[0]
    assert sandwich_metrics["sample_passes"] == plain_metrics["sample_passes"]
    assert sandwich_metrics["train_macs"] > plain_metrics["train_macs"]
    # the subnet itself still learns its labels: above chance (0.1) on its own train split,
    # its BatchNorm statistics re-estimated as PerFedRLNAS's evaluation does
    net = build_subnet(SPACE, TASK, SPACE.max_arch().to_str(), sandwich)
    recalibrate_on(net, ENV.data.train, 8, ENV.device)
    assert evaluate(net, ENV.data.train, device=ENV.device).accuracy > 0.2


def test_students_leave_the_running_statistics_to_the_subnet(supernet: Supernet) -> None:
    # Prepare: a batch through the subnet in training mode
    arch = SPACE.max_arch()
    net = build_subnet(SPACE, TASK, arch.to_str(), supernet.slice(arch)).train()
    x = torch.as_tensor(ENV.data.train.x[:8])
    logits = net(x)
    before = {k: v.clone() for k, v in net.state_dict().items()}

    # Execute: three students' passes
    macs = InPlaceDistillation(net, SPACE, TASK, arch, np.random.default_rng(0), 3)(x, logits)

    # Assert: every buffer (running statistics, batch counts) as the subnet's pass left it,
    # gradients on the weights, the students' MACs counted
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(m.momentum == 0.1 for m in net.modules()
               if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    assert macs > 0


def test_no_students_leaves_training_as_it_was(supernet: Supernet) -> None:
    # Execute: two clients, one given the option at 0
    arch = SPACE.max_arch()
    cfg = {**CONFIG, "arch": arch.to_str()}
    a, _, ma = SubnetClient(ENV, SPACE, TASK, bn_recalibrate=False).fit(supernet.slice(arch), cfg)
    b, _, mb = SubnetClient(ENV, SPACE, TASK, bn_recalibrate=False,
                            sandwich_students=0).fit(supernet.slice(arch), cfg)

    # Assert: bit for bit
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert ma["train_macs"] == mb["train_macs"]


@pytest.mark.parametrize("method", ["perfedrlnas", "hapfnas", "largest_in_budget"])
def test_the_option_reaches_the_methods_and_is_refused_where_subnets_do_not_nest(
        method: str) -> None:
    # Execute
    settings = settings_from_cfg(compose([f"method={method}", "method.sandwich_students=2"]))
    fed = settings.federation

    # Assert
    assert settings.options.sandwich_students == 2
    with pytest.raises(ValueError, match="sandwich_students.*darts_s2"):
        check_method(method, {"sandwich_students": 2}, fed, "darts_s2")
    with pytest.raises(ValueError, match="sandwich_students"):
        check_method(method, {"sandwich_students": -1}, fed, "mobilenetv3")

