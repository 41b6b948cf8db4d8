"""PerFedRLNAS's options (Yao & Li): the one source of their defaults.

the dataclass is the ``method=perfedrlnas`` config (:mod:`pfednas.options`). Beside the
paper's knobs, three options of ours earned their place on the Fashion-MNIST tuning seed
(docs/notes/2026-11-24-one-knob-diagnostics.md, docs/notes/2026-11-25-where-nas-loses.md):
``personal_head`` (as published 0.576 -> 0.828), ``exploit_rounds`` (as published 0.45 ->
0.76 with 20 of 40 rounds) and ``finetune_scope=head`` (+FT +0.004 here, +0.048 / +0.070
for FedAvg+FT). Options tried and removed: docs/TUNING.md, "Options that left the methods".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pfednas.nas.policy import PolicyOptimizer
from pfednas.options.baselines import FINETUNE_EPOCHS
from pfednas.options.common import FINETUNE_SCOPES, check_int, check_scope

ROUND_TIMES = ("simulated", "measured")


@dataclass(frozen=True)
class PerFedRLNASOptions:
    """PerFedRLNAS (Yao & Li): server supernet, one REINFORCE policy per client, only the
    sampled subnet travels; rewards eqs. 8-9 (strategies/perfedrlnas.py)."""

    # the policies' optimiser: Adam lr 0.5 (the reference's; policies commit, so clients keep
    # training their own subnet: chosen by federated runs, docs/notes/2026-11-23-digits-main-job.md)
    policy_optimizer: str = "adam"     # adam | sgd
    policy_lr: float = 0.5             # the policies' learning rate (the logits' step size)
    lambda_time: float = 0.001         # eq. 8: reward penalty per second above the round's fastest
    bn_recalibrate: bool = True        # re-estimate BatchNorm statistics on its train split
    # RT_i: simulated (compute x speed + bytes / bandwidth, the cost model) | measured (the
    # server's clock, send -> reply; always so in a deployment)
    round_time: str = "simulated"
    new_clients: int = 0               # held out of training, personalized by search-only rounds
    new_client_rounds: int = 10        # the search-only rounds of the new clients
    failure_reward: float | None = None  # reward of a failed / rejected client (null: no update)
    # F: fine-tune the argmax slice this many epochs before the test evaluation (the benchmark
    # protocol's +FT, not in the paper); the paper's figure is reported beside it (accuracy_no_ft)
    finetune_epochs: int = FINETUNE_EPOCHS
    # what +FT trains: head (the classifier: bench=digits' choice) | full (the whole slice)
    finetune_scope: str = "head"
    # last rounds: each client trains its personalized architecture (argmax within budget), no
    # policy update: search, then retrain (not in the paper; an option)
    exploit_rounds: int = 0
    # each client keeps its own classifier head, trained with the body, never sent (FedRep's
    # rule on the subnets; an option, not in the paper)
    personal_head: bool = False
    # in-place distillation: each batch also trains this many subnets nested in the client's,
    # distilled from its outputs (BigNAS's sandwich rule within the client's subnet; 0: off;
    # an option, not in the paper; nas/sandwich.py)
    sandwich_students: int = 0

    def __post_init__(self) -> None:
        PolicyOptimizer(kind=self.policy_optimizer, lr=self.policy_lr)  # checks both
        check_scope("finetune_scope", self.finetune_scope, FINETUNE_SCOPES)
        check_scope("round_time", self.round_time, ROUND_TIMES)
        if not self.lambda_time >= 0:
            raise ValueError(f"lambda_time must be >= 0, got {self.lambda_time!r}")
        for name in ("new_clients", "new_client_rounds", "exploit_rounds", "finetune_epochs",
                     "sandwich_students"):
            check_int(name, getattr(self, name), 0)

    def check_federation(self, federation: Any) -> None:
        """Held-out clients leave training clients enough for a round."""
        if self.new_clients >= federation.num_clients:
            raise ValueError("new_clients must be < federation.num_clients")
        if federation.clients_per_round > federation.num_clients - self.new_clients:
            raise ValueError("federation.clients_per_round must not exceed the num_clients - "
                             "method.new_clients training clients")

    @property
    def policy(self) -> PolicyOptimizer:
        return PolicyOptimizer(kind=self.policy_optimizer, lr=self.policy_lr)

