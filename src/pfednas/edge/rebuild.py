"""The PyTorch network of a kept model: built from its spec, holding its checked weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pfednas.edge.kept import KeptModelError, read_weights
from pfednas.search import ElasticNet, TaskShape, get_space


def task_of(spec: dict[str, Any]) -> TaskShape:
    task = spec["task"]
    return TaskShape(int(task["num_classes"]), int(task["in_channels"]), int(task["image_size"]))


def rebuild(folder: Path, spec: dict[str, Any], kind: str) -> ElasticNet[Any]:
    """The network of kept model ``kind``, in eval mode; raises :class:`KeptModelError` when
    the spec and the weights disagree (architecture, keys, shapes)."""
    task = task_of(spec)
    if kind not in spec["models"]:
        raise KeptModelError(f"{folder}: no {kind} model kept (kept: "
                             f"{', '.join(sorted(spec['models']))})")
    try:
        space = get_space(**spec["search_space"])
        arch = space.arch_from_str(spec["models"][kind]["arch"])
        net = space.build_net(space.net_config(arch, task), task)
    except (TypeError, ValueError) as err:
        raise KeptModelError(f"{folder}: the spec's architecture cannot be built ({err})") from err
    expected = net.state_dict()
    # the file may hold no more than the network it claims to be
    state = read_weights(folder, spec, kind, budget=sum(t.numel() * t.element_size()
                                                        for t in expected.values()))
    if list(expected) != list(state):
        missing = sorted(set(expected) - set(state))[:3]
        extra = sorted(set(state) - set(expected))[:3]
        raise KeptModelError(f"{folder}: the weights do not match architecture "
                             f"{arch.to_str()} (missing {missing}, unexpected {extra})")
    for key, tensor in expected.items():
        if tuple(tensor.shape) != state[key].shape:
            raise KeptModelError(f"{folder}: {key} has shape {state[key].shape}, architecture "
                                 f"{arch.to_str()} needs {tuple(tensor.shape)}")
    net.load_state_dict({k: torch.as_tensor(np.asarray(v)).to(expected[k].dtype)
                         for k, v in state.items()}, strict=True)
    return net.eval()
