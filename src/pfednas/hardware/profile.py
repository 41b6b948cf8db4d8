"""Each client's hardware profile: the one interface to client hardware.

A profile is a client's training-memory budget (bytes), compute speed
(multiply-accumulates per second) and link bandwidth. Strategies, ``fits_all``,
PerFedRLNAS's eq. 9, HAPFNAS's budgeted search, the simulated round time and the
results' ``budget`` / ``within_budget`` read it here, whatever its source:

* ``simulated``: drawn from the seeded spread (:func:`simulated_profiles`, the only
  caller of :func:`pfednas.hardware.spread.draw_hardware`); exactly the draws of
  before, so published results do not move;
* ``stated``: a SuperNode's node config (``memory-budget-mb``, ``macs-per-second``,
  ``bandwidth-mbps``);
* ``measured``: what the node's ClientApp measured on first contact
  (:mod:`pfednas.node.probe`), for the fields it did not state.

In a deployment a profile is a *claim*: :func:`profile_problem` refuses one outside the
operator's bounds (``federation.profile_bounds``), malformed, or changed after first
contact; :func:`fits_all_profiles` keeps a tiny claimed budget from shrinking the
baselines' shared architecture (``federation.min_budget_mb``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pfednas.hardware.spread import HardwareSpread, draw_hardware

SIMULATED, STATED, MEASURED = "simulated", "stated", "measured"
SOURCES = (SIMULATED, STATED, MEASURED)
MB = 2**20  # memory-budget-mb counts mebibytes
MBPS = 1e6  # bandwidth-mbps counts megabits per second
# node config keys of a stated profile, in the order a report lists them
MEMORY_KEY, SPEED_KEY, BANDWIDTH_KEY = "memory-budget-mb", "macs-per-second", "bandwidth-mbps"
PROFILE_KEYS = (MEMORY_KEY, SPEED_KEY, BANDWIDTH_KEY)
SOURCE_KEY = "source"
# fits_all's floor in a deployment whose operator sets no federation.min_budget_mb: this
# share of the largest subnet's training memory (the simulated spread's lowest budget)
DEFAULT_FLOOR_FRACTION = 0.25


@dataclass(frozen=True)
class ClientProfile:
    """One client's hardware.

    ``macs_per_second`` is the speed of a speed-1 machine and ``speed_factor`` the client's
    slowdown of it (the simulated spread states speed so); a real node states or measures
    its own speed, with ``speed_factor`` 1. Keeping the two apart keeps the simulated
    round time's arithmetic exactly as before.
    """

    memory_bytes: float  # training-memory budget; inf: no budget
    macs_per_second: float
    bandwidth_bps: float
    source: str = SIMULATED
    speed_factor: float = 1.0
    level: float | None = None  # a simulated device level's width rate (memory levels)

    def fits(self, memory_bytes: float) -> bool:
        """Whether a model of ``memory_bytes`` training memory fits this client's budget."""
        return fits(self.memory_bytes, memory_bytes)

    @property
    def speed(self) -> float:
        """The client's multiply-accumulates per second."""
        return self.macs_per_second / self.speed_factor

    def to_json(self) -> dict[str, Any]:
        memory = self.memory_bytes if math.isfinite(self.memory_bytes) else None
        level = {} if self.level is None else {"level": self.level}
        return {"memory_budget_mb": None if memory is None else memory / MB,
                "macs_per_second": self.speed, "bandwidth_mbps": self.bandwidth_bps / MBPS,
                "source": self.source, **level}


def fits(budget: float, cost: float) -> bool:
    """The one budget check: whether a model whose cost is ``cost`` fits a client's
    ``budget``, both in the same metric (training-memory bytes unless HAPFNAS's
    ``budget_metric`` says otherwise); an infinite budget fits everything."""
    return cost <= budget


def simulated_profiles(num_clients: int, spread: HardwareSpread, reference_memory_bytes: float,
                       seed: int, level_memory: Callable[[float], float] | None = None
                       ) -> dict[int, ClientProfile]:
    """Client id → profile drawn from the seeded spread (the ``HARDWARE`` stream): memory
    budgets U(low, high) × ``reference_memory_bytes`` (or log-uniform, or a device level's
    ``level_memory(rate)``), slowdowns U(speed_low, speed_high) of
    ``spread.macs_per_second`` (or following memory), bandwidths U(low, high) Mbit/s."""
    from pfednas.seeding import HARDWARE, numpy_rng  # torch: not for the config's checks

    drawn = draw_hardware(num_clients, spread, reference_memory_bytes, numpy_rng(seed, HARDWARE),
                          level_memory)
    return {cid: ClientProfile(memory_bytes=hw.memory_bytes,
                               macs_per_second=spread.macs_per_second,
                               bandwidth_bps=hw.bandwidth_bps, speed_factor=hw.speed_factor,
                               level=hw.level)
            for cid, hw in enumerate(drawn)}


def simulated_budgets(num_clients: int, spread: HardwareSpread, reference: float,
                      seed: int, level_cost: Callable[[float], float] | None = None
                      ) -> list[float]:
    """Budgets in any cost metric from the same seeded draw as the memory budgets:
    U(memory_low, memory_high) × ``reference`` (HAPFNAS's ``budget_metric`` params / flops;
    device levels: ``level_cost(rate)``, the level's slice in that metric)."""
    return [p.memory_bytes for p in simulated_profiles(num_clients, spread, reference,
                                                       seed, level_cost).values()]


# -- bounds and claims ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ProfileBounds:
    """The operator's [min, max] of each claimed field (``federation.profile_bounds``),
    in the node config's units, and the bandwidth of a node that states none."""

    memory_budget_mb: tuple[float, float] = (1.0, 2.0**20)          # 1 MiB .. 1 TiB
    macs_per_second: tuple[float, float] = (1e6, 1e16)
    bandwidth_mbps: tuple[float, float] = (0.001, 1e6)
    default_bandwidth_mbps: float = 100.0
    min_budget_mb: float | None = None  # fits_all's floor (None: see floor_bytes)

    def __post_init__(self) -> None:
        for key in ("memory_budget_mb", "macs_per_second", "bandwidth_mbps"):
            low, high = getattr(self, key)
            if not 0 < low <= high < math.inf:
                raise ValueError(f"profile_bounds.{key}: need 0 < min <= max (finite), "
                                 f"got [{low}, {high}]")
        low, high = self.bandwidth_mbps
        if not low <= self.default_bandwidth_mbps <= high:
            raise ValueError(f"default_bandwidth_mbps={self.default_bandwidth_mbps} is outside "
                             f"profile_bounds.bandwidth_mbps [{low}, {high}]")
        if self.min_budget_mb is not None and not 0 <= self.min_budget_mb < math.inf:
            raise ValueError(f"min_budget_mb must be null or a finite number >= 0, got "
                             f"{self.min_budget_mb}")

    @staticmethod
    def from_config(bounds: Mapping[str, Any] | None, default_bandwidth_mbps: Any = 100.0,
                    min_budget_mb: Any = None) -> ProfileBounds:
        """From ``federation.profile_bounds`` (null: the defaults), ``default_bandwidth_mbps``
        and ``min_budget_mb``; ``ValueError`` names the key."""
        values: dict[str, Any] = {}
        for key, pair in dict(bounds or {}).items():
            if key not in ("memory_budget_mb", "macs_per_second", "bandwidth_mbps"):
                raise ValueError(f"profile_bounds: unknown key {key!r} (memory_budget_mb, "
                                 "macs_per_second, bandwidth_mbps)")
            if not (isinstance(pair, list | tuple) and len(pair) == 2
                    and all(_is_number(v) for v in pair)):
                raise ValueError(f"profile_bounds.{key} must be [min, max], got {pair!r}")
            values[key] = (float(pair[0]), float(pair[1]))
        if not _is_number(default_bandwidth_mbps):
            raise ValueError(f"default_bandwidth_mbps must be a number, got "
                             f"{default_bandwidth_mbps!r}")
        if min_budget_mb is not None and not _is_number(min_budget_mb):
            raise ValueError(f"min_budget_mb must be null or a number, got {min_budget_mb!r}")
        return ProfileBounds(**values, default_bandwidth_mbps=float(default_bandwidth_mbps),
                             min_budget_mb=None if min_budget_mb is None
                             else float(min_budget_mb))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def claimed_profile(record: Mapping[str, Any] | None, bounds: ProfileBounds
                    ) -> ClientProfile | str:
    """The profile a node's query reply claims, or why it is refused (malformed or outside
    ``bounds``). ``record``: the reply's ``profile`` config record (None: none sent)."""
    if record is None:
        return "sent no hardware profile (a ClientApp of this pfednas version reports one)"
    values = {}
    for key, (low, high) in ((MEMORY_KEY, bounds.memory_budget_mb),
                             (SPEED_KEY, bounds.macs_per_second),
                             (BANDWIDTH_KEY, bounds.bandwidth_mbps)):
        value: Any = record.get(key)
        if not _is_number(value) or not math.isfinite(value):
            return f"{key}={value!r} is not a finite number"
        if not low <= value <= high:
            return f"{key}={value:g} is outside the operator's bounds [{low:g}, {high:g}]"
        values[key] = float(value)
    source = record.get(SOURCE_KEY)
    if source not in (STATED, MEASURED):
        return f"{SOURCE_KEY}={source!r} is not {STATED}|{MEASURED}"
    return ClientProfile(memory_bytes=values[MEMORY_KEY] * MB, macs_per_second=values[SPEED_KEY],
                         bandwidth_bps=values[BANDWIDTH_KEY] * MBPS, source=str(source))


def profile_problem(node: int, client_id: int, record: Mapping[str, Any] | None,
                    bounds: ProfileBounds, known: ClientProfile | None) -> ClientProfile | str:
    """Node ``node``'s claimed profile for ``client_id``, or the one line saying why it is
    refused: malformed, outside ``bounds``, or not the ``known`` profile of its first
    contact."""
    claim = claimed_profile(record, bounds)
    if isinstance(claim, ClientProfile) and known is not None and claim != known:
        claim = (f"changed after first contact ({_describe(known)} then {_describe(claim)}); "
                 "a profile is fixed for the run")
    if isinstance(claim, str):
        return (f"node {node} (client id {client_id}): hardware profile refused: {claim}; "
                "the node does not get its client id")
    return claim


def _describe(profile: ClientProfile) -> str:
    return (f"{profile.memory_bytes / MB:g} MB, {profile.speed:g} MAC/s, "
            f"{profile.bandwidth_bps / MBPS:g} Mbit/s")


def profile_changes(simulated: Mapping[int, ClientProfile],
                    used: Mapping[int, ClientProfile]) -> list[str]:
    """One line per client whose profile in a deployment (stated or measured by its node)
    differs from the one its simulation draws: why its model differs from the simulated
    run's (its budget bounds its architecture; its speed, the simulated round time)."""
    lines = []
    for cid, profile in sorted(used.items()):
        drawn = simulated.get(cid)
        if drawn is None or (profile.memory_bytes, profile.speed, profile.bandwidth_bps) == (
                drawn.memory_bytes, drawn.speed, drawn.bandwidth_bps):
            continue
        ratio = (f"{profile.memory_bytes / drawn.memory_bytes:.3g}x the simulation's memory "
                 "budget" if math.isfinite(profile.memory_bytes) and drawn.memory_bytes > 0
                 else "another memory budget")
        lines.append(f"client {cid}: its node's {profile.source} profile ({_describe(profile)}) "
                     f"in place of the simulation's ({_describe(drawn)}): {ratio}")
    return lines


# -- who trains: the fits_all floor and the clients nothing fits -------------------------------
def floor_bytes(min_budget_mb: float | None, smallest_memory_bytes: float,
                largest_memory_bytes: float) -> float:
    """fits_all's floor in a deployment: ``federation.min_budget_mb``, or (null)
    :data:`DEFAULT_FLOOR_FRACTION` of the way from the smallest subnet's training memory
    to the largest's (a deployment's memory is the calibrated bound, whose constant part
    every subnet pays: a fraction of the largest alone could lie below the smallest)."""
    if min_budget_mb is None:
        return smallest_memory_bytes + DEFAULT_FLOOR_FRACTION * (
            largest_memory_bytes - smallest_memory_bytes)
    return float(min_budget_mb) * MB


def exclusions(profiles: Mapping[int, ClientProfile], smallest_cost: float,
               budget_of: Callable[[ClientProfile], float], *, floor: float | None = None,
               ) -> dict[int, str]:
    """Client id → why it is excluded from training: its budget fits no architecture of
    the space (below the smallest subnet's ``smallest_cost``), or, where ``floor`` is
    given (fits_all: one architecture shared by all), it is below the operator's floor,
    so it would shrink every other client's model."""
    out = {}
    for cid, profile in sorted(profiles.items()):
        budget = budget_of(profile)
        if not fits(budget, smallest_cost):
            out[cid] = (f"its budget {budget:.0f} is below the smallest architecture's "
                        f"{smallest_cost:.0f}: no architecture of the search space fits it")
        elif floor is not None and not fits(budget, floor):
            out[cid] = (f"its memory budget {budget / MB:.2f} MB is below the operator's floor "
                        f"{floor / MB:.2f} MB (federation.min_budget_mb): it would shrink "
                        "the architecture every client shares")
    return out
