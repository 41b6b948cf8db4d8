"""The typed values a run is built from (:class:`RunSettings`, its :class:`Federation`), the
:class:`ConfigError` their checks raise, and what they say: a one-line summary, the task shape."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pfednas.data import DataSpec, spec_info
from pfednas.hardware.profile import ProfileBounds
from pfednas.hardware.spread import HardwareSpread

if TYPE_CHECKING:  # pfednas.search imports torch: the command's checks before it stay quick
    from pfednas.search import SpaceConfig, TaskShape


class ConfigError(ValueError):
    """An invalid configuration value; the message says which and why."""


def _profile_bounds() -> dict[str, Any]:
    """:class:`ProfileBounds`' defaults, as the config states them."""
    bounds = ProfileBounds()
    return {key: list(getattr(bounds, key))
            for key in ("memory_budget_mb", "macs_per_second", "bandwidth_mbps")}


@dataclass(frozen=True)
class Federation:
    """The ``federation/`` group, typed: the one source of its defaults and what each option
    does (``conf/federation/*.yaml`` only name it, or override a few, as ``cross_silo``)."""

    num_clients: int = 20         # K: clients in the federation (SuperNodes in simulation)
    clients_per_round: int = 5    # N: clients sampled for training each round
    num_rounds: int = 60          # R: rounds
    local_epochs: int = 3         # E: epochs per round on a sampled client
    batch_size: int = 32          # the clients' training batch
    lr: float = 0.1               # the clients' SGD learning rate
    momentum: float = 0.9         # the clients' SGD momentum
    weight_decay: float = 0.0005  # the clients' SGD weight decay
    # personalized evaluation of all K clients every this many rounds (and at the end): the
    # main job's 60 rounds draw a 12-point curve (its cost: README, "Evaluations")
    eval_every: int = 5
    # seconds to wait for training replies in a round
    round_timeout: float = 600.0
    # a training round aggregates only if at least this many valid replies came
    min_replies: int = 1
    # CPUs per client actor (integer); torch threads per client follow it
    client_cpus: int = 1
    # GPU fraction per client actor (0 on CPU-only machines)
    client_gpus: float = 0.0
    # CPUs Ray may use; null = all cores (private Ray only)
    ray_num_cpus: int | None = None
    # null: a private single-node Ray for the run (RAY_ADDRESS is ignored) | auto: the cluster
    # `ray start` runs on this machine | HOST:PORT: the head's GCS address. A cluster's workers
    # must import pfednas; its CPUs and GPUs serve client_cpus / client_gpus; pfednas never
    # stops it
    ray_address: str | None = None
    # client weights in averages and merges: samples (num_examples, bounded by what the server
    # knows) | uniform (1 per client) | null: the method's paper rule (uniform for
    # PerFedRLNAS's and HAPFNAS's overlap-aware merge, else samples)
    weighting: str | None = None
    # deployment: a client's num_examples may rise at most this share over its first reply
    examples_tolerance: float = 0.5
    # seconds to wait for evaluation replies; null = until every client replied or failed
    # (simulation), round_timeout x (1 + finetune_epochs / local_epochs) (deployment)
    eval_timeout: float | None = None
    # final: methods that fine-tune before evaluating do so only at the last round; earlier
    # evaluations are quick (the un-fine-tuned model on every client, eval_kind "quick" in
    # metrics.jsonl) | all: fine-tune at every evaluation
    eval_finetune: str = "final"
    # the final evaluation also fine-tunes a copy at the other scope (head / full) and reports
    # both (accuracy_ft_full, accuracy_ft_head): a tuning grid's scope axis from one run
    finetune_both: bool = False
    # a final evaluation that misses clients ends the run with exit code 1 (summary.json:
    # clients_missing) unless true
    allow_missing_clients: bool = False
    # deployment: each client's largest num_examples as the operator knows it (one number, or
    # a list of num_clients); null: clients weigh equally, since a client's own count bounds
    # nothing (a simulation knows its partitions)
    client_examples: Any = None
    # each training update (reply - what was sent) at most this x the round's median update
    # size (RMS); null: off in a simulation, 10 in a deployment; 0: off
    update_norm_bound: float | None = None
    # how the server combines the clients' training replies: mean (each method's own average)
    # | trimmed_mean | median (replies far from the coordinate-wise median left out, then each
    # entry's trimmed mean or median over the kept clients holding it, weights aside: no
    # strict minority steers it; pfednas.nas.aggregation); null: mean in a simulation,
    # median in a deployment
    aggregation: str | None = None
    # trimmed_mean: the share of each coordinate's values cut from each end, in [0, 0.5)
    trim_fraction: float = 0.2
    # deployment: each node's hardware profile (memory-budget-mb, macs-per-second,
    # bandwidth-mbps in its node config, or measured by its ClientApp on first contact) is a
    # claim; one outside these [min, max] (memory_budget_mb, macs_per_second, bandwidth_mbps),
    # malformed or changed after first contact is refused and the node gets no client id
    profile_bounds: dict[str, Any] | None = field(default_factory=_profile_bounds)
    # deployment: the bandwidth (Mbit/s) of a node that states no bandwidth-mbps
    default_bandwidth_mbps: float = ProfileBounds.default_bandwidth_mbps
    # deployment: fits_all's floor (the one architecture the baselines share): a client claiming
    # less is excluded with the reason in summary.json instead of shrinking everybody's model;
    # null: 25% of the way from the smallest subnet's training memory to the largest's
    min_budget_mb: float | None = ProfileBounds.min_budget_mb
    # a deployment's client hardware: nodes (each node states its profile in its node config
    # or measures it on first contact; the deployment defaults of aggregation,
    # update_norm_bound and weighting hold: its nodes are not trusted) | simulated (the nodes
    # are the operator's own processes standing in for a simulation's clients, `pfednas deploy
    # local`'s default: every client gets the profile the simulation draws for it and the
    # server builds the run as the simulation does, so the two agree bit for bit). A
    # simulation always draws them.
    profiles: str = "nodes"
    # a simulation's client hardware, drawn once per run for its seed: the same devices for
    # every method (their budgets, fits_all, the simulated round time; summary.json: profiles)
    hardware: HardwareSpread = field(default_factory=HardwareSpread)


@dataclass(frozen=True)
class RunSettings:
    """Everything a run needs, typed and validated."""

    method: str
    method_options: dict[str, Any]
    federation: Federation
    data: DataSpec
    search_space: SpaceConfig  # the space, sized for the dataset (build() makes it)
    seed: int
    progress: bool
    tensorboard: bool  # live event files in <output>/tensorboard (pfednas.app.tensorboard)
    resume: str | None
    checkpoint_every: int
    fault_injection: dict[str, Any] | None
    eval_split: str
    # the method's typed options (:mod:`pfednas.options`), parsed once from method_options
    # when the settings are made (and again by dataclasses.replace): what its strategy and
    # its clients are built from
    options: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from pfednas.options import parse

        object.__setattr__(self, "options", parse(self.method, self.method_options))


EVAL_SPLITS = ("test", "val", "val_half")


def describe(settings: RunSettings) -> str:
    info = spec_info(settings.data)
    fed = settings.federation
    return (f"{settings.method} on {info.name} ({info.in_channels}x{info.image_size}x"
            f"{info.image_size}, {info.num_classes} classes), K={fed.num_clients}, "
            f"N={fed.clients_per_round}, R={fed.num_rounds}, E={fed.local_epochs}, "
            f"{partitioner_text(settings.data)}, seed={settings.seed}")


def partitioner_text(spec: DataSpec) -> str:
    """The partitioner and the parameters it reads, and the feature skew where one is on:
    ``dirichlet alpha=0.3``; ``pathological classes_per_client=2, feature skew
    rotation_groups=4``."""
    from pfednas.data.partitioners import partition_words
    from pfednas.data.shift import FeatureSkew

    text = partition_words(spec.partitioner, vars(spec))
    if not spec.feature_skew.active:  # rotation_groups=1 rotates nothing: no skew to name
        return text
    return text + f", feature skew {FeatureSkew.words(dataclasses.asdict(spec.feature_skew))}"


def task_shape(settings: RunSettings) -> TaskShape:
    """What the networks are built for: the dataset's classes, channels and image side."""
    from pfednas.search import TaskShape

    info = spec_info(settings.data)
    return TaskShape(num_classes=info.num_classes, in_channels=info.in_channels,
                     image_size=info.image_size)
