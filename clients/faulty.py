"""Fault injection for reliability tests only (config key ``fault_injection``, default off).

Wraps a client role and, for the listed clients and rounds, misbehaves in one
of the ways a real deployment sees: raises, sleeps past the round timeout,
returns arrays of the wrong shape, NaN weights, an absurd sample count, an
accuracy outside [0, 1], or one array too few; and what a hostile client could
send: required metrics left out, an architecture code outside the space, an
extra array, the right number of arrays with a wrong total size, a sample
count far beyond its data, negative or huge training seconds, exactly the
arrays it received (``echo``: a zero update, which once zeroed the update bound), or what
it received plus a constant on every float entry (``shift``: a valid reply that steers the
model, issue 61).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.client import NumPyClient

KINDS = ("raise", "sleep", "wrong_shape", "nan", "bad_count", "bad_accuracy", "missing_array",
         "missing_metric", "bad_arch_code", "extra_array", "wrong_size", "huge_count",
         "negative_seconds", "huge_seconds", "echo", "shift")
# every kind that replies, but with something the server rejects (an echo or a shift is valid)
MALFORMED_KINDS = tuple(k for k in KINDS[2:] if k not in ("echo", "shift"))
# what the strategies require of a train reply (FedAvg-like, PerFedRLNAS, HAPFNAS, SPIDER)
DROPPED_METRICS = ("train_loss", "val_accuracy", "arch_code")
HUGE_COUNT = 9_000_000


@dataclass(frozen=True)
class Fault:
    """``plan``: client id -> kind of fault; ``rounds``: when (None = every round).

    Config: ``{clients: [1, 2], kind: nan}`` or ``{plan: {1: nan, 2: wrong_shape}}``,
    optionally with ``rounds: [2]``, ``sleep_seconds: 30``, ``shift: 10`` (what ``shift``
    adds) and ``on: [evaluate]`` (which messages misbehave: train, the default, and/or
    evaluate, where only raise and sleep apply).
    """

    plan: tuple[tuple[int, str], ...]
    rounds: tuple[int, ...] | None = None
    sleep_seconds: float = 30.0
    on: tuple[str, ...] = ("train",)
    shift: float = 10.0

    def __post_init__(self) -> None:
        for _, kind in self.plan:
            if kind not in KINDS:
                raise ValueError(f"fault kind must be one of {KINDS}, got {kind!r}")
        if not set(self.on) <= {"train", "evaluate"}:
            raise ValueError(f"fault 'on' must list train and/or evaluate, got {self.on!r}")

    @staticmethod
    def from_config(cfg: dict[str, Any]) -> Fault:
        if "plan" in cfg:
            plan = tuple((int(c), str(k)) for c, k in dict(cfg["plan"]).items())
        else:
            plan = tuple((int(c), str(cfg["kind"])) for c in cfg["clients"])
        rounds = cfg.get("rounds")
        return Fault(plan=plan, rounds=None if rounds is None else tuple(int(r) for r in rounds),
                     sleep_seconds=float(cfg.get("sleep_seconds", 30.0)),
                     on=tuple(str(m) for m in cfg.get("on", ["train"])),
                     shift=float(cfg.get("shift", 10.0)))

    def kind_for(self, client_id: int, server_round: int) -> str | None:
        if self.rounds is not None and server_round not in self.rounds:
            return None
        return dict(self.plan).get(client_id)


class FaultyClient(NumPyClient):
    def __init__(self, inner: NumPyClient, fault: Fault, client_id: int) -> None:
        self.inner, self.fault, self.client_id = inner, fault, client_id

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]
            ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        kind = self.fault.kind_for(self.client_id, int(config.get("server_round", 0)))
        if kind is None or "train" not in self.fault.on:
            return self.inner.fit(parameters, config)
        if kind == "raise":
            raise RuntimeError(f"injected failure on client {self.client_id}")
        if kind == "sleep":
            time.sleep(self.fault.sleep_seconds)
        arrays, n, metrics = self.inner.fit(parameters, config)
        if kind == "wrong_shape":
            arrays = [np.zeros((3, 3), a.dtype) if i == 0 else a for i, a in enumerate(arrays)]
        elif kind == "nan":
            arrays = [np.full_like(a, np.nan) if np.issubdtype(a.dtype, np.floating) else a
                      for a in arrays]
        elif kind == "bad_count":
            n = -5
        elif kind == "bad_accuracy":
            metrics = {**metrics, "accuracy": 7.0, "val_accuracy": 7.0}
        elif kind == "missing_array":
            arrays = arrays[:-1]
        elif kind == "echo":  # a valid reply that moved nothing
            arrays = [np.array(a, copy=True) for a in parameters]
        elif kind == "shift":  # a valid reply that pulls every entry one way
            arrays = [a + np.asarray(self.fault.shift, a.dtype) if a.dtype.kind == "f"
                      else np.array(a, copy=True) for a in parameters]
        else:
            arrays, n, metrics = hostile(kind, arrays, n, metrics)
        return arrays, n, metrics

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]
                 ) -> tuple[float, int, dict[str, Any]]:
        kind = self.fault.kind_for(self.client_id, int(config.get("server_round", 0)))
        if kind is not None and "evaluate" in self.fault.on:
            if kind == "raise":
                raise RuntimeError(f"injected evaluation failure on client {self.client_id}")
            if kind == "sleep":
                time.sleep(self.fault.sleep_seconds)
        return self.inner.evaluate(parameters, config)


def hostile(kind: str, arrays: list[np.ndarray], n: int, metrics: dict[str, Any]
            ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
    """The reply a hostile client sends instead of ``(arrays, n, metrics)``."""
    if kind == "missing_metric":
        metrics = {k: v for k, v in metrics.items() if k not in DROPPED_METRICS}
    elif kind == "bad_arch_code":  # beyond every space's codes; -1 where none is sent
        metrics = {**metrics, "arch_code": 2**62 if "arch_code" in metrics else -1}
    elif kind == "extra_array":
        arrays = [*arrays, np.zeros(3, np.float32)]
    elif kind == "wrong_size":  # same count, the first array twice as large
        arrays = [np.concatenate([a.reshape(-1)] * 2) if i == 0 else a
                  for i, a in enumerate(arrays)]
    elif kind == "huge_count":
        n = HUGE_COUNT
    elif kind == "negative_seconds":
        metrics = {**metrics, "train_seconds": -5.0}
    elif kind == "huge_seconds":
        metrics = {**metrics, "train_seconds": 1e9}
    return arrays, n, metrics
