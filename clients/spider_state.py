"""SPIDER / Ditto client options and the per-client state that must survive rounds.

The state — local weights, local operation mask, decided edges, rounds
trained, the client's own search generator — lives in ``Context.state``
(an :class:`ArrayRecord` and a :class:`ConfigRecord`), never in the process,
which may differ every round. With a node config ``checkpoint-dir=PATH`` it is
also written there after every round (atomically: temp file + rename) and read
back when ``Context.state`` is empty, so a restarted SuperNode resumes its
search. A file is only restored when its run fingerprint matches and it is
older than the current round (a stale file of another run is ignored).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from pfednas.options.spider import SpiderOptions  # noqa: F401 (re-exported)

LOCAL_KEY, SEARCH_KEY = "spider_local", "spider_search"


@dataclass(frozen=True)
class SpiderState:
    """One client's persistent state between rounds."""

    local: list[np.ndarray]  # local model arrays, ``state_dict`` order of its mask's network
    mask: np.ndarray  # bool (cell types, edges, ops)
    decided: np.ndarray  # bool (cell types, edges)
    rounds: int  # rounds this client has trained (t of Alg. 1 / 2)
    last_round: int  # server round of the last training
    rng_state: str  # JSON of the search generator's bit_generator.state
    fingerprint: str

    def generator(self) -> np.random.Generator:
        rng = np.random.default_rng()
        rng.bit_generator.state = json.loads(self.rng_state)
        return rng


def run_fingerprint(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:24]


def rng_state_json(rng: np.random.Generator) -> str:
    return json.dumps(rng.bit_generator.state)


def _meta(state: SpiderState) -> dict[str, Any]:
    return {"rounds": state.rounds, "last_round": state.last_round,
            "rng_state": state.rng_state, "fingerprint": state.fingerprint,
            "mask_shape": list(state.mask.shape),
            "mask": [bool(b) for b in state.mask.ravel()],
            "decided": [bool(b) for b in state.decided.ravel()]}


def _from_meta(meta: Mapping[str, Any], local: list[np.ndarray]) -> SpiderState:
    shape = tuple(int(s) for s in meta["mask_shape"])
    mask = np.asarray(meta["mask"], dtype=bool).reshape(shape)
    decided = np.asarray(meta["decided"], dtype=bool).reshape(shape[:2])
    return SpiderState(local=local, mask=mask, decided=decided, rounds=int(meta["rounds"]),
                       last_round=int(meta["last_round"]), rng_state=str(meta["rng_state"]),
                       fingerprint=str(meta["fingerprint"]))


def write_records(records: RecordDict, state: SpiderState) -> None:
    records[LOCAL_KEY] = ArrayRecord(numpy_ndarrays=state.local)
    records[SEARCH_KEY] = ConfigRecord(_meta(state))


def read_records(records: RecordDict) -> SpiderState | None:
    local, meta = records.get(LOCAL_KEY), records.get(SEARCH_KEY)
    if not isinstance(local, ArrayRecord) or not isinstance(meta, ConfigRecord):
        return None
    return _from_meta(dict(meta), local.to_numpy_ndarrays())


def checkpoint_path(directory: str | Path, client_id: int) -> Path:
    return Path(directory) / f"spider-client-{client_id}.npz"


def save_checkpoint(path: Path, state: SpiderState) -> None:
    """Write atomically: a reader sees the previous file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    arrays: dict[str, Any] = {f"local_{i}": a for i, a in enumerate(state.local)}
    arrays["meta"] = np.array(json.dumps(_meta(state)))
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_checkpoint(path: Path, *, fingerprint: str, before_round: int) -> SpiderState | None:
    """The state in ``path`` if it belongs to this run and precedes ``before_round``."""
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        local = [data[f"local_{i}"] for i in range(len(data.files) - 1)]
    state = _from_meta(meta, local)
    if state.fingerprint != fingerprint or state.last_round >= before_round:
        return None
    return state
