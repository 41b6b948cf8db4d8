"""HAPFNAS phase 1: distil the clients' knowledge-model ensemble into the supernet.

Yang & Liu (Entropy 2025) train the supernet on the server from lightweight
client *knowledge models* instead of from client-trained subnets, so that
clients with small budgets never hold the supernet. The paper leaves these
details open; the choices made here, and why:

* **Ensemble** — the teacher distribution is the sample-weighted mean of the
  knowledge models' *softened probabilities* ``softmax(z_k / T)`` (weights =
  the clients' training-set sizes). Averaging probabilities rather than logits
  keeps a model that is confident only on its own few classes (non-IID
  clients) from dominating classes it never saw. With a robust rule
  (:mod:`pfednas.nas.aggregation`) the knowledge models' probabilities are screened against
  their coordinate-wise median and each entry is the trimmed mean or median over the kept
  ones, renormalised to sum to 1: no strict minority of hostile knowledge models sets the
  teacher.
* **Loss** — ``T² · KL(p_teacher^T ‖ p_subnet^T)`` per sample (Hinton et al.,
  2015; the ``T²`` keeps gradient sizes comparable across temperatures).
* **Sandwich rule** (BigNAS / OFA) — every step runs the largest, the smallest
  and ``random_subnets`` uniformly sampled subnets on the same batch,
  accumulates their gradients and takes one SGD step. The optimizer (SGD with
  momentum) is restarted every round: nothing but the weights is carried over,
  so a checkpoint holds the supernet alone.
* **Transfer set** — the inputs only (never labels) of either pool samples no
  client holds (``holdout``), or, data-free, ``synthetic`` images: Gaussian
  noise smoothed by a random-width Gaussian blur and rescaled to unit variance
  (image-like spatial correlation at several scales, the normalised data's
  range). A part of it is held out of distillation for the KL report.
* **Reports** — KL of the largest and smallest subnets to the ensemble on the
  held-out inputs and their accuracy on a labelled held-out split, each after
  re-estimating BatchNorm statistics on the distillation inputs (the supernet's
  shared running statistics belong to no single subnet).

* **Threads** — the server distils with ``threads`` torch threads (default 1): in a
  simulation it shares the CPUs with the client actors, and spinning OpenMP
  threads on an oversubscribed machine slow it down several-fold (measured:
  5 sandwich steps took 18 s with one thread and 87 s with two on a loaded
  2-core host). Raise it on a dedicated server.

Pure PyTorch / numpy; randomness is passed in.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pfednas.data import ArrayDataset
from pfednas.nas.aggregation import METHOD_MEAN, AggregationRule, robust_merge
from pfednas.nas.phases import DistillOptions  # noqa: F401 (re-exported)
from pfednas.search import Arch, SearchSpace, Supernet, recalibrate_batchnorm

EVAL_BATCH = 512


@dataclass(frozen=True)
class TransferSet:
    """Server-side inputs: ``distill`` (trained on), ``heldout`` (KL report), and an
    optional labelled split for the subnet-accuracy report (never trained on)."""

    distill: np.ndarray
    heldout: np.ndarray
    labelled: ArrayDataset | None = None


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` torch CPU threads, then restore the previous number."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def synthetic_inputs(n: int, shape: tuple[int, int, int], rng: np.random.Generator
                     ) -> np.ndarray:
    """``n`` float32 images ``(n, *shape)``: blurred Gaussian noise, unit variance per image."""
    channels, height, width = shape
    noise = rng.standard_normal((n, channels, height, width))
    sigma = rng.uniform(0.5, max(0.5, min(height, width) / 4), size=n)
    fy, fx = np.fft.fftfreq(height)[:, None], np.fft.fftfreq(width)[None, :]
    freq2 = (fy**2 + fx**2)[None, None]
    gain = np.exp(-2 * (np.pi**2) * sigma[:, None, None, None] ** 2 * freq2)
    smooth = np.fft.ifft2(np.fft.fft2(noise) * gain).real
    smooth -= smooth.mean(axis=(1, 2, 3), keepdims=True)
    smooth /= smooth.std(axis=(1, 2, 3), keepdims=True) + 1e-8
    return smooth.astype(np.float32)


@torch.no_grad()
def ensemble_probs(teachers: Sequence[tuple[nn.Module, float]], x: Tensor,
                   temperature: float, rule: AggregationRule = METHOD_MEAN) -> Tensor:
    """Weighted mean of ``softmax(teacher(x) / T)`` over the teachers (eval mode); with a
    robust ``rule``, each entry's trimmed mean or median over the teachers of weight > 0,
    each row renormalised to sum to 1."""
    if not teachers:
        raise ValueError("no knowledge models to distil from")
    total = float(sum(w for _, w in teachers))
    if total <= 0:
        raise ValueError("teacher weights must have a positive sum")
    if rule.robust:
        return robust_probs([softened(m, x, temperature) for m, w in teachers if w > 0], rule)
    out = torch.zeros(len(x), 0)
    for model, weight in teachers:
        probs = softened(model, x, temperature)
        out = probs * (weight / total) if out.numel() == 0 else out + probs * (weight / total)
    return out


def softened(model: nn.Module, x: Tensor, temperature: float) -> Tensor:
    """``softmax(model(x) / T)`` in eval mode, in batches."""
    model.eval()
    return torch.cat([F.softmax(model(x[i:i + EVAL_BATCH]) / temperature, dim=1)
                      for i in range(0, len(x), EVAL_BATCH)])


def robust_probs(probs: Sequence[Tensor], rule: AggregationRule) -> Tensor:
    """``(n, classes)`` probabilities by a robust rule over the teachers (screened, then each
    entry's trimmed mean or median: :func:`pfednas.nas.aggregation.robust_merge`), each row
    renormalised to sum to 1 (a row the rule zeroes: uniform)."""
    shape = tuple(probs[0].shape)
    uniform = np.full(shape, 1.0 / shape[1])
    whole = (slice(None), slice(None))
    merged = robust_merge([uniform], [[(0, whole, p.numpy())] for p in probs], rule,
                          ties_to_current=False).arrays[0]
    sums = merged.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rows = np.where(sums > 0, merged / sums, uniform)
    return torch.as_tensor(rows.astype(np.float32))


def kd_loss(student_logits: Tensor, teacher_probs: Tensor, temperature: float) -> Tensor:
    """``T² · KL(teacher ‖ softmax(student / T))``, averaged over the batch."""
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    return F.kl_div(log_student, teacher_probs, reduction="batchmean") * temperature**2


def sandwich(space: SearchSpace, rng: np.random.Generator, random_subnets: int) -> list[Arch]:
    """Largest, smallest, then ``random_subnets`` uniform samples."""
    return [space.max_arch(), space.min_arch(),
            *(space.sample(rng) for _ in range(random_subnets))]


def distill_supernet(supernet: Supernet, x: Tensor, teacher_probs: Tensor, *,
                     options: DistillOptions, rng: np.random.Generator,
                     generator: torch.Generator) -> float:
    """``options.steps`` sandwich steps on batches of ``x``; returns the mean step loss.

    Batches are drawn by cycling through a shuffled order (reshuffled every pass).
    """
    if options.steps == 0:
        return float("nan")
    supernet.train()
    optimizer = torch.optim.SGD(supernet.parameters(), lr=options.lr, momentum=options.momentum,
                                weight_decay=options.weight_decay)
    n, batch = len(x), min(options.batch_size, len(x))
    order, cursor, total = torch.randperm(n, generator=generator), 0, 0.0
    for _ in range(options.steps):
        if cursor + batch > n:
            order, cursor = torch.randperm(n, generator=generator), 0
        idx = order[cursor:cursor + batch]
        cursor += batch
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for arch in sandwich(supernet.space, rng, options.random_subnets):
            loss = kd_loss(supernet(x[idx], arch), teacher_probs[idx], options.temperature)
            loss.backward()
            step_loss += float(loss.detach())
        optimizer.step()
        total += step_loss / (2 + options.random_subnets)
    supernet.eval()
    return total / options.steps


def calibrated_subnet(supernet: Supernet, arch: Arch, calibration: Tensor,
                      batch_size: int = 64) -> nn.Module:
    """The extracted subnet with BatchNorm statistics re-estimated on ``calibration``, eval mode."""
    net = supernet.extract(arch)
    starts = [i for i in range(0, len(calibration), batch_size)
              if len(calibration) - i >= 2 or i == 0]
    recalibrate_batchnorm(net, (calibration[i:i + batch_size] for i in starts))
    return net.eval()


@torch.no_grad()
def mean_kl(net: nn.Module, x: Tensor, teacher_probs: Tensor, temperature: float) -> float:
    """Mean per-sample ``KL(teacher ‖ softmax(net(x) / T))`` (no ``T²`` factor)."""
    net.eval()
    logits = torch.cat([net(x[i:i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)])
    log_student = F.log_softmax(logits / temperature, dim=1)
    return float(F.kl_div(log_student, teacher_probs, reduction="batchmean"))


@torch.no_grad()
def accuracy(net: nn.Module, data: ArrayDataset) -> float:
    net.eval()
    x, y = torch.as_tensor(data.x), torch.as_tensor(data.y)
    pred = torch.cat([net(x[i:i + EVAL_BATCH]).argmax(1) for i in range(0, len(x), EVAL_BATCH)])
    return float((pred == y).float().mean()) if len(y) else float("nan")
