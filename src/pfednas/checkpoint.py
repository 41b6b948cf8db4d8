"""Checkpoints: the strategy's named arrays, the last finished round and the run's lineage
(an id kept across resumptions), written atomically."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pfednas.config import CHECKPOINT_FILE
from pfednas.strategies.base import RoundRecord

ROUND_KEY = "__round__"
LINEAGE_KEY = "__lineage__"


@dataclass(frozen=True)
class Checkpoint:
    finished_round: int
    lineage: str
    state: dict[str, np.ndarray]


def save_checkpoint(out_dir: Path, finished_round: int, state: dict[str, np.ndarray], *,
                    lineage: str = "") -> Path:
    path = out_dir / CHECKPOINT_FILE
    tmp = out_dir / (CHECKPOINT_FILE + ".tmp.npz")
    arrays: dict[str, Any] = {**state, ROUND_KEY: np.array(finished_round),
                              LINEAGE_KEY: np.array(lineage)}
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return path


def read_checkpoint(run_dir: Path) -> Checkpoint:
    path = run_dir / CHECKPOINT_FILE
    with np.load(path, allow_pickle=False) as data:
        state = {k: data[k] for k in data.files}
    lineage = str(state.pop(LINEAGE_KEY)) if LINEAGE_KEY in state else ""
    return Checkpoint(int(state.pop(ROUND_KEY)), lineage, state)


def load_checkpoint(run_dir: Path) -> tuple[int, dict[str, np.ndarray]]:
    """(last finished round, strategy state) of a run directory."""
    checkpoint = read_checkpoint(run_dir)
    return checkpoint.finished_round, checkpoint.state


def resume_records(run_dir: Path, finished_round: int) -> list[RoundRecord]:
    """The run's round records up to the checkpointed round (from its ``metrics.jsonl``)."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [RoundRecord.from_json(json.loads(line)) for line in lines if line.strip()]
    kept = [r for r in records if r.round <= finished_round]
    if [r.round for r in kept] != list(range(1, finished_round + 1)):
        raise ValueError(f"{run_dir}/metrics.jsonl does not hold rounds 1..{finished_round}")
    return kept


CLIENT_STATE_DIR = "client_state"


def carry_client_state(resume_dir: Path, out_dir: Path) -> int:
    """Copy the resumed run's saved client states (simulation, local deployment) into the
    new run's folder, where its clients look; the number of files copied."""
    source = resume_dir / CLIENT_STATE_DIR
    if not source.is_dir() or source.resolve() == (out_dir / CLIENT_STATE_DIR).resolve():
        return 0
    shutil.copytree(source, out_dir / CLIENT_STATE_DIR, dirs_exist_ok=True)
    return sum(1 for p in source.rglob("*.npz"))
