"""In-place distillation within a client's subnet: BigNAS's sandwich rule on the client.

A weight-sharing supernet's subnets are good without retraining when every training step
also trains smaller subnets nested in the one trained, each distilled from its outputs
(BigNAS, Yu et al. 2020; Once-for-All's in-place distillation). Here the client's subnet
(the architecture the server sent, which its memory budget admits) is the largest member of
its sandwich: every batch it trains with the labels as before, and then ``students``
nested subnets learn its softened outputs (:func:`pfednas.nas.distill.kd_loss`) before the
one optimiser step, normalising by their batch's statistics and leaving the running ones to
the subnet:

* the smallest subnet the space holds (every dimension's first choice, nested in every
  architecture of a space whose choices nest by index);
* ``students - 1`` random subnets nested in the client's: each dimension's index drawn
  uniformly from the first choice up to the client's.

Nothing else changes: the same arrays travel, the same merge averages them (only the
client's subnet's entries moved), the budget holds (the students run one at a time after
the subnet's backward pass, each smaller than it). The students' passes are counted in the
client's training MACs (:mod:`pfednas.hardware.simulated_time`). An option of PerFedRLNAS,
its two controls and HAPFNAS's heteroFedAvg phase (``method.sandwich_students``), not in
their papers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch.nn.functional as F
from torch import Tensor, nn

from pfednas.nas.distill import kd_loss
from pfednas.search import Arch, ElasticNet, SearchSpace, TaskShape
from pfednas.train import counted_forward

TEMPERATURE = 1.0  # BigNAS's in-place distillation: the teacher's plain softmax


def nested_students(space: SearchSpace, arch: Arch, rng: np.random.Generator,
                    students: int) -> list[Arch]:
    """The smallest architecture, then ``students - 1`` uniform draws nested in ``arch``
    (each dimension's index in ``0 .. arch.indices[d]``); none for ``students`` = 0."""
    if students <= 0:
        return []
    if not space.nests_by_index:
        raise ValueError(f"search space {space.name!r}: its choices do not nest by index, "
                         "so in-place distillation has no nested subnets to train")
    drawn = [space.arch_from_indices([int(rng.integers(0, i + 1)) for i in arch.indices])
             for _ in range(students - 1)]
    return [space.min_arch(), *drawn]


@contextmanager
def running_statistics_kept(net: nn.Module) -> Iterator[None]:
    """The students normalise by their batch's statistics and leave the running ones (and
    their batch count) as the subnet's passes made them: momentum 0 while inside, restored
    after (``running ← (1 − 0)·running + 0·batch`` leaves every bit)."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, None if m.num_batches_tracked is None
              else m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved, strict=True):
            m.momentum = momentum
            if tracked is not None and m.num_batches_tracked is not None:
                m.num_batches_tracked.copy_(tracked)


class InPlaceDistillation:
    """The step a client adds after its subnet's backward pass: each student of the batch
    learns the subnet's softened outputs; the gradients add up for the one optimiser step.
    Calling it returns the students' training MACs (the cost model's count, once per
    student architecture)."""

    def __init__(self, net: ElasticNet[object], space: SearchSpace, task: TaskShape,
                 arch: Arch, rng: np.random.Generator, students: int) -> None:
        self.net, self.space, self.task, self.arch = net, space, task, arch
        self.rng, self.students = rng, students
        self.macs_per_sample: dict[Arch, int] = {}

    def __call__(self, x: Tensor, logits: Tensor) -> int:
        teacher = F.softmax(logits.detach() / TEMPERATURE, dim=1)
        macs = 0
        with running_statistics_kept(self.net):
            for student in nested_students(self.space, self.arch, self.rng, self.students):
                out = self.forward(student, x)
                kd_loss(out, teacher, TEMPERATURE).backward()
                macs += self.macs_per_sample[student] * len(x)
        return macs

    def forward(self, student: Arch, x: Tensor) -> Tensor:
        config = self.space.net_config(student, self.task)
        if student in self.macs_per_sample:
            return self.net(x, config)  # type: ignore[no-any-return]
        out, _, training = counted_forward(self.net, x, lambda inp: self.net(inp, config))
        self.macs_per_sample[student] = training
        return out


StepHook = Callable[[Tensor, Tensor], int]


def in_place_step(net: ElasticNet[object], space: SearchSpace, task: TaskShape, arch: Arch,
                  rng: np.random.Generator, students: int) -> StepHook | None:
    """The hook :func:`pfednas.train.train_epochs` calls after each backward pass, or
    ``None`` with no students."""
    if students <= 0:
        return None
    return InPlaceDistillation(net, space, task, arch, rng, students)


__all__ = ["TEMPERATURE", "InPlaceDistillation", "StepHook", "in_place_step",
           "nested_students"]
