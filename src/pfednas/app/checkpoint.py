"""Checkpoints: the strategy's named arrays, the last finished round and the run's lineage
(an id kept across resumptions), written atomically; and what a resume reads back, checked
whole before anything starts (:func:`verified_resume`)."""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pfednas.config import CHECKPOINT_FILE, ConfigError
from pfednas.records import RoundRecord

ROUND_KEY = "__round__"
LINEAGE_KEY = "__lineage__"
METRICS_FILE = "metrics.jsonl"


class Resumable(Protocol):
    """What a checkpoint resumes: a strategy's state as named arrays, and back."""

    def state(self) -> dict[str, np.ndarray]: ...

    def load_state(self, state: dict[str, np.ndarray]) -> None: ...


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


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def read_checkpoint(run_dir: Path) -> Checkpoint:
    """The checkpoint of a run folder; :class:`ConfigError` (one line) when it cannot be
    read as one (garbage, cut short, object arrays, no round)."""
    path = run_dir / CHECKPOINT_FILE
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("a single array, not an .npz archive")
        with data:
            state = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, MemoryError) as err:
        raise ConfigError(f"resume={run_dir}: {CHECKPOINT_FILE} is unreadable "
                          f"({_first_line(err)}): not a checkpoint pfednas wrote, or one "
                          "cut short") from err
    round_value = state.pop(ROUND_KEY, None)
    lineage = state.pop(LINEAGE_KEY, np.array(""))
    if round_value is None or round_value.shape != () or round_value.dtype.kind not in "iu":
        raise ConfigError(f"resume={run_dir}: {CHECKPOINT_FILE} holds no integer {ROUND_KEY} "
                          "(the last finished round): not a checkpoint pfednas wrote")
    if lineage.shape != () or lineage.dtype.kind != "U":
        raise ConfigError(f"resume={run_dir}: {CHECKPOINT_FILE}'s {LINEAGE_KEY} is not a string")
    return Checkpoint(int(round_value), str(lineage), state)


def load_checkpoint(run_dir: Path) -> tuple[int, dict[str, np.ndarray]]:
    """(last finished round, strategy state) of a run directory."""
    checkpoint = read_checkpoint(run_dir)
    return checkpoint.finished_round, checkpoint.state


# -- checking a checkpoint against the strategy it is to resume ---------------------------------
def _names(keys: list[str]) -> str:
    return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


def _shape_fits(shape: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    """Equal shapes; an empty first axis in ``expected`` (a list that grows) takes any length."""
    if expected and expected[0] == 0:
        return len(shape) == len(expected) and shape[1:] == expected[1:]
    return shape == expected


def _array_problem(key: str, array: np.ndarray, expected: np.ndarray | None) -> str | None:
    if array.dtype.kind not in "biuf":
        return f"{key} has dtype {array.dtype} (numbers only)"
    if expected is not None:
        if array.dtype != expected.dtype:
            return f"{key} is {array.dtype}, the strategy holds {expected.dtype}"
        if not _shape_fits(array.shape, expected.shape):
            return f"{key} has shape {array.shape}, the strategy holds {expected.shape}"
    elif array.dtype.kind == "f" and array.dtype != np.float32:
        return f"{key} is {array.dtype}: model arrays are float32"
    if array.dtype.kind == "f":
        # NaN stays where a fresh strategy has NaN ("not yet" marks); infinity nowhere
        marks = expected is not None and bool(np.isnan(expected).any())
        bad = np.isinf(array) if marks else ~np.isfinite(array)
        if bad.any():
            return f"{key} holds {int(bad.sum())} non-finite value(s) of {array.size}"
    return None


def state_problem(state: Mapping[str, np.ndarray],
                  template: Mapping[str, np.ndarray]) -> str | None:
    """Why ``state`` cannot be what a strategy whose fresh state is ``template`` holds.

    Every key of ``template`` must be there with its dtype and shape (see
    :func:`_shape_fits`); floating arrays must be finite, except for NaN where the template
    holds NaN. Keys the template lacks (what a strategy adds as clients report, such as
    HAPFNAS's knowledge models) must be numbers, floating ones float32 and finite.
    """
    missing = sorted(set(template) - set(state))
    if missing:
        return f"it lacks {_names(missing)}"
    for key in sorted(state):
        problem = _array_problem(key, state[key], template.get(key))
        if problem is not None:
            return problem
    return None


def reload_problem(state: Mapping[str, np.ndarray],
                   reloaded: Mapping[str, np.ndarray]) -> str | None:
    """Why a strategy that loaded ``state`` does not give it back whole (``reloaded``): keys
    it ignored, or arrays it holds with another shape or dtype."""
    ignored = sorted(set(state) - set(reloaded))
    if ignored:
        return f"the strategy has no use for {_names(ignored)}"
    for key in sorted(set(state) & set(reloaded)):
        if state[key].shape != reloaded[key].shape or state[key].dtype != reloaded[key].dtype:
            return (f"{key} ({state[key].dtype} {state[key].shape}) does not fit the strategy "
                    f"({reloaded[key].dtype} {reloaded[key].shape})")
    return None


# -- the run's history ---------------------------------------------------------------------------
def parse_history(text: str, finished_round: int, where: str
                  ) -> tuple[list[RoundRecord], str | None]:
    """Round records 1..``finished_round`` of a ``metrics.jsonl`` text, and a warning when its
    last line was cut short (a crash while it was written) and dropped."""
    lines = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    records, warning = [], None
    for i, (number, line) in enumerate(lines):
        try:
            records.append(RoundRecord.from_json(json.loads(line)))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            if i < len(lines) - 1:
                raise ConfigError(f"{where} line {number} is not a round record "
                                  f"({_first_line(err)})") from err
            warning = (f"{where}: dropped its last line ({number}), which was cut short "
                       f"({_first_line(err)}); the run resumes after round {finished_round}")
    kept = [r for r in records if r.round <= finished_round]
    if [r.round for r in kept] != list(range(1, finished_round + 1)):
        raise ConfigError(f"{where} does not hold rounds 1..{finished_round}, the rounds of "
                          "its checkpoint")
    return kept, warning


def read_history(run_dir: Path, finished_round: int) -> tuple[list[RoundRecord], str | None]:
    """:func:`parse_history` of ``run_dir/metrics.jsonl`` (:class:`ConfigError` if unreadable)."""
    path = run_dir / METRICS_FILE
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        raise ConfigError(f"resume={run_dir}: cannot read {METRICS_FILE} "
                          f"({_first_line(err)})") from err
    return parse_history(text, finished_round, f"resume={run_dir}: {METRICS_FILE}")


@dataclass(frozen=True)
class Resume:
    """What a resume continues from: the checkpoint, the rounds before it, and a warning
    about ``metrics.jsonl`` (a cut-short last line dropped), if any."""

    checkpoint: Checkpoint
    records: list[RoundRecord]
    warning: str | None = None


def verified_resume(run_dir: Path, strategy: Resumable, num_rounds: int) -> Resume:
    """Read a run folder's checkpoint and history, check them against ``strategy`` (freshly
    built from the same config) and load the checkpoint's state into it.

    Checked: the archive reads; its round lies in 1..``num_rounds``; its arrays match the
    strategy's (:func:`state_problem`), the strategy loads them and gives every one back
    (:func:`reload_problem`); ``metrics.jsonl`` holds every round up to it. Raises
    :class:`ConfigError` with one line otherwise. Nothing in ``run_dir`` is written.
    """
    checkpoint = read_checkpoint(run_dir)
    where = f"resume={run_dir}: {CHECKPOINT_FILE}"
    if not 1 <= checkpoint.finished_round <= num_rounds:
        raise ConfigError(f"{where} is of round {checkpoint.finished_round}, outside this "
                          f"run's rounds 1..{num_rounds}")
    problem = state_problem(checkpoint.state, strategy.state())
    if problem is None:
        try:
            strategy.load_state(checkpoint.state)
        except (KeyError, ValueError, IndexError, TypeError) as err:
            problem = f"the strategy cannot load it ({_first_line(err)})"
        else:
            problem = reload_problem(checkpoint.state, strategy.state())
    if problem is not None:
        raise ConfigError(f"{where} does not fit this run's strategy: {problem}")
    records, warning = read_history(run_dir, checkpoint.finished_round)
    return Resume(checkpoint, records, warning)


CLIENT_STATE_DIR = "client_state"


def carry_client_state(resume_dir: Path, out_dir: Path) -> int:
    """Copy the resumed run's saved client states (simulation, local deployment) into the
    new run's folder, where its clients look; the number of files copied."""
    source = resume_dir / CLIENT_STATE_DIR
    if not source.is_dir() or source.resolve() == (out_dir / CLIENT_STATE_DIR).resolve():
        return 0
    shutil.copytree(source, out_dir / CLIENT_STATE_DIR, dirs_exist_ok=True)
    return sum(1 for p in source.rglob("*.npz"))
