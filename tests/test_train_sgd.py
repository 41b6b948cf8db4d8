"""``MomentumSGD`` is torch's SGD update, the loops read their losses once, data moves to a
device once, and training no longer imports ``torch._dynamo``."""

from __future__ import annotations

import gc
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pfednas.data import ArrayDataset
from pfednas.train import _ON_DEVICE, Hyper, LossTally, MomentumSGD, to_tensors


def _net(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 10))


def _train(net: nn.Module, optimizer: torch.optim.Optimizer | MomentumSGD, steps: int) -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(16, 1, 8, 8, generator=gen), torch.randint(0, 10, (16,), generator=gen)
        optimizer.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimizer.step()


@pytest.mark.parametrize(("momentum", "weight_decay"), [(0.9, 5e-4), (0.0, 0.0), (0.5, 0.0)])
def test_momentum_sgd_is_bit_identical_to_torch_sgd(momentum: float, weight_decay: float) -> None:
    # Prepare: two identical nets, the first conv frozen in both (no gradient: left alone)
    ours, theirs = _net(0), _net(0)
    for net in (ours, theirs):
        net[0].weight.requires_grad_(False)
    hyper = Hyper(lr=0.1, momentum=momentum, weight_decay=weight_decay, batch_size=16)

    _train(ours, MomentumSGD(ours.parameters(), hyper), steps=5)
    _train(theirs, torch.optim.SGD(theirs.parameters(), lr=hyper.lr, momentum=momentum,
                                   weight_decay=weight_decay), steps=5)

    before = _net(0).state_dict()
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    assert torch.equal(ours.state_dict()["0.weight"], before["0.weight"])
    assert not torch.equal(ours.state_dict()["4.weight"], before["4.weight"])


def test_momentum_sgd_equals_torchs_multi_tensor_sgd_when_a_gradient_appears_later() -> None:
    # Prepare: the first conv frozen for three steps, then trained (its momentum starts late)
    ours, theirs = _net(0), _net(0)
    hyper = Hyper(lr=0.1, momentum=0.9, weight_decay=5e-4, batch_size=16)
    mine = MomentumSGD(ours.parameters(), hyper)
    torchs = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4,
                             foreach=True)

    # Execute
    for net in (ours, theirs):
        net[0].weight.requires_grad_(False)
    _train(ours, mine, steps=3)
    _train(theirs, torchs, steps=3)
    for net in (ours, theirs):
        net[0].weight.requires_grad_(True)
    _train(ours, mine, steps=3)
    _train(theirs, torchs, steps=3)

    # Assert
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key


def test_a_tally_read_once_equals_the_float_sum_taken_step_by_step() -> None:
    # Prepare
    gen = torch.Generator().manual_seed(0)
    losses = [torch.rand((), generator=gen) * 3 for _ in range(50)]
    sizes = [32] * 49 + [7]
    expected, tally = 0.0, LossTally()

    # Execute
    for loss, n in zip(losses, sizes, strict=True):
        expected += float(loss) * n
        tally.add(loss, n)

    # Assert: bit for bit, so a run's reported training loss does not move
    assert tally.total() == expected
    assert tally.mean() == expected / sum(sizes) and tally.samples == sum(sizes)
    assert LossTally().mean() == 0.0


def test_a_dataset_moves_to_a_device_once_and_is_dropped_with_it() -> None:
    # Prepare: the meta device stands in for an accelerator
    data = ArrayDataset(x=np.zeros((4, 1, 2, 2), np.float32), y=np.arange(4))
    meta = torch.device("meta")

    # Execute
    first, again = to_tensors(data, meta), to_tensors(data, meta)
    held = len(_ON_DEVICE)
    del data
    gc.collect()

    # Assert
    assert first[0] is again[0] and first[1] is again[1] and first[0].device == meta
    assert held >= 1 and len(_ON_DEVICE) == held - 1


def test_training_in_a_fresh_process_does_not_import_torch_dynamo() -> None:
    # training, and SPIDER's pair of models (pfednas.nas.spider.train_pair)
    code = ("import sys, numpy as np, torch\n"
            "from pfednas.data import ArrayDataset\n"
            "from pfednas.nas.spider import PairHyper, train_pair\n"
            "from pfednas.train import Hyper, train_epochs\n"
            "data = ArrayDataset(x=np.zeros((8, 1, 8, 8), np.float32), y=np.arange(8) % 2)\n"
            "def net(): return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))\n"
            "hyper = Hyper(0.1, 0.9, 0.0, 4)\n"
            "stats = train_epochs(net(), data, epochs=1, hyper=hyper,\n"
            "                     generator=torch.Generator(), device=torch.device('cpu'))\n"
            "pair = train_pair(net(), net(), data, epochs=1, pair=PairHyper(hyper, 0.1, 5.0),\n"
            "                  generator=torch.Generator(), device=torch.device('cpu'))\n"
            "print(stats.samples, pair.samples, 'torch._dynamo' in sys.modules)\n")

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout

    assert out.split() == ["8", "8", "False"]


def test_the_clientapp_imports_neither_scipy_nor_scikit_learn() -> None:
    # a cold ClientApp imports its module per message; SciPy is read only by a blur or an
    # off-quarter rotation (pfednas.data.shift), scikit-learn only by the digits reader
    code = ("import sys\n"
            "import pfednas.app.client_app\n"
            "print(any(m.split('.')[0] in ('scipy', 'sklearn') for m in sys.modules))\n")

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout

    assert out.split() == ["False"]
