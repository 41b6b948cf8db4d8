"""Plain PyTorch train / evaluate loops over in-memory arrays.

Batches are sliced from tensors held in memory (no DataLoader workers): the
client datasets here are small, and this keeps the simulation's throughput
equal to a plain PyTorch loop on the same data.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pfednas.data import ArrayDataset
from pfednas.search.cost_model import TRAIN_MACS_PER_FORWARD, module_cost_terms


@dataclass(frozen=True)
class Hyper:
    """Local optimisation hyperparameters (they travel in the message config)."""

    lr: float
    momentum: float
    weight_decay: float
    batch_size: int


@dataclass(frozen=True)
class TrainStats:
    """A training run: its mean loss, the samples it passed through forward + backward,
    its seconds, and ``macs``, its multiply-accumulates by the cost model: 3 × the forward
    MACs per sample of the part it trains (1 × of a frozen part only passed forward) ×
    ``samples`` (:class:`CountingForward`)."""

    loss: float
    samples: int
    seconds: float
    macs: int = 0


@dataclass(frozen=True)
class EvalStats:
    """An evaluation pass: mean loss, accuracy, samples, and ``macs``, the cost model's
    forward multiply-accumulates of the pass (per sample, counted on its first batch, ×
    ``samples``)."""

    loss: float
    accuracy: float
    samples: int
    macs: int = 0


def default_device() -> torch.device:
    """CUDA when present, else CPU; chosen once per process."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# Device copies of the datasets in use, by ``id``: one copy per dataset while it lives (a
# message's splits), however many loops read it; dropped with the dataset (weakref.finalize).
_ON_DEVICE: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}


def to_tensors(data: ArrayDataset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``data`` as tensors on ``device``: on the CPU a view of its arrays (no copy); on an
    accelerator one copy per dataset, kept while the dataset lives, so a message's training,
    fine-tuning and evaluations move it once."""
    if device.type == "cpu":
        return (torch.as_tensor(data.x), torch.as_tensor(data.y))
    key = (id(data), str(device))
    held = _ON_DEVICE.get(key)
    if held is None:
        held = _ON_DEVICE[key] = (torch.as_tensor(data.x, device=device),
                                  torch.as_tensor(data.y, device=device))
        weakref.finalize(data, _ON_DEVICE.pop, key, None)
    return held


class MomentumSGD:
    """``torch.optim.SGD(lr, momentum, weight_decay)`` (no dampening, no Nesterov), written out
    with PyTorch's multi-tensor (``torch._foreach_*``) kernels, as its ``foreach`` variant.

    The same update as torch's SGD: bit-identical on CPU to its single-tensor default
    (tested), and on CUDA a step is a few multi-tensor kernels over every parameter instead of
    four launches per parameter. It exists because the first ``torch.optim`` optimizer a
    process builds imports ``torch._dynamo`` (``Optimizer.__init__`` is wrapped in
    ``torch._disable_dynamo``): 1-3 s on a 2-core machine, which a deployed ClientApp, a
    fresh process per message, would pay on every message; the ``_foreach`` kernels need no
    ``torch.optim``. Parameters without a gradient are left alone, as torch does.
    """

    def __init__(self, params: Iterable[torch.Tensor], hyper: Hyper) -> None:
        self.params = list(params)
        self.hyper = hyper
        self.momentum_buffers: dict[int, torch.Tensor] = {}

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        lr, momentum, weight_decay = self.hyper.lr, self.hyper.momentum, self.hyper.weight_decay
        held = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not held:
            return
        params = [self.params[i] for i in held]
        grads: list[torch.Tensor] = [p.grad for p in params]  # type: ignore[misc]
        if weight_decay != 0:
            grads = list(torch._foreach_add(grads, params, alpha=weight_decay))
        if momentum != 0:
            buffers, kept, kept_grads = [], [], []
            for i, grad in zip(held, grads, strict=True):
                buf = self.momentum_buffers.get(i)
                if buf is None:
                    buf = self.momentum_buffers[i] = grad.detach().clone()
                else:
                    kept.append(buf)
                    kept_grads.append(grad)
                buffers.append(buf)
            if kept:
                torch._foreach_mul_(kept, momentum)
                torch._foreach_add_(kept, kept_grads)
            grads = buffers
        torch._foreach_add_(params, grads, alpha=-lr)


class LossTally:
    """The sample-weighted mean of a loop's losses, read from the device once: each step
    keeps its loss tensor (no host sync), :meth:`mean` reads them all at the end and sums
    them in order, exactly as ``float(loss) * n`` added step by step would."""

    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []
        self.sizes: list[int] = []

    def add(self, loss: torch.Tensor, samples: int) -> None:
        self.losses.append(loss.detach())
        self.sizes.append(samples)

    @property
    def samples(self) -> int:
        return sum(self.sizes)

    def total(self) -> float:
        values = torch.stack(self.losses).tolist() if self.losses else []
        total = 0.0
        for value, samples in zip(values, self.sizes, strict=True):
            total += value * samples
        return total

    def mean(self) -> float:
        return self.total() / max(self.samples, 1)


def counted_forward(model: nn.Module, x: torch.Tensor,
                    call: Callable[[torch.Tensor], torch.Tensor] | None = None
                    ) -> tuple[torch.Tensor, int, int]:
    """``model(x)`` (or ``call(x)``, a pass through ``model``'s modules such as a nested
    configuration's), the multiply-accumulates per sample of that forward pass, and those of
    training on it, counted by the cost model's rule
    (:func:`pfednas.search.cost_model.module_cost_terms`, what ``traced_cost_terms`` applies
    to a ``meta`` pass) on this real batch: no extra pass, no copy of the model (a ``meta``
    trace costs ~1 s the first time in a process, which a deployed ClientApp, a fresh process
    per message, would pay every message).

    Training costs ``TRAIN_MACS_PER_FORWARD`` × a module's forward MACs where backward
    reaches it (a parameter of its trains, or its input carries a gradient), and its forward
    MACs alone where it does not: a frozen body under a trained head (FedRep's head epochs,
    head-only fine-tuning) is only passed forward."""
    forward: list[int] = []
    training: list[int] = []

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        macs = module_cost_terms(module, inputs, output)[0]
        if not macs:
            return
        reached = (any(p.requires_grad for p in module.parameters())
                   or any(isinstance(t, torch.Tensor) and t.requires_grad for t in inputs))
        forward.append(macs)
        training.append(macs * (TRAIN_MACS_PER_FORWARD if reached else 1))

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        out = model(x) if call is None else call(x)
    finally:
        for handle in handles:
            handle.remove()
    n = max(len(x), 1)
    return out, sum(forward) // n, sum(training) // n


class CountingForward:
    """Calls ``model``; the first call also counts its forward and training MACs per sample
    (:func:`counted_forward`), from which :meth:`training_macs` follows."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.macs_per_sample: int | None = None
        self.train_macs_per_sample: int | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.macs_per_sample is None:
            out, self.macs_per_sample, self.train_macs_per_sample = counted_forward(self.model,
                                                                                    x)
            return out
        return self.model(x)  # type: ignore[no-any-return]

    def forward_macs(self, samples: int) -> int:
        """The cost model's forward MACs of ``samples`` passed forward only."""
        return (self.macs_per_sample or 0) * samples

    def training_macs(self, samples: int) -> int:
        """The cost model's training MACs of ``samples`` through forward + backward
        (:func:`counted_forward`: ≈ 3 × forward where backward reaches, 1 × where it does
        not)."""
        return (self.train_macs_per_sample or 0) * samples


def proximal_penalty(params: Mapping[str, torch.Tensor], anchor: Mapping[str, torch.Tensor],
                     lam: float) -> torch.Tensor:
    """(λ/2) Σ ‖v − w‖² over the coordinates present in both: FedProx's proximal term
    (μ = λ) and SPIDER's eq. 4.

    Its gradient with respect to ``params[name]`` is ``λ (v − w)`` for every shared name
    and zero for the others.
    """
    shared = [name for name in params if name in anchor]
    if not shared:
        return torch.zeros(())
    total = sum(((params[n] - anchor[n]) ** 2).sum() for n in shared)
    return 0.5 * lam * total  # type: ignore[return-value]


def train_epochs(model: nn.Module, data: ArrayDataset, *, epochs: int, hyper: Hyper,
                 generator: torch.Generator, device: torch.device,
                 after_backward: Callable[[torch.Tensor, torch.Tensor], int] | None = None,
                 penalty: Callable[[], torch.Tensor] | None = None) -> TrainStats:
    """SGD with momentum for ``epochs`` passes over ``data``; returns the mean loss, the
    samples passed and their training MACs (the first batch's forward counts them).

    ``penalty()``, if given, is added to each batch's cross-entropy before its backward pass
    (a client's own loss term: FedProx's proximal term); the reported loss stays the
    cross-entropy. ``after_backward(batch, logits)``, if given, runs after each batch's
    backward pass and before its step (more gradient to the same step: in-place
    distillation, :mod:`pfednas.nas.sandwich`) and returns the training MACs it added."""
    start = time.perf_counter()
    model.to(device).train()
    x, y = to_tensors(data, device)
    optimizer = MomentumSGD(model.parameters(), hyper)
    forward = CountingForward(model)
    tally = LossTally()  # read once, at the end: no host sync per step
    n, extra_macs = len(y), 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).to(device)
        for begin in range(0, n, hyper.batch_size):
            idx = order[begin:begin + hyper.batch_size]
            if len(idx) < 2 and n >= 2:  # BatchNorm needs two samples in train mode
                continue
            optimizer.zero_grad()
            batch = x[idx]
            logits = forward(batch)
            loss = F.cross_entropy(logits, y[idx])
            (loss if penalty is None else loss + penalty()).backward()
            if after_backward is not None:
                extra_macs += after_backward(batch, logits)
            optimizer.step()
            tally.add(loss, len(idx))
    seen = tally.samples
    return TrainStats(loss=tally.mean(), samples=seen, seconds=time.perf_counter() - start,
                      macs=forward.training_macs(seen) + extra_macs)


@torch.no_grad()
def evaluate(model: nn.Module, data: ArrayDataset, *, device: torch.device,
             batch_size: int = 512) -> EvalStats:
    model.to(device).eval()
    x, y = to_tensors(data, device)
    losses, hits = LossTally(), []  # read once, at the end
    forward = CountingForward(model)
    for begin in range(0, len(y), batch_size):
        logits = forward(x[begin:begin + batch_size])
        target = y[begin:begin + batch_size]
        losses.add(F.cross_entropy(logits, target, reduction="sum"), 1)
        hits.append((logits.argmax(dim=1) == target).sum())
    n = max(len(y), 1)
    correct = int(torch.stack(hits).sum()) if hits else 0
    return EvalStats(loss=losses.total() / n, accuracy=correct / n, samples=len(y),
                     macs=forward.forward_macs(len(y)))


def get_arrays(model: nn.Module) -> list[np.ndarray]:
    """State (parameters and buffers) in ``state_dict`` order, as numpy copies."""
    return [t.detach().cpu().numpy().copy() for t in model.state_dict().values()]


def set_arrays(model: nn.Module, arrays: list[np.ndarray]) -> None:
    keys = list(model.state_dict().keys())
    if len(keys) != len(arrays):
        raise ValueError(f"expected {len(keys)} arrays for {type(model).__name__}, "
                         f"got {len(arrays)}")
    state = {k: torch.as_tensor(np.asarray(a)) for k, a in zip(keys, arrays, strict=True)}
    model.load_state_dict(state, strict=True)


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
