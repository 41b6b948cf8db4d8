"""Plain values shared by every search space: the architecture, its dimensions, its cost,
the task a network is built for, and where a subnet tensor sits in the supernet's."""

from __future__ import annotations

from dataclasses import dataclass, field

Region = tuple[int, tuple[slice, ...]]
"""(index of a supernet state tensor, where the subnet's tensor sits in it)."""


@dataclass(frozen=True)
class TaskShape:
    """What a network is built for: classes, input channels, input side in pixels."""

    num_classes: int
    in_channels: int
    image_size: int


@dataclass(frozen=True)
class Dimension:
    """One search decision: a name and its ordered choices (cheapest first)."""

    name: str
    choices: tuple[object, ...]

    def __post_init__(self) -> None:
        if not self.choices:
            raise ValueError(f"dimension {self.name!r} has no choices")

    def __len__(self) -> int:
        return len(self.choices)


@dataclass(frozen=True)
class Arch:
    """An immutable, hashable architecture: one choice index per search dimension.

    ``indices[d]`` indexes ``space.dimensions[d].choices`` — exactly what a
    categorical policy per dimension samples (PerFedRLNAS eqs. 5–7).
    ``label`` is the space's human-readable string form; it does not take part
    in equality or hashing.  Build an ``Arch`` through its space
    (``sample``, ``arch_from_indices``, ``arch_from_str``), which fills the label.
    """

    space: str
    indices: tuple[int, ...]
    label: str = field(default="", compare=False, repr=False)

    def to_str(self) -> str:
        """The short string form ``"<space>:<body>"`` (grammar documented per space)."""
        if not self.label:
            return f"{self.space}:" + ".".join(str(i) for i in self.indices)
        return f"{self.space}:{self.label}"

    def __str__(self) -> str:
        return self.to_str()


def space_name_of(text: str) -> str:
    """The space name an architecture string belongs to (the part before ``:``)."""
    name, sep, _ = text.partition(":")
    if not sep:
        raise ValueError(f"not an architecture string (no 'space:' prefix): {text!r}")
    return name


@dataclass(frozen=True)
class Cost:
    """Static cost of one subnet at one batch size.

    Attributes
    ----------
    params:
        Trainable parameters.
    flops:
        Multiply–accumulate operations of one forward pass over the batch (the
        NAS-paper "FLOPs" convention, as in OFA and timm).
    activation_bytes:
        Estimated activations kept for backward: the sum of every leaf module's
        output (plus attention matrices) over the batch, float32.
    memory_bytes:
        Estimated training footprint: weights + gradients + optimizer state
        (``optimizer_states`` tensors per weight) + activations.  PerFedRLNAS
        (eq. 9) compares this against a client's memory budget in simulation,
        where budgets are fractions of the largest subnet's estimate.  In real
        bytes it undercounts (a process's runtime is not in it): a budget in
        bytes is compared with
        :func:`pfednas.search.memory_bound.training_memory_upper_bound`.
    payload_bytes:
        Bytes of the subnet's arrays (parameters and BatchNorm buffers) as they
        travel in one message.
    """

    params: int
    flops: int
    activation_bytes: int
    memory_bytes: int
    payload_bytes: int
