"""A client's ``Context.state`` on disk, per round, so a resumed run finds it again.

Methods whose clients keep something between rounds (Local's model, FedRep's
head, SPIDER's local model and search state) hold it in ``Context.state``. That
lives in the process hosting the node: when the server process dies and the
run is resumed (``resume=...``), or a SuperNode restarts, it is gone. So after
every message that leaves the state non-empty the ClientApp writes it to
``<dir>/client-<id>/round-<r>.npz`` (atomically: temp file + rename), and a
client whose state is empty restores the newest file of a round *before* the
current one. That is exactly the state the client had when the server
checkpointed: a seeded resumed run re-sends the same rounds to the same
clients, so a file from a round after the server's checkpoint is either
re-written by the resumed round or never read (its round is not before any
round in which that client is next addressed).

Files are only read back when their ``lineage`` — an id the server keeps
across resumptions and sends in every round config — matches, so a stale
folder of another run is ignored. Only the newest ``keep`` files are kept
(``keep`` > the server's ``checkpoint_every``, so the file the resumed run
needs is always there).

The directory is the node config's ``checkpoint-dir`` (deployment), or in a
simulation ``<output-dir>/client_state`` (the CLI copies the resumed run's
folder there).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

META = "__meta__"
_ROUND_FILE = re.compile(r"^round-(\d+)\.npz$")


class ClientStateStore:
    def __init__(self, directory: str | Path, client_id: int, *, lineage: str,
                 keep: int) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.folder = Path(directory) / f"client-{int(client_id)}"
        self.lineage, self.keep = lineage, keep

    def rounds(self) -> list[int]:
        """Rounds with a saved state, oldest first."""
        if not self.folder.is_dir():
            return []
        found = (_ROUND_FILE.match(p.name) for p in self.folder.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def path(self, server_round: int) -> Path:
        return self.folder / f"round-{int(server_round)}.npz"

    def save(self, state: RecordDict, server_round: int) -> Path:
        """Write ``state``'s array and config records as of the end of ``server_round``."""
        arrays: dict[str, np.ndarray] = {}
        meta: dict[str, object] = {"lineage": self.lineage, "round": int(server_round),
                                   "arrays": {}, "configs": {}}
        for key, record in state.items():
            if isinstance(record, ArrayRecord):
                values = record.to_numpy_ndarrays()
                meta["arrays"][key] = len(values)  # type: ignore[index]
                arrays.update({f"{key}/{i}": a for i, a in enumerate(values)})
            elif isinstance(record, ConfigRecord):
                meta["configs"][key] = dict(record)  # type: ignore[index]
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(server_round)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        entries: dict[str, Any] = {**arrays, META: np.array(json.dumps(meta))}
        np.savez(tmp, **entries)
        os.replace(tmp, path)
        for old in self.rounds()[:-self.keep]:
            self.path(old).unlink(missing_ok=True)
        return path

    def restore(self, state: RecordDict, before_round: int) -> int | None:
        """Fill an empty ``state`` from the newest file of a round < ``before_round``.

        Returns that round, or None when there is none of this lineage.
        """
        for saved in reversed([r for r in self.rounds() if r < before_round]):
            path = self.path(saved)
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data[META]))
                if meta.get("lineage") != self.lineage:
                    continue
                for key, count in meta["arrays"].items():
                    state[key] = ArrayRecord(
                        numpy_ndarrays=[data[f"{key}/{i}"] for i in range(int(count))])
            for key, values in meta["configs"].items():
                state[key] = ConfigRecord(values)
            return saved
        return None
