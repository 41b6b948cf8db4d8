"""Checkpoints: the strategy's named arrays plus the last finished round, written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pfednas.config import CHECKPOINT_FILE
from pfednas.strategies.base import RoundRecord

ROUND_KEY = "__round__"


def save_checkpoint(out_dir: Path, finished_round: int, state: dict[str, np.ndarray]) -> Path:
    path = out_dir / CHECKPOINT_FILE
    tmp = out_dir / (CHECKPOINT_FILE + ".tmp.npz")
    np.savez(tmp, **state, **{ROUND_KEY: np.array(finished_round)})
    tmp.replace(path)
    return path


def load_checkpoint(run_dir: Path) -> tuple[int, dict[str, np.ndarray]]:
    """(last finished round, strategy state) of a run directory."""
    path = run_dir / CHECKPOINT_FILE
    with np.load(path, allow_pickle=False) as data:
        state = {k: data[k] for k in data.files}
    return int(state.pop(ROUND_KEY)), state


def resume_records(run_dir: Path, finished_round: int) -> list[RoundRecord]:
    """The run's round records up to the checkpointed round (from its ``metrics.jsonl``)."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [RoundRecord.from_json(json.loads(line)) for line in lines if line.strip()]
    kept = [r for r in records if r.round <= finished_round]
    if [r.round for r in kept] != list(range(1, finished_round + 1)):
        raise ValueError(f"{run_dir}/metrics.jsonl does not hold rounds 1..{finished_round}")
    return kept
