"""What the code knows about each method, one row per method: its options class, its spaces,
its merge's weighting, whether it selects on validation, and how the report names and classes
it. Pure (no torch, no Flower), so that the options, the configuration, the bench and the
report read it without building a method; :data:`pfednas.methods.METHODS` joins each row to
the method's strategy and client builders (its one other row)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from pfednas.options.baselines import (
    FedAvgOptions,
    FedBABUOptions,
    FedBNOptions,
    FedNASOptions,
    FedProxOptions,
    FedRepOptions,
    LocalOptions,
)
from pfednas.options.devices import (
    FedRolexOptions,
    HeteroFLOptions,
    LargestInBudgetOptions,
    RandomInBudgetOptions,
)
from pfednas.options.hapfnas import HAPFNASOptions
from pfednas.options.perfedrlnas import PerFedRLNASOptions
from pfednas.options.spider import DittoOptions, SpiderOptions

# The families of the devices page (one model for every client, width slices of one model, a
# searched model per client), in the order it compares them.
DEVICE_FAMILIES = ("one model", "sliced models", "searched models")
WEIGHTINGS = ("samples", "uniform")


@dataclass(frozen=True)
class MethodFacts:
    name: str
    options: type  # its options dataclass: its config, the one source of its defaults
    display: str  # how the report names it (a bench variant adds its label)
    # a personalized-FL baseline of the protocol; else a NAS method measured against them
    baseline: bool = False
    spaces: tuple[str, ...] = ()  # the search spaces it works on (empty: every one)
    # it slices the width of one global model: its spaces are those it can width-scale
    slices_width: bool = False
    # its clients choose something by their validation split (a reward, measurements,
    # architecture steps, decisions): a tuning run then scores the other half of it
    selects_on_val: bool = False
    # a client's model can be cut from the server's checkpoint (``pfednas export
    # --from-checkpoint``): the run then checkpoints its final round too
    exports_from_checkpoint: bool = False
    # its paper's merge, what federation.weighting=null means: samples weighs each entry by
    # the clients' num_examples; uniform averages it over the clients that hold it, each 1
    weighting: str = "samples"
    # its clients fine-tune F = method.finetune_epochs epochs before the reported test
    finetunes: bool = True
    # its paper takes no fine-tuning and keeps a personalized model of its own (SPIDER's and
    # Ditto's local models alike; HeteroFL's and FedRolex's slices as they are; the controls
    # of search run PerFedRLNAS's protocol): the report shows that figure beside +FT. Any
    # other method is reported only as it personalizes, fine-tuned: a baseline as its paper
    # runs it, FedNAS as this project personalizes its global model (its paper retrains the
    # derived architecture; the supernet's weights without fine-tuning are not what it
    # publishes)
    published_without_ft: bool = False
    # its F fine-tunes a model its paper reports without it: the report names it "+FT"
    # wherever F > 0
    ft_named: bool = False
    # its F is its own head fine-tuning, part of the method: the report names it plainly
    own_ft: bool = False
    device_family: str = ""  # its family on the devices page (one of DEVICE_FAMILIES; "": none)
    # a control of search (PerFedRLNAS's protocol with the choice made without search): the
    # devices page pairs each searched method with it
    control: bool = False

    def __post_init__(self) -> None:
        if self.device_family not in ("", *DEVICE_FAMILIES):
            raise ValueError(f"{self.name}: device_family must be one of "
                             f"{', '.join(DEVICE_FAMILIES)} or empty, got {self.device_family!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"{self.name}: weighting must be {'|'.join(WEIGHTINGS)}, "
                             f"got {self.weighting!r}")


# The rows in the report's order (its tables list the methods so): pfednas's own, then any a
# program registers from outside the package (:func:`pfednas.methods.register`, which alone
# adds and removes rows, through :func:`add_row` / :func:`remove_row`). One table,
# process-wide; :data:`FACTS` is its read-only view.
_ROWS: dict[str, MethodFacts] = {facts.name: facts for facts in (
    MethodFacts("fedavg", FedAvgOptions, "FedAvg", baseline=True, ft_named=True,
                device_family="one model"),
    MethodFacts("fedprox", FedProxOptions, "FedProx", baseline=True, ft_named=True),
    MethodFacts("fedbn", FedBNOptions, "FedBN", baseline=True, ft_named=True),
    MethodFacts("local", LocalOptions, "Local", baseline=True, finetunes=False,
                device_family="one model"),
    MethodFacts("perfedrlnas", PerFedRLNASOptions, "PerFedRLNAS", selects_on_val=True,
                exports_from_checkpoint=True, weighting="uniform", published_without_ft=True,
                device_family="searched models"),
    MethodFacts("spider", SpiderOptions, "SPIDER", spaces=("darts_s2",), selects_on_val=True,
                published_without_ft=True),
    MethodFacts("ditto", DittoOptions, "Ditto", baseline=True, spaces=("darts_s2",),
                published_without_ft=True),
    MethodFacts("fedrep", FedRepOptions, "FedRep", baseline=True, own_ft=True),
    MethodFacts("fedbabu", FedBABUOptions, "FedBABU", baseline=True, own_ft=True),
    MethodFacts("fednas", FedNASOptions, "FedNAS", spaces=("darts_s2",), selects_on_val=True,
                ft_named=True),
    MethodFacts("hapfnas", HAPFNASOptions, "HAPFNAS", selects_on_val=True,
                exports_from_checkpoint=True, weighting="uniform", published_without_ft=True,
                device_family="searched models"),
    MethodFacts("heterofl", HeteroFLOptions, "HeteroFL", baseline=True,
                spaces=("mobilenetv3",), slices_width=True, weighting="uniform",
                published_without_ft=True, device_family="sliced models"),
    MethodFacts("fedrolex", FedRolexOptions, "FedRolex", baseline=True,
                spaces=("mobilenetv3",), slices_width=True, weighting="uniform",
                published_without_ft=True, device_family="sliced models"),
    # the controls measure validation accuracy as PerFedRLNAS's clients do, but choose nothing
    MethodFacts("largest_in_budget", LargestInBudgetOptions, "Largest in budget",
                baseline=True, weighting="uniform", published_without_ft=True,
                device_family="sliced models", control=True),
    MethodFacts("random_in_budget", RandomInBudgetOptions, "Random in budget", baseline=True,
                weighting="uniform", published_without_ft=True, control=True),
)}
FACTS: Mapping[str, MethodFacts] = MappingProxyType(_ROWS)
OWN_METHODS: frozenset[str] = frozenset(_ROWS)  # pfednas's own methods, never removed


def add_row(facts: MethodFacts) -> None:
    """``facts`` as the last row (:func:`pfednas.methods.register`, which checks it first)."""
    if facts.name in _ROWS:
        raise ValueError(f"method {facts.name!r} already has a row of facts")
    _ROWS[facts.name] = facts


def remove_row(name: str) -> None:
    """A registered method's row removed (:func:`pfednas.methods.unregister`)."""
    if name in OWN_METHODS:
        raise ValueError(f"method {name!r} is one of pfednas's own; it cannot be removed")
    del _ROWS[name]
