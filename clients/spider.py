"""SPIDER client (Mushtaq et al., TMLR): a global supernet and a searched local model; Ditto.

Each round the client receives the global ``darts_s2`` supernet ``w``, then

1. (SPIDER only) runs one step of the progressive searcher (Alg. 2,
   :mod:`pfednas.nas.progressive`) on its local model and validation split:
   dropped operations' parameters leave the local model (it is rebuilt at the
   smaller mask);
2. trains the pair (Alg. 1, :func:`pfednas.nas.spider.train_pair`): per
   minibatch a global CE step, then a local step on
   CE + (λ/2)‖v_k − w_share‖² with ``w_share`` the round-start global weights
   on the local model's coordinates (eq. 4) — on train, or on train +
   validation once every edge is decided (phase 3), never before;
3. replies with the global supernet's arrays only. Local weights and mask stay
   in ``Context.state`` (and in ``checkpoint-dir``, see :mod:`.spider_state`).

On its first round the local model is cut from the received global weights
(the reference started it from its own random initialisation). Evaluation:
the local model on the client's own test split, after ``finetune_epochs`` of
fine-tuning where the message asks for it (a copy: the kept local model is
unchanged; the accuracy before it is reported too, as for every method); the
architecture travels as an integer code (:mod:`pfednas.wire.archcode`),
MetricRecords holding numbers only.

Ditto (Li et al., 2021) is the same client with ``search=False``: the local
architecture stays fixed (the full supernet, or ``arch``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from flwr.app import RecordDict
from flwr.client import NumPyClient
from torch import nn

from pfednas.clients.common import (
    ClientEnv,
    finetune_then_test,
    hyper_from_config,
    peak_memory_mb,
    train_generator,
)
from pfednas.clients.spider_state import (
    SpiderOptions,
    SpiderState,
    checkpoint_path,
    load_checkpoint,
    read_records,
    rng_state_json,
    save_checkpoint,
    write_records,
)
from pfednas.data import ArrayDataset
from pfednas.nas.progressive import FINAL, last_decision_round, phase_of, search_round
from pfednas.nas.spider import PairHyper, train_pair
from pfednas.search import CellMask, DartsS2Space, ElasticNet, Supernet, TaskShape
from pfednas.search.darts_s2 import DartsNet
from pfednas.seeding import SPIDER_SEARCH, numpy_rng
from pfednas.train import counted_forward, get_arrays, num_parameters, set_arrays, to_tensors
from pfednas.wire.archcode import arch_to_code
from pfednas.wire.messages import RoundConfig


@torch.no_grad()
def masked_accuracy(net: ElasticNet[CellMask], mask: CellMask, data: ArrayDataset, *,
                    device: torch.device, batch_size: int = 512) -> tuple[float, int]:
    """Accuracy of ``net`` run at sub-mask ``mask`` (a perturbed architecture), and the
    cost model's forward MACs of the pass (counted on its first batch)."""
    net.to(device).eval()
    x, y = to_tensors(data, device)
    correct, per_sample = 0, 0
    for i in range(0, len(y), batch_size):
        if i == 0:
            out, per_sample, _ = counted_forward(net, x[:batch_size],
                                                 lambda inp: net(inp, mask))
        else:
            out = net(x[i:i + batch_size], mask)
        correct += int((out.argmax(1) == y[i:i + batch_size]).sum())
    return correct / max(len(y), 1), per_sample * len(y)


def rebuild(net: nn.Module, space: DartsS2Space, task: TaskShape, mask: CellMask) -> DartsNet:
    """The network of ``mask`` holding ``net``'s weights; dropped operations are gone."""
    smaller = space.build_net(mask, task)
    old = net.state_dict()
    smaller.load_state_dict({k: old[k] for k in smaller.state_dict()}, strict=True)
    return smaller


class SpiderClient(NumPyClient):
    def __init__(self, env: ClientEnv, space: DartsS2Space, task: TaskShape,
                 options: SpiderOptions, state: RecordDict, *, fingerprint: str,
                 checkpoint_dir: str | None = None) -> None:
        self.env, self.space, self.task, self.options = env, space, task, options
        self.state, self.fingerprint = state, fingerprint
        self.checkpoint = (checkpoint_path(checkpoint_dir, env.client_id)
                           if checkpoint_dir else None)
        initial = space.arch_from_str(options.arch) if options.arch else space.max_arch()
        self.initial_mask = space.mask(initial).to_array()

    # -- state -------------------------------------------------------------------------------
    def _restore(self, before_round: int) -> SpiderState | None:
        saved = read_records(self.state)
        if saved is None and self.checkpoint is not None:
            saved = load_checkpoint(self.checkpoint, fingerprint=self.fingerprint,
                                    before_round=before_round)
        return saved

    def _fresh(self, supernet: Supernet) -> SpiderState:
        mask = self.initial_mask
        arch = self.space.arch_from_mask(CellMask.from_array(mask))
        rng = numpy_rng(self.env.seed, SPIDER_SEARCH, self.env.client_id)
        decided = mask.sum(axis=2) <= 1 if self.options.search else np.ones(mask.shape[:2], bool)
        return SpiderState(local=get_arrays(supernet.extract(arch)), mask=mask, decided=decided,
                           rounds=0, last_round=0, rng_state=rng_state_json(rng),
                           fingerprint=self.fingerprint)

    def _persist(self, state: SpiderState) -> None:
        write_records(self.state, state)
        if self.checkpoint is not None:
            save_checkpoint(self.checkpoint, state)

    def _local_net(self, state: SpiderState) -> DartsNet:
        net = self.space.build_net(CellMask.from_array(state.mask), self.task)
        set_arrays(net, state.local)
        return net

    def _supernet(self, parameters: list[np.ndarray]) -> Supernet:
        supernet = self.space.build_supernet(num_classes=self.task.num_classes,
                                             in_channels=self.task.in_channels,
                                             image_size=self.task.image_size)
        supernet.load_state_arrays(parameters)
        return supernet

    def _arch_metrics(self, state: SpiderState, local: nn.Module) -> dict[str, Any]:
        """Local architecture (code), size, and the phase its last training round ran in."""
        arch = self.space.arch_from_mask(CellMask.from_array(state.mask))
        phase = phase_of(max(state.rounds - 1, 0), state.decided, self.options.schedule)
        return {"arch_code": arch_to_code(self.space, arch), "num_params": num_parameters(local),
                "phase": phase, "decided_edges": int(state.decided.sum())}

    # -- NumPyClient ---------------------------------------------------------------------------
    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]
            ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        round_config = RoundConfig.read(config)
        server_round = round_config.server_round
        supernet = self._supernet(parameters)
        state = self._restore(server_round) or self._fresh(supernet)
        local = self._local_net(state)
        mask, decided = state.mask, state.decided
        rng = state.generator()
        forward = [0]  # the perturbation evaluations' MACs

        def perturbed_accuracy(m: np.ndarray) -> float:
            accuracy, macs = masked_accuracy(local, CellMask.from_array(m), self.env.data.val,
                                             device=self.env.device)
            forward[0] += macs
            return accuracy

        if self.options.search:
            mask, decided, _ = search_round(
                state.mask, state.decided, state.rounds, self.options.schedule, rng,
                perturbed_accuracy)
            if not np.array_equal(mask, state.mask):
                local = rebuild(local, self.space, self.task, CellMask.from_array(mask))
        final = phase_of(state.rounds, decided, self.options.schedule) == FINAL
        if not self.options.search:  # Ditto: the same data in the same rounds as SPIDER
            final = state.rounds >= last_decision_round(self.options.schedule,
                                                        int(decided.shape[1]))
        data = self.env.data.train
        if final and self.options.train_on_val_when_final:
            data = ArrayDataset(x=np.concatenate([data.x, self.env.data.val.x]),
                                y=np.concatenate([data.y, self.env.data.val.y]))
        pair = PairHyper(hyper=hyper_from_config(config), lam=self.options.lam,
                         grad_clip=self.options.grad_clip)
        stats = train_pair(supernet.net, local, data, epochs=round_config.local_epochs,
                           pair=pair, generator=train_generator(self.env, server_round),
                           device=self.env.device)
        supernet.net.cpu()
        state = SpiderState(local=get_arrays(local), mask=mask, decided=decided,
                            rounds=state.rounds + 1, last_round=server_round,
                            rng_state=rng_state_json(rng), fingerprint=self.fingerprint)
        self._persist(state)
        metrics = {"train_loss": stats.global_loss, "local_loss": stats.local_loss,
                   "penalty": stats.penalty, "train_seconds": stats.seconds,
                   "sample_passes": 2 * stats.samples,  # the global and the local model
                   "train_macs": float(stats.macs), "forward_macs": float(forward[0]),
                   "peak_memory_mb": peak_memory_mb(self.env.device),
                   **self._arch_metrics(state, local)}
        return supernet.state_arrays(), len(data.y), metrics

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]
                 ) -> tuple[float, int, dict[str, Any]]:
        round_config = RoundConfig.read(config)
        state = self._restore(round_config.server_round + 1)
        if state is None:
            if not parameters:
                raise RuntimeError("no local model yet and no global weights to start one from")
            state = self._fresh(self._supernet(parameters))
        local = self._local_net(state)
        arch = self._arch_metrics(state, local)
        text = self.space.arch_from_mask(CellMask.from_array(state.mask)).to_str()
        loss, samples, metrics = finetune_then_test(local, self.env, config, arch=text)
        return loss, samples, {**metrics, **arch}
