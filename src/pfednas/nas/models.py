"""A small plain CNN: HAPFNAS's knowledge model (``clients/hapfnas.py``,
``method.knowledge_width``) and the plain-PyTorch reference model of
``benchmarks/bench_foundation.py``.

The baselines do not use it: their fixed model is a subnet of the run's search space
(``pfednas.methods.fixed_model_fn``, ``method.arch``).
"""

from __future__ import annotations

import torch
from torch import nn

from pfednas.seeding import MODEL_INIT, int_seed


class SmallCNN(nn.Module):
    """Two conv blocks and a linear head; works for 8-32 px inputs."""

    def __init__(self, *, in_channels: int, image_size: int, num_classes: int,
                 width: int = 32) -> None:
        super().__init__()
        pool = 2 if image_size >= 16 else 1
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(pool),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Linear(8 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def head_parameter_names(self) -> list[str]:
        return [f"head.{name}" for name, _ in self.head.named_parameters()]


def build_model(*, in_channels: int, image_size: int, num_classes: int, seed: int) -> SmallCNN:
    """The seeded initial model: identical for every method given the same seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int_seed(seed, MODEL_INIT))
        return SmallCNN(in_channels=in_channels, image_size=image_size, num_classes=num_classes)
