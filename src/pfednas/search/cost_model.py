"""The static cost model: what one forward pass costs, and what training a subnet holds.

The counting rule (:func:`module_cost_terms`): a module with a ``cost_terms``
method says its own (MACs, activation elements); otherwise a leaf module's
output counts as activations, and a ``Conv2d`` / ``Linear`` adds its
multiply–accumulates.  :func:`traced_cost_terms` applies the rule to every
module call of a ``meta`` forward pass; the spaces' plans (:mod:`pfednas.search.layers`)
(``SearchSpace.forward_cost``) equal it, and :func:`training_cost` turns the
terms into a :class:`~pfednas.search.arch.Cost`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from pfednas.search.arch import Cost, TaskShape

TRAIN_MACS_PER_FORWARD = 3  # forward + backward (≈ 2 × forward) multiply-accumulates


def module_cost_terms(
    module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor
) -> tuple[int, int]:
    """(MACs, activation elements) one module adds; leaf outputs count as activations."""
    terms = getattr(module, "cost_terms", None)
    if terms is not None:
        return terms(inputs, output)  # type: ignore[no-any-return]
    if not isinstance(output, Tensor) or any(True for _ in module.children()):
        return 0, 0
    if isinstance(module, nn.Conv2d):
        return output.numel() * module.weight[0].numel(), output.numel()
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features, output.numel()
    return 0, output.numel()


@torch.no_grad()
def traced_cost_terms(
    net: nn.Module, task: TaskShape, batch_size: int = 1
) -> list[tuple[str, int, int]]:
    """(module name, MACs, activation elements) of every module call of a ``meta`` forward pass.

    ``net`` (built on ``meta``) is put in eval mode; the counting rule per
    module is :func:`module_cost_terms`.
    """
    terms: list[tuple[str, int, int]] = []

    def hook_for(name: str) -> Any:
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            terms.append((name, *module_cost_terms(module, inputs, output)))

        return hook

    net.eval()
    handles = [m.register_forward_hook(hook_for(n)) for n, m in net.named_modules()]
    try:
        net(
            torch.empty(
                batch_size, task.in_channels, task.image_size, task.image_size, device="meta"
            )
        )
    finally:
        for h in handles:
            h.remove()
    return terms


def training_cost(
    *, params: int, payload_bytes: int, macs: int, activations: int, optimizer_states: int
) -> Cost:
    """The :class:`Cost` of training a subnet, from its forward-pass terms over one batch.

    Memory: float32 weights, gradients and ``optimizer_states`` tensors per
    weight, plus the activations kept for backward.
    """
    activation_bytes = 4 * activations
    return Cost(
        params=params,
        flops=macs,
        activation_bytes=activation_bytes,
        memory_bytes=4 * params * (2 + optimizer_states) + activation_bytes,
        payload_bytes=payload_bytes,
    )


def reference_cost(
    subnet: nn.Module, task: TaskShape, *, batch_size: int, optimizer_states: int
) -> Cost:
    """The cost model by definition: a traced forward pass of ``subnet`` (built on ``meta``)."""
    terms = traced_cost_terms(subnet, task, batch_size)
    return training_cost(
        params=sum(p.numel() for p in subnet.parameters()),
        payload_bytes=sum(v.numel() * v.element_size() for v in subnet.state_dict().values()),
        macs=sum(t[1] for t in terms),
        activations=sum(t[2] for t in terms),
        optimizer_states=optimizer_states,
    )
