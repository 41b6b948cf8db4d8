"""HeteroFL and FedRolex: width slices of one global model, each client's sized to its device.

HeteroFL (Diao et al., ICLR'21). The server holds one global model (the search space's largest
network). A client of capacity level ``r`` trains the global model's width-``r`` slice: every
hidden width ``ceil(r · C)``, the **leading** channels, the same every round. The server
averages each global entry over the clients whose slice holds it (entries nobody held keep
their value; a robust ``federation.aggregation``: its trimmed mean or median over them).
Clients train with the paper's static BatchNorm (batch statistics, none tracked)
and scaler (a convolution's output ÷ ``r`` while training), and its masked loss (classes absent
from the client's train split get logit 0).

FedRolex (Alam et al., NeurIPS'22): the same, but the slice is a window of consecutive channels
that **rolls** one channel a round (starting at ``round mod C`` on each axis), so the whole
global model is trained even when no client can hold it.

A client's rate: its device level where ``federation.hardware`` draws levels, else the largest
of ``rates`` whose slice's training memory fits its budget (the clients no slice fits are
excluded, as every method excludes them). Personalized model: the client's leading slice of
the final global model, its BatchNorm statistics estimated on its own train split (the paper's
static BatchNorm, queried on the client's data), and with F > 0 fine-tuned like FedAvg+FT (the
benchmark protocol's +FT); the slice as it is (``accuracy_no_ft``) is reported beside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Message, MessageType

from pfednas.hardware.profile import exclusions
from pfednas.nas.merge import overlap_merge
from pfednas.options.devices import HeteroFLOptions
from pfednas.records import StageResult, arch_details
from pfednas.search import Cost, Region
from pfednas.search.memory_bound import budgeted_cost
from pfednas.search.width import LEADING, WidthSlicer, rate_label
from pfednas.strategies.base import Budget, PersonalizedStrategy
from pfednas.strategies.budget import Roster
from pfednas.strategies.outgoing import Outgoing
from pfednas.wire.messages import WIDTH_RATE, Sgd
from pfednas.wire.validation import array_specs


@dataclass
class SlicePlan:
    """What a training round sent: each client's rate and where its slice sits."""

    regions: dict[int, tuple[float, list[Region]]] = field(default_factory=dict)


class WidthSliceStrategy(PersonalizedStrategy):
    TRAIN_REQUIRES = ("train_loss",)

    def __init__(self, *, budget: Budget, sgd: Sgd, slicer: WidthSlicer,
                 initial_arrays: Sequence[np.ndarray], array_roles: Sequence[str],
                 options: HeteroFLOptions, roster: Roster | None = None) -> None:
        super().__init__(budget=budget, sgd=sgd, roster=roster)
        self.slicer, self.options = slicer, options
        self.extraction = type(options).EXTRACTION
        self.arrays = [np.asarray(a) for a in initial_arrays]
        self.roles = list(array_roles)
        array_specs(self.arrays, self.roles)
        if [a.shape for a in self.arrays] != [tuple(s) for _, s in slicer.full]:
            raise ValueError("the global model's arrays do not match the slicer's shapes")
        self.finetune_epochs = options.finetune_epochs
        missing = set(range(budget.num_clients)) - set(self.profiles)
        if missing and not budget.deployment:
            raise ValueError(f"{type(options).__name__}: no hardware profile for client(s) "
                             f"{sorted(missing)[:10]}")
        if not budget.deployment:
            self.profiles_bound()

    # -- each client's rate ------------------------------------------------------------------
    def cost(self, rate: float) -> Cost:
        """The width-``rate`` slice's cost as a budget sees it (real bytes in a deployment)."""
        cost = self.slicer.cost(rate, self.sgd.batch_size)
        return budgeted_cost(cost, self.slicer.space.name, real_bytes=self.budget.deployment)

    def rate_of(self, client_id: int) -> float | None:
        """The client's device level where it has one of ``rates``, else the largest rate
        whose slice fits its memory budget; None where none fits."""
        profile = self.profiles[client_id]
        if profile.level is not None and profile.level in self.options.rates:
            return profile.level
        for rate in self.options.rates:  # largest first
            if profile.fits(self.cost(rate).memory_bytes):
                return rate
        return None

    def profiles_bound(self) -> None:
        """The clients no slice fits are excluded (their reason in ``summary.json``)."""
        smallest = self.cost(min(self.options.rates)).memory_bytes
        self.excluded = exclusions(self.profiles, smallest, lambda p: p.memory_bytes)

    # -- training ----------------------------------------------------------------------------
    def configure_train(self, server_round: int) -> Outgoing[SlicePlan]:
        plan, messages = SlicePlan(), []
        for cid in self.train_clients(server_round):
            rate = self.rate_of(cid)
            if rate is None:
                continue
            regions = self.slicer.regions(rate, self.extraction, server_round)
            arrays = [np.array(self.arrays[i][where], copy=True) for i, where in regions]
            plan.regions[cid] = (rate, regions)
            cfg = self.round_config(server_round, **{WIDTH_RATE: rate})
            messages.append(self.message(cid, MessageType.TRAIN, cfg, arrays, self.roles))
        return Outgoing(messages, plan)

    def aggregate_train(self, server_round: int, replies: Iterable[Message],
                        sent: Outgoing[Any] | None = None) -> StageResult:
        plan = sent.plan if sent is not None and isinstance(sent.plan, SlicePlan) else None
        if plan is None:
            raise ValueError("a width-slice strategy aggregates what configure_train sent: "
                             "pass its plan")
        rows, contributions = [], []
        for metrics, arrays in self.train_replies(replies):
            cid = int(metrics["client_id"])
            if cid not in plan.regions:
                continue
            rate, regions = plan.regions[cid]
            contributions.append((regions, arrays, self.weight(metrics)))
            rows.append({**self.train_row(metrics), "width_rate": rate})
        if contributions and self.enough(len(contributions)):
            merged = overlap_merge(self.arrays, contributions, self.budget.aggregation)
            self.arrays = merged.arrays
            self.screened(rows, merged.kept)
        return StageResult(train=rows)

    # -- personalized evaluation -------------------------------------------------------------
    def configure_evaluate(self, server_round: int) -> Outgoing[Any]:
        if not self.is_eval_round(server_round):
            return Outgoing()
        messages = []
        for cid in range(self.budget.num_clients):
            rate = None if cid in self.excluded else self.rate_of(cid)
            if rate is None:
                continue
            arrays = [np.array(self.arrays[i][where], copy=True)
                      for i, where in self.slicer.regions(rate, LEADING)]
            cfg = self.round_config(server_round, **{WIDTH_RATE: rate},
                                    **self.finetune_config(server_round,
                                                           self.options.finetune_scope))
            messages.append(self.message(cid, MessageType.EVALUATE, cfg, arrays))
        return Outgoing(messages)

    def evaluation_details(self, client_id: int) -> dict[str, Any]:
        rate = self.rate_of(client_id)
        if rate is None:
            return {}
        space = self.slicer.scaled_space(rate)
        details = arch_details(space.max_arch(), self.cost(rate), metric="memory",
                               budget=self.profiles[client_id].memory_bytes)
        return {**details, "width_rate": rate}

    def summary_extra(self, records: list[Any]) -> dict[str, Any]:
        rates = {cid: self.rate_of(cid) for cid in range(self.budget.num_clients)
                 if cid not in self.excluded}
        counts: dict[str, int] = {}
        for rate in rates.values():
            if rate is not None:
                counts[rate_label(rate)] = counts.get(rate_label(rate), 0) + 1
        return {**super().summary_extra(records), "extraction": self.extraction,
                "clients_per_rate": counts}

    # -- checkpoints -------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        return {f"global_{i}": a for i, a in enumerate(self.arrays)}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        arrays = [state[f"global_{i}"] for i in range(len(self.arrays))]
        if [a.shape for a in arrays] != [a.shape for a in self.arrays]:
            raise ValueError("checkpoint does not match the global model's shapes")
        self.arrays = arrays
