"""What a node reports as its hardware profile (:mod:`pfednas.hardware.profile`).

A SuperNode states its profile in its node config (``memory-budget-mb``,
``macs-per-second``, ``bandwidth-mbps``); whatever it leaves out, its ClientApp
measures on first contact (the server's client-id query):

* **memory**: the memory limit of the node's container (cgroup v2 ``memory.max``,
  v1 ``memory.limit_in_bytes``, the tightest on the way to the root) less what the
  container already holds (``memory.current`` / ``memory.usage_in_bytes``, at least
  this process's RSS), or without a limit the machine's available memory less this
  process's RSS (a training process holds as much before it trains); then
  :data:`MEMORY_MARGIN` of it kept back;
* **speed**: a timed forward + backward of the search space's largest subnet at the
  run's image size (:func:`measure_speed`, at most :data:`PROBE_SECONDS`): the cost
  model's training multiply-accumulates of the steps ÷ their seconds;
* **bandwidth**: not measured: ``federation.default_bandwidth_mbps`` of the run.

``pfednas deploy probe`` prints what this device would report.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pfednas.hardware.profile import (
    BANDWIDTH_KEY,
    MB,
    MEASURED,
    MEMORY_KEY,
    PROFILE_KEYS,
    SOURCE_KEY,
    SPEED_KEY,
    STATED,
)

MEMORY_MARGIN = 0.2   # share of the measured free memory a node keeps back from training
PROBE_SECONDS = 2.0   # the speed benchmark's time limit (model build and warm-up included)
PROBE_BATCH = 8
CGROUP_ROOT = Path("/sys/fs/cgroup")
UNLIMITED = 2**60     # cgroup v1 writes "no limit" as a number near 2**63


def stated_fields(node_config: Mapping[str, Any]) -> dict[str, float]:
    """The profile fields a node config states; ``ValueError`` names a malformed one."""
    out = {}
    for key in PROFILE_KEYS:
        if key not in node_config:
            continue
        value = node_config[key]
        try:
            number = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number) or number <= 0:
            raise ValueError(f"node config {key}={value!r} must be a finite number > 0")
        out[key] = number
    return out


# -- memory --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MemoryReading:
    limit_bytes: float  # the container's limit, or the machine's available memory
    held_bytes: float   # what is already held against it
    source: str

    def budget_bytes(self, margin: float = MEMORY_MARGIN) -> float:
        return max(0.0, (self.limit_bytes - self.held_bytes) * (1.0 - margin))


def _read_number(path: Path) -> float | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text or text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return None if value >= UNLIMITED else value


def cgroup_memory(root: Path = CGROUP_ROOT, membership: Path = Path("/proc/self/cgroup")
                  ) -> tuple[float, float, str] | None:
    """(limit, usage, source) of the tightest memory limit of this process's cgroup and its
    ancestors (v2, else v1), None where there is none."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        lines = []
    found: list[tuple[float, float, str]] = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":  # v2
            base, limit_file, usage_file, label = root, "memory.max", "memory.current", "v2"
        elif "memory" in controllers.split(","):
            base, limit_file, usage_file, label = (root / "memory", "memory.limit_in_bytes",
                                                   "memory.usage_in_bytes", "v1")
        else:
            continue
        folder = base / path.strip("/")
        while True:
            limit = _read_number(folder / limit_file)
            if limit is not None:
                usage = _read_number(folder / usage_file) or 0.0
                found.append((limit, usage, f"cgroup {label} {folder / limit_file}"))
            if folder == base or base not in folder.parents:
                break
            folder = folder.parent
    return min(found, key=lambda f: f[0] - f[1]) if found else None


def _meminfo_bytes(key: str, meminfo: Path = Path("/proc/meminfo")) -> float | None:
    try:
        for line in meminfo.read_text().splitlines():
            name, _, rest = line.partition(":")
            if name == key:
                return float(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def process_rss(status: Path = Path("/proc/self/status")) -> float:
    """This process's resident memory in bytes (0 where /proc is not readable)."""
    return _meminfo_bytes("VmRSS", status) or 0.0


def process_private(status: Path = Path("/proc/self/status")) -> float:
    """This process's private resident memory in bytes (``RssAnon``: what a second process
    that imports the same libraries adds; their file pages are shared), 0 where unknown."""
    return _meminfo_bytes("RssAnon", status) or 0.0


def no_room_for(reading: MemoryReading, need_bytes: float) -> str | None:
    """Why a second process needing ``need_bytes`` cannot start beside what ``reading``
    holds (None: it can), as one clause."""
    free = reading.limit_bytes - reading.held_bytes
    if free >= need_bytes:
        return None
    return (f"{max(free, 0.0) / MB:.0f} MiB free ({reading.source}), a second process "
            f"needs about {need_bytes / MB:.0f} MiB")


def no_room_beside_this_process() -> str | None:
    """Why this node cannot start a second process that imports what this one has (its
    private memory again; None: it can, or no memory figure says otherwise)."""
    try:
        reading = read_memory()
    except RuntimeError:
        return None
    return no_room_for(reading, process_private())


def read_memory(root: Path = CGROUP_ROOT) -> MemoryReading:
    rss = process_rss()
    limited = cgroup_memory(root)
    if limited is not None:
        limit, usage, source = limited
        return MemoryReading(limit, max(usage, rss), source)
    available = _meminfo_bytes("MemAvailable")
    if available is None:
        raise RuntimeError("no memory limit readable (no cgroup limit, no /proc/meminfo): "
                           f"state the node's {MEMORY_KEY} in its node config")
    return MemoryReading(available, rss, "/proc/meminfo MemAvailable")


# -- speed ---------------------------------------------------------------------------------------
def measure_speed(supernet: Any, *, batch_size: int = PROBE_BATCH,
                  max_seconds: float = PROBE_SECONDS) -> tuple[float, int]:
    """Multiply-accumulates per second of training steps (forward + backward) of the
    supernet's largest subnet, and the number of timed steps; 0 where the warm-up step
    left no time for another (then timed on the warm-up itself: an underestimate)."""
    import torch

    from pfednas.search.cost_model import TRAIN_MACS_PER_FORWARD

    start = time.perf_counter()
    arch = supernet.space.max_arch()
    model = supernet.extract(arch).train()
    task = supernet.task
    x = torch.randn(batch_size, task.in_channels, task.image_size, task.image_size)
    y = torch.randint(0, task.num_classes, (batch_size,))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        model.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()

    macs = TRAIN_MACS_PER_FORWARD * float(supernet.cost(arch).flops) * batch_size
    tic = time.perf_counter()
    step()  # warm-up: allocations and kernel choice are not the speed
    warm = time.perf_counter() - tic
    if time.perf_counter() + 1.5 * warm > start + max_seconds:
        return macs / warm, 0
    steps, tic = 0, time.perf_counter()
    while True:
        step()
        steps += 1
        now = time.perf_counter()
        per_step = (now - tic) / steps
        if now + 1.5 * per_step > start + max_seconds:  # the next step could overrun
            break
    return macs * steps / (time.perf_counter() - tic), steps


# -- the profile a node reports ------------------------------------------------------------------
@dataclass(frozen=True)
class ProbeResult:
    record: dict[str, float | str]  # the query reply's ``profile`` record
    seconds: float
    details: dict[str, str] = field(default_factory=dict)  # how each field was found


def node_profile(node_config: Mapping[str, Any], *, build_supernet: Callable[[], Any],
                 default_bandwidth_mbps: float, margin: float = MEMORY_MARGIN,
                 cgroup_root: Path = CGROUP_ROOT) -> ProbeResult:
    """What this node reports: the fields its node config states, the rest measured
    (the speed on ``build_supernet()``'s largest subnet, built only then)."""
    tic = time.perf_counter()
    record: dict[str, float | str] = dict(stated_fields(node_config))
    details = {key: "stated (node config)" for key in record}
    measured = False
    if MEMORY_KEY not in record:
        reading = read_memory(cgroup_root)
        record[MEMORY_KEY] = reading.budget_bytes(margin) / MB
        details[MEMORY_KEY] = (f"measured: ({reading.limit_bytes / MB:.0f} MB {reading.source} "
                               f"- {reading.held_bytes / MB:.0f} MB held) x {1 - margin:g}")
        measured = True
    if SPEED_KEY not in record:
        supernet = build_supernet()
        speed, steps = measure_speed(supernet,
                                     max_seconds=PROBE_SECONDS - (time.perf_counter() - tic))
        record[SPEED_KEY] = speed
        timed = f"{steps} training steps" if steps else "its warm-up step only (an underestimate)"
        details[SPEED_KEY] = (f"measured: {timed} of the largest subnet "
                              f"({supernet.space.name}), batch {PROBE_BATCH}")
        measured = True
    if BANDWIDTH_KEY not in record:
        record[BANDWIDTH_KEY] = float(default_bandwidth_mbps)
        details[BANDWIDTH_KEY] = "the run's federation.default_bandwidth_mbps"
    record[SOURCE_KEY] = MEASURED if measured else STATED
    return ProbeResult(record, time.perf_counter() - tic, details)


def format_probe(result: ProbeResult) -> str:
    lines = [f"{MEMORY_KEY:18} {float(result.record[MEMORY_KEY]):14.1f}   "
             f"{result.details[MEMORY_KEY]}",
             f"{SPEED_KEY:18} {float(result.record[SPEED_KEY]):14.4g}   "
             f"{result.details[SPEED_KEY]}",
             f"{BANDWIDTH_KEY:18} {float(result.record[BANDWIDTH_KEY]):14.4g}   "
             f"{result.details[BANDWIDTH_KEY]}",
             f"{SOURCE_KEY:18} {result.record[SOURCE_KEY]:>14}",
             f"probe took {result.seconds:.2f} s"]
    return "\n".join(lines)
