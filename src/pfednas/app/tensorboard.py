"""TensorBoard scalars of a run's rounds: one set of tags for the live log a run writes as
its rounds finish (``tensorboard=true``, ``<output>/tensorboard/``) and for the event files
``pfednas report --tensorboard`` writes afterwards from ``metrics.jsonl``.

Needs the ``tensorboard`` package (``pip install -e ".[report]"``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

LIVE_DIR = "tensorboard"  # under the run's output folder
ROUND_KEYS = ("bytes_up", "bytes_down", "wall_seconds", "server_seconds")


def available() -> bool:
    """Whether the ``tensorboard`` package (which PyTorch's writer needs) is installed."""
    return importlib.util.find_spec("tensorboard") is not None


def round_scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """Tag → value of one round (a ``metrics.jsonl`` line): its traffic and times, the
    personalized accuracy where it was evaluated, the clients' mean training loss."""
    out = {f"round/{key}": float(row[key]) for key in ROUND_KEYS if key in row}
    if "personalized_acc_mean" in row:
        out["personalized/acc_mean"] = float(row["personalized_acc_mean"])
        out["personalized/acc_std"] = float(row["personalized_acc_std"])
    losses = [t["train_loss"] for t in row.get("train", ()) if "train_loss" in t]
    if losses:
        out["train/loss_mean"] = sum(losses) / len(losses)
    return out


class LiveScalars:
    """A run's event file, written round by round (flushed, so TensorBoard shows each round
    as it finishes)."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def write(self, row: Mapping[str, Any]) -> None:
        step = int(row["round"])
        for tag, value in round_scalars(row).items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
