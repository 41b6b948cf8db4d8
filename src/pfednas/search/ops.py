"""Dynamic (elastic) operations: they own the largest weights and use a nested part.

Once-for-All (Cai et al., ICLR'20, ``ofa/utils/layers`` and ``dynamic_op.py``):
every elastic operation stores the weights of its largest form and a smaller
form uses a *nested* part of them — a prefix of the channels, the centre crop
of the kernel.  :func:`nested_slices` is the single slicing rule: the forward
pass of every op below, and the supernet's ``regions`` / ``slice`` /
``scatter`` / ``extract``, all go through it ("one truth per operation").

Kernels are cropped plainly at the centre; OFA's learned kernel transformation
matrices are not used.

No op stores an "active" setting: the active sizes are arguments of
``forward`` (the input's channel count gives the input width).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def nested_slices(full: Sequence[int], sub: Sequence[int]) -> tuple[slice, ...]:
    """Where a tensor of shape ``sub`` sits inside its supernet tensor of shape ``full``.

    Every axis takes a prefix, except the two kernel axes of a 4-D convolution
    weight, which take the centre (OFA's centre crop: a 3×3 kernel is the middle
    of the 7×7 one).
    """
    if len(full) != len(sub):
        raise ValueError(f"rank mismatch: supernet {tuple(full)} vs subnet {tuple(sub)}")
    out = []
    for axis, (f, s) in enumerate(zip(full, sub, strict=True)):
        if not 0 <= s <= f:
            raise ValueError(f"subnet shape {tuple(sub)} does not fit in {tuple(full)}")
        start = (f - s) // 2 if len(full) == 4 and axis >= 2 else 0
        out.append(slice(start, start + s))
    return tuple(out)


def nested(t: Tensor, shape: Sequence[int]) -> Tensor:
    """The nested part of ``t`` of the given shape (a view; ``t`` itself at its full shape,
    so that a standalone subnet's traced graph holds no view of each of its weights)."""
    if tuple(t.shape) == tuple(shape):
        return t
    return t[nested_slices(t.shape, shape)]


def make_divisible(value: float, divisor: int, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor`` (MobileNet / OFA rule)."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def conv_out(size: int, kernel: int, stride: int) -> int:
    """Output side of a conv with padding ``kernel // 2`` (the padding every op here uses)."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def adapt_strides(
    requested: Sequence[int], image_size: int, min_feature: int = 2
) -> tuple[int, ...]:
    """Keep requested stride-2 positions, in order, while the map stays ≥ ``min_feature``.

    Small inputs (8×8 digits) would otherwise collapse to 0×0; the extra
    downsamplings become stride 1.
    """
    size, out = image_size, []
    for stride in requested:
        if stride == 2 and math.ceil(size / 2) >= min_feature:
            size = math.ceil(size / 2)
            out.append(2)
        else:
            out.append(1)
    return tuple(out)


class DynamicConv2d(nn.Module):
    """Conv2d whose output channels and kernel size are chosen per call.

    Input channels follow the input.  ``depthwise=True`` gives a depthwise conv
    (groups = channels, out = in).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        depthwise: bool = False,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.stride, self.depthwise = stride, depthwise
        shape = (in_channels if depthwise else out_channels, 1 if depthwise else in_channels)
        self.weight = nn.Parameter(torch.empty(*shape, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(shape[0])) if bias else None
        if not self.weight.is_meta:  # templates on ``meta`` skip (slow, pointless) init
            nn.init.kaiming_normal_(self.weight, mode="fan_out")

    def forward(
        self, x: Tensor, out_channels: int | None = None, kernel_size: int | None = None
    ) -> Tensor:
        in_c = x.shape[1]
        out_c = in_c if self.depthwise else (out_channels or self.weight.shape[0])
        k = kernel_size or self.weight.shape[-1]
        weight = nested(self.weight, (out_c, 1 if self.depthwise else in_c, k, k))
        bias = None if self.bias is None else nested(self.bias, (out_c,))
        groups = in_c if self.depthwise else 1
        return F.conv2d(x, weight, bias, self.stride, k // 2, 1, groups)

    def cost_terms(self, inputs: tuple[Tensor, ...], output: Tensor) -> tuple[int, int]:
        """(MACs, activation elements); exact on a standalone subnet (full weights active)."""
        return output.numel() * self.weight[0].numel(), output.numel()


class DynamicLinear(nn.Module):
    """Linear layer whose output width is chosen per call; input width follows the input."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        if not self.weight.is_meta:
            nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, x: Tensor, out_features: int | None = None) -> Tensor:
        out_f = out_features or self.weight.shape[0]
        weight = nested(self.weight, (out_f, x.shape[-1]))
        bias = None if self.bias is None else nested(self.bias, (out_f,))
        return F.linear(x, weight, bias)

    def cost_terms(self, inputs: tuple[Tensor, ...], output: Tensor) -> tuple[int, int]:
        return output.numel() * self.weight.shape[1], output.numel()


class DynamicBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the first ``C`` channels of its largest form (OFA DynamicBatchNorm2d).

    In training mode the running statistics of the active prefix are updated
    in place, inside the supernet's buffers.
    """

    def reset_parameters(self) -> None:
        if self.running_mean is not None and self.running_mean.is_meta:
            return  # a template on ``meta``: nothing to initialise
        super().reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        c = (x.shape[1],)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative average, used by BN recalibration
                factor = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or self.running_mean is None
        return F.batch_norm(
            x,
            None if self.running_mean is None else nested(self.running_mean, c),
            None if self.running_var is None else nested(self.running_var, c),
            None if self.weight is None else nested(self.weight, c),
            None if self.bias is None else nested(self.bias, c),
            use_batch_stats,
            factor,
            self.eps,
        )


class DynamicLayerNorm(nn.LayerNorm):
    """LayerNorm over the first ``D`` features of its largest form."""

    def forward(self, x: Tensor) -> Tensor:
        d = (x.shape[-1],)
        return F.layer_norm(x, d, nested(self.weight, d), nested(self.bias, d), self.eps)


def activation(name: str) -> nn.Module:
    """An activation module by name (``relu``, ``hswish``, ``hsigmoid``, ``gelu``, and
    ``identity``: DARTS's stride-1 ``skip_connect``)."""
    table: dict[str, type[nn.Module]] = {
        "relu": nn.ReLU, "hswish": nn.Hardswish, "hsigmoid": nn.Hardsigmoid, "gelu": nn.GELU,
        "identity": nn.Identity,
    }
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(table)}")
    return table[name]()


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[Tensor]) -> None:
    """Re-estimate BatchNorm statistics of an extracted subnet (OFA ``set_running_statistics``).

    Resets every BatchNorm's statistics, switches it to a cumulative average
    (momentum ``None``), runs the batches in training mode, then restores the
    momentum and the model's mode.  Weights are not touched.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for batch in batches:
        model(batch)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)


Shapes = list[tuple[str, tuple[int, ...]]]
"""(state_dict key, shape) pairs in ``state_dict`` order."""
