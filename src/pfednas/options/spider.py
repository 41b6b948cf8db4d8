"""SPIDER's options (Mushtaq et al., TMLR) and Ditto's, SPIDER's trainer with the local
architecture fixed: the one source of their defaults (``conf/method/{spider,ditto}.yaml``
only override them; :mod:`pfednas.options`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from pfednas.nas.progressive import SearchSchedule
from pfednas.options.baselines import FINETUNE_EPOCHS
from pfednas.options.common import FINETUNE_SCOPES, check_int, check_scope, is_arch_string

PARTICIPATIONS = ("all", "sampled")


@dataclass(frozen=True)
class SpiderOptions:
    """SPIDER (Mushtaq et al., TMLR): per client a global darts_s2 supernet (FedAvg) and a
    local model whose architecture it searches by perturbation (Alg. 1-2, eq. 4); runs on
    darts_s2, cross-silo (conf/method/spider.yaml selects both)."""

    lam: float = 0.01          # λ of eq. 4 (the published command; the reference default is 2)
    grad_clip: float = 5.0     # max L2 norm of each model's gradient per step (<= 0: off)
    # the search schedule, in rounds the client has trained. SHORTENED for CPU: the paper
    # warms up t_s = 30 rounds and recovers τ = 20 between decisions (1,000 rounds); t_s = 1,
    # τ = 1 as in the reference's published command: one edge per cell type decided a round
    warmup_rounds: int = 1     # t_s
    recovery_rounds: int = 1   # τ
    arch: str | None = None    # the initial (Ditto: fixed) local architecture; null: the supernet
    # phase 3 of the paper: also train on the validation split once every edge is decided.
    # Off: every method of a comparison trains on the same samples, its train split
    # (docs/BENCHMARKS.md); a run that scores validation data (eval_split) refuses it on
    train_on_val_when_final: bool = False
    # all: every client every round (cross-silo; clients_per_round is ignored) | sampled
    participation: str = "all"
    # F: fine-tune a copy of the local model this many epochs on the train split before the
    # final test evaluation (the protocol's +FT; neither paper does); the figure without it,
    # the papers', is reported beside it (accuracy_no_ft). The kept local model is unchanged
    finetune_epochs: int = FINETUNE_EPOCHS
    finetune_scope: str = "full"  # what +FT trains: full (the whole local model) | head
    search: bool = True        # the method's, not an option: SPIDER searches, Ditto does not

    def __post_init__(self) -> None:
        if self.lam < 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")
        if self.participation not in PARTICIPATIONS:
            raise ValueError(f"participation must be all|sampled, got {self.participation!r}")
        SearchSchedule(self.warmup_rounds, self.recovery_rounds)
        check_int("finetune_epochs", self.finetune_epochs, 0)
        check_scope("finetune_scope", self.finetune_scope, FINETUNE_SCOPES)
        if self.arch is not None and not is_arch_string(self.arch):
            raise ValueError(f"arch must be null (the supernet) or an architecture string "
                             f"(darts_s2:n_<14 letters>-r_<14 letters>), got {self.arch!r}")

    @property
    def schedule(self) -> SearchSchedule:
        return SearchSchedule(self.warmup_rounds, self.recovery_rounds)

    @staticmethod
    def from_config(options: Mapping[str, Any], *, search: bool) -> SpiderOptions:
        values = {k: v for k, v in options.items() if k != "name"}
        if values.pop("search", search) != search:
            raise ValueError("search is the method's, not an option: method=spider searches, "
                             "method=ditto does not")
        unknown = sorted(set(values) - {f.name for f in fields(SpiderOptions)})
        if unknown:
            raise ValueError(f"unknown option(s): {', '.join(unknown)}")
        for name in ("lam", "grad_clip"):
            if name in values:
                values[name] = float(values[name])
        return replace(SpiderOptions(**values), search=search)


@dataclass(frozen=True)
class DittoOptions(SpiderOptions):
    """Ditto (Li et al., 2021) as SPIDER's baseline: the local architecture fixed (``arch``, or
    the full supernet), so the gain of SPIDER's search is measured with all else equal.
    ``warmup_rounds`` / ``recovery_rounds``: when SPIDER's search would decide its last edge,
    from which round the final phase trains on train + val alike."""

    search: bool = False
