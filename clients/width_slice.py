"""The HeteroFL / FedRolex client role: trains the width slice the server sent.

A message carries the slice's arrays and its width rate (``width_rate``); the client builds
the width-``rate`` network (:class:`pfednas.search.width.WidthSlicer`) and loads them.
Training follows HeteroFL's paper and code (Diao et al., ICLR'21):

* **static BatchNorm**: batch statistics, none tracked (the running statistics travel
  unchanged; the client's are estimated on its own train split before it is tested);
* **scaler**: each convolution's output divided by the rate while training (a
  convolution followed by BatchNorm is unchanged by it; the squeeze-and-excitation's are
  not);
* **masked loss**: the logits of classes absent from the client's train split are 0.

Evaluation: the slice with its statistics estimated on the client's train split, tested as
it is (the paper's figure, ``accuracy_no_ft``) and after the benchmark protocol's fine-tuning
(:func:`pfednas.clients.common.finetune_then_test`). The kept model names the scaled space it
belongs to, so that ``pfednas export`` / ``predict`` rebuild it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from flwr.client import NumPyClient
from torch import nn

from pfednas.clients.common import (
    ClientEnv,
    finetune_then_test,
    hyper_from_config,
    peak_memory_mb,
    train_generator,
    work_metrics,
)
from pfednas.clients.subnet import recalibrate_on
from pfednas.edge.kept import KeptModel
from pfednas.options.devices import HeteroFLOptions
from pfednas.search import ElasticNet
from pfednas.search.ops import DynamicConv2d
from pfednas.search.width import WidthSlicer, check_rate
from pfednas.train import get_arrays, set_arrays, train_epochs
from pfednas.wire.messages import WIDTH_RATE, RoundConfig, Sgd


@contextmanager
def heterofl_training(net: ElasticNet[Any], rate: float, present: torch.Tensor | None, *,
                      scaler: bool, static_bn: bool) -> Iterator[None]:
    """While training ``net``: HeteroFL's scaler (every convolution's output ÷ ``rate``),
    static BatchNorm (running statistics left as they are) and masked loss (logits of the
    classes not in ``present`` set to 0). All undone on leaving."""
    hooks = []
    if scaler and rate != 1:
        for module in net.modules():
            if isinstance(module, DynamicConv2d):
                hooks.append(module.register_forward_hook(
                    lambda m, i, out: out / rate if m.training else out))
    if present is not None:
        head = net.get_submodule(net.head_parameter_names()[0].rpartition(".")[0])
        mask = present

        def masked(module: nn.Module, inputs: Any, out: torch.Tensor) -> torch.Tensor:
            return out.masked_fill(~mask.to(out.device), 0.0) if module.training else out

        hooks.append(head.register_forward_hook(masked))
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    if static_bn:
        for m in norms:
            m.momentum = 0.0  # batch statistics normalise; the running ones stay as they came
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum


class WidthSliceClient(NumPyClient):
    def __init__(self, env: ClientEnv, slicer: WidthSlicer, run_space: dict[str, Any],
                 options: HeteroFLOptions) -> None:
        self.env, self.slicer, self.run_space, self.options = env, slicer, run_space, options

    def model(self, parameters: list[np.ndarray], config: dict[str, Any]
              ) -> tuple[ElasticNet[Any], float]:
        rate = float(config[WIDTH_RATE])
        check_rate(rate, WIDTH_RATE)
        net = self.slicer.build(rate)
        set_arrays(net, parameters)
        return net, rate

    def present_classes(self) -> torch.Tensor | None:
        if not self.options.label_mask:
            return None
        classes = self.slicer.task.num_classes
        present = torch.zeros(classes, dtype=torch.bool)
        present[torch.as_tensor(np.unique(self.env.data.train.y), dtype=torch.long)] = True
        return present

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]
            ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        round_config = RoundConfig.read(config)
        net, rate = self.model(parameters, config)
        with heterofl_training(net, rate, self.present_classes(), scaler=self.options.scaler,
                               static_bn=self.options.static_bn):
            stats = train_epochs(net, self.env.data.train, epochs=round_config.local_epochs,
                                 hyper=hyper_from_config(config),
                                 generator=train_generator(self.env,
                                                           round_config.server_round),
                                 device=self.env.device)
        metrics = {"train_loss": stats.loss, **work_metrics(stats),
                   "peak_memory_mb": peak_memory_mb(self.env.device)}
        return get_arrays(net), len(self.env.data.train.y), metrics

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]
                 ) -> tuple[float, int, dict[str, Any]]:
        net, rate = self.model(parameters, config)
        self.recalibrate(net, config)
        space = self.slicer.space_config(rate, self.run_space)
        arch = self.slicer.scaled_space(rate).max_arch().to_str()
        env = self.env
        if env.keep is not None:  # the kept slice names its scaled space
            keep = env.keep

            def keep_slice(model: KeptModel) -> None:
                keep(dataclasses.replace(model, search_space=space))

            env = dataclasses.replace(env, keep=keep_slice)
        return finetune_then_test(net, env, config, arch=arch,
                                  after_tuning=lambda tuned: self.recalibrate(tuned, config))

    def recalibrate(self, net: nn.Module, config: dict[str, Any]) -> None:
        """Static BatchNorm's statistics, estimated on the client's own train split."""
        if self.options.static_bn:
            recalibrate_on(net, self.env.data.train, Sgd.read(config).batch_size, self.env.device)
