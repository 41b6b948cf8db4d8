"""``MomentumSGD`` is torch's SGD update, and training no longer imports ``torch._dynamo``."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pfednas.train import Hyper, MomentumSGD


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


def test_training_in_a_fresh_process_does_not_import_torch_dynamo() -> None:
    code = ("import sys, numpy as np, torch\n"
            "from pfednas.data import ArrayDataset\n"
            "from pfednas.train import Hyper, train_epochs\n"
            "data = ArrayDataset(x=np.zeros((8, 1, 8, 8), np.float32), y=np.arange(8) % 2)\n"
            "net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))\n"
            "stats = train_epochs(net, data, epochs=1, hyper=Hyper(0.1, 0.9, 0.0, 4),\n"
            "                     generator=torch.Generator(), device=torch.device('cpu'))\n"
            "print(stats.samples, 'torch._dynamo' in sys.modules)\n")

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout

    assert out.split() == ["8", "False"]
