"""The typed values a run is built from (:class:`RunSettings`, its :class:`Federation`), the
:class:`ConfigError` their checks raise, and what they say: a one-line summary, the task shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pfednas.data import DataSpec, dataset_info
from pfednas.nas.heterogeneity import HardwareSpread

if TYPE_CHECKING:  # pfednas.search imports torch: the command's checks before it stay quick
    from pfednas.search import TaskShape


class ConfigError(ValueError):
    """An invalid configuration value; the message says which and why."""


@dataclass(frozen=True)
class Federation:
    """Federation-wide budgets and resources (the ``federation/`` group)."""

    num_clients: int
    clients_per_round: int
    num_rounds: int
    local_epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    eval_every: int
    round_timeout: float
    min_replies: int
    client_cpus: int
    client_gpus: float
    ray_num_cpus: int | None
    ray_address: str | None = None   # null: a private Ray; "auto" | HOST:PORT: join that cluster
    # samples | uniform: client weights in averages and merges; null: the method's paper rule
    weighting: str | None = None
    examples_tolerance: float = 0.5   # deployment: allowed rise of a client's num_examples
    eval_timeout: float | None = None
    eval_finetune: str = "final"
    # the final evaluation also fine-tunes a copy at the other scope (head / full) and reports
    # both (accuracy_ft_full, accuracy_ft_head): a tuning grid's scope axis from one run
    finetune_both: bool = False
    allow_missing_clients: bool = False
    # deployment: each client's largest num_examples, stated by the operator (one number for
    # all, or a list of K); null: clients weigh equally (their own counts bound nothing)
    client_examples: int | list[int] | None = None
    # each training update's RMS at most this × the round's lower median; null: off in a
    # simulation, 10 in a deployment; 0: off (pfednas.nas.robust)
    update_norm_bound: float | None = None
    # deployment: the operator's bounds of each node's claimed hardware profile, the
    # bandwidth of a node that states none, and fits_all's floor (pfednas.nas.profile)
    profile_bounds: dict[str, Any] | None = None
    default_bandwidth_mbps: float = 100.0
    min_budget_mb: float | None = None
    # a simulation's client hardware: the one seeded spread every method's profiles come from
    hardware: HardwareSpread = field(default_factory=HardwareSpread)


@dataclass(frozen=True)
class RunSettings:
    """Everything a run needs, typed and validated."""

    method: str
    method_options: dict[str, Any]
    federation: Federation
    data: DataSpec
    search_space: dict[str, Any]
    seed: int
    progress: bool
    resume: str | None = None
    checkpoint_every: int = 0
    fault_injection: dict[str, Any] | None = None
    eval_split: str = "test"

    @property
    def options(self) -> Any:
        """The method's typed options (:mod:`pfednas.options`): what its strategy and its
        clients are built from."""
        from pfednas.options import parse

        return parse(self.method, self.method_options)


EVAL_SPLITS = ("test", "val")


def describe(settings: RunSettings) -> str:
    info = dataset_info(settings.data.name)
    fed = settings.federation
    return (f"{settings.method} on {info.name} ({info.in_channels}x{info.image_size}x"
            f"{info.image_size}, {info.num_classes} classes), K={fed.num_clients}, "
            f"N={fed.clients_per_round}, R={fed.num_rounds}, E={fed.local_epochs}, "
            f"alpha={settings.data.alpha}, seed={settings.seed}")


def task_shape(settings: RunSettings) -> TaskShape:
    """What the networks are built for: the dataset's classes, channels and image side."""
    from pfednas.search import TaskShape

    info = dataset_info(settings.data.name)
    return TaskShape(num_classes=info.num_classes, in_channels=info.in_channels,
                     image_size=info.image_size)
