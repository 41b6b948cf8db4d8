"""What the spec beside a kept model says: enough to rebuild it, feed it and judge it.

* how to rebuild it: the search space's config, the task shape and (per kept model) the
  architecture string;
* how to feed it: the input shape and dtype, the normalisation ``(raw / scale - mean[c]) /
  std[c]``, the number of classes and, where the dataset names them, each class's name
  (``class_names``: an image folder's class folders, Fashion-MNIST's ``T-shirt/top``, ...;
  :func:`pfednas.edge.kept.class_names` reads a spec without them as ``"0"``, ``"1"``, ...);
* what it costs: parameters, MACs of one forward pass of one sample, the cost model's
  training-memory estimate at the run's batch size and its calibrated upper bound in real
  bytes (:func:`pfednas.search.memory_bound.training_memory_upper_bound`);
* the device it was searched for: the client's profile and budget as the server used them,
  and whether the model fits that budget;
* how good it is: each kept model's accuracy (in ``models``, filled by
  :func:`pfednas.edge.kept.write_kept`) and the split it was measured on;
* where it came from: method, dataset, the run's overrides and seed, and the commit.

Everything here is deterministic for a seeded run, so a resumed run writes the same spec.
Measurements (latency, peak memory) go in ``measured``, added where they were taken.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pfednas.data.arrays import Normalisation
from pfednas.edge.kept import AS_PUBLISHED, FINETUNED, SPEC_VERSION
from pfednas.search.arch import Cost, TaskShape
from pfednas.wire.messages import FINETUNE_EPOCHS, FINETUNE_SCOPE

# final-evaluation config keys the server fills per client (pfednas.strategies.base)
KEEP_KEY = "keep_model"
PROFILE_PREFIX = "profile_"
# the most characters of class names a spec holds (more are left out: the whole spec is
# read up to pfednas.limits.MAX_SPEC_BYTES)
MAX_NAMES_CHARS = 1 << 16


@dataclass(frozen=True)
class ModelCost:
    """The cost model's figures for one architecture."""

    params: int
    macs: int  # one forward pass of one sample
    train_memory_bytes: int  # the estimate at the run's batch size
    train_memory_bound_bytes: int  # its calibrated upper bound in real bytes

    @classmethod
    def of(cls, per_sample: Cost, training: Cost, bound_bytes: float) -> ModelCost:
        return cls(params=int(per_sample.params), macs=int(per_sample.flops),
                   train_memory_bytes=int(training.memory_bytes),
                   train_memory_bound_bytes=int(bound_bytes))


def sample_inputs(task: TaskShape, n: int) -> np.ndarray:
    """``n`` fixed float32 inputs of the task's shape (normalised scale): what an export is
    checked on and timed with."""
    from pfednas.seeding import EXPORT_SAMPLE, numpy_rng

    return numpy_rng(0, EXPORT_SAMPLE).standard_normal(
        (n, task.in_channels, task.image_size, task.image_size)).astype(np.float32)


def input_spec(task: TaskShape, norm: Normalisation) -> dict[str, Any]:
    return {"shape": [None, task.in_channels, task.image_size, task.image_size],
            "dtype": "float32",
            "normalisation": {"x": "(raw / scale - mean[c]) / std[c]", "scale": norm.scale,
                              "mean": list(norm.mean), "std": list(norm.std)}}


def device_fit(cost: ModelCost, config: Mapping[str, Any]) -> dict[str, Any]:
    """The profile and budget the server sent for this client (``profile_*``, ``budget``,
    ``budget_metric``, ``budget_cost``) and whether the model fits; ``{}`` where it sent
    none (a baseline's simulation: no budgets)."""
    profile = {k[len(PROFILE_PREFIX):]: v for k, v in config.items()
               if k.startswith(PROFILE_PREFIX)}
    out: dict[str, Any] = {"profile": profile} if profile else {}
    budget = config.get("budget")
    if isinstance(budget, int | float) and math.isfinite(budget):
        metric = str(config.get("budget_metric", "memory"))
        used = float(config.get("budget_cost", cost.train_memory_bytes))
        out["budget"] = {"metric": metric, "budget": float(budget), "cost": used,
                         "share": used / float(budget) if budget > 0 else math.inf,
                         "fits": used <= float(budget)}
    return out


def reported_kind(kinds: set[str]) -> str:
    """The kept model behind a client's reported figure: the fine-tuned one if any."""
    return FINETUNED if FINETUNED in kinds else AS_PUBLISHED


def model_spec(*, client_id: int, method: str, dataset: str, seed: int,
               search_space: Mapping[str, Any], task: TaskShape, norm: Normalisation,
               cost: ModelCost, kept_kinds: set[str], split: str, num_examples: int,
               config: Mapping[str, Any], commit: str,
               overrides: tuple[str, ...] = (), names: Sequence[str] = ()) -> dict[str, Any]:
    """The spec of client ``client_id``'s kept models (``models`` is filled on writing);
    the run is named by its overrides (less ``resume=``), seed and commit, so a resumed run
    writes the spec of the uninterrupted one. ``names``: each class's name, where the
    dataset has them (none over :data:`MAX_NAMES_CHARS` in all)."""
    reported = reported_kind(kept_kinds)
    return {
        "version": SPEC_VERSION, "client_id": int(client_id), "method": method,
        "dataset": dataset, "num_classes": task.num_classes,
        **({"class_names": list(names)} if len(names) == task.num_classes
           and sum(map(len, names)) <= MAX_NAMES_CHARS else {}),
        "search_space": dict(search_space),
        "task": {"num_classes": task.num_classes, "in_channels": task.in_channels,
                 "image_size": task.image_size},
        "input": input_spec(task, norm),
        # the figure the run reports as this client's accuracy, and its split
        "reported": reported,
        "evaluation": {"split": split, "samples": int(num_examples),
                       "finetune_epochs": int(config.get(FINETUNE_EPOCHS, 0) or 0),
                       "finetune_scope": config.get(FINETUNE_SCOPE)},
        "cost": {"params": cost.params, "macs": cost.macs,
                 "train_memory_bytes": cost.train_memory_bytes,
                 "train_memory_bound_bytes": cost.train_memory_bound_bytes,
                 "batch_size": int(config.get("batch_size", 0) or 0)},
        **device_fit(cost, config),
        "run": {"overrides": [o for o in overrides if not o.startswith("resume=")],
                "seed": int(seed), "round": int(config.get("server_round", 0) or 0),
                "commit": commit or None},
    }
