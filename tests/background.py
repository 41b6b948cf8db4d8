"""Real runs that spend most of their time waiting (a round timeout, Flower's heartbeat
expiry), started in the background as the test run starts, so that their waiting overlaps
other tests' work; the test that checks one reads its finished outcome.

A scenario is a function of a fresh folder that returns a JSON-able outcome, registered with
:func:`scenario`. A test marked ``@pytest.mark.scenario(NAME)`` reads that outcome from the
``scenarios`` fixture (tests/conftest.py). The first worker of the test run (xdist's, or
the one process with ``-n 0``) to start claims every scenario a selected test needs (a file
created exclusively in the folder the workers share) and runs it in a thread; the outcome,
or the traceback that ended it, is written beside it as JSON, which the checking test waits
for on whichever worker runs it. A scenario no selected test needs never starts.
"""

from __future__ import annotations

import json
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

Scenario = Callable[[Path], dict[str, Any]]
SCENARIOS: dict[str, Scenario] = {}


def scenario(run: Scenario) -> Scenario:
    """Register ``run`` under its function name."""
    assert run.__name__ not in SCENARIOS, f"two scenarios named {run.__name__}"
    SCENARIOS[run.__name__] = run
    return run


@dataclass
class Scenarios:
    """The scenarios of one test run, in ``root`` (shared by its workers)."""

    root: Path
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, names: Iterable[str]) -> None:
        """Start each of ``names`` that no worker has claimed yet."""
        for name in sorted(names):
            if name not in SCENARIOS:
                raise KeyError(f"no scenario named {name!r} (tests.background.scenario)")
            try:
                os.close(os.open(self.root / f"{name}.claimed",
                                 os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
            thread = threading.Thread(target=self._run, args=(name,), name=f"scenario {name}",
                                      daemon=True)
            thread.start()
            self.threads.append(thread)

    def _run(self, name: str) -> None:
        folder = self.root / name
        folder.mkdir()
        try:
            done: dict[str, Any] = {"outcome": SCENARIOS[name](folder)}
        except BaseException:  # noqa: BLE001 - the checking test reports it
            done = {"error": traceback.format_exc()}
        partial = self.root / f"{name}.json.partial"
        partial.write_text(json.dumps(done))
        os.replace(partial, self.root / f"{name}.json")

    def outcome(self, name: str, timeout: float = 1200.0) -> dict[str, Any]:
        """``name``'s outcome, once it has finished (a failed test if it raised)."""
        path, deadline = self.root / f"{name}.json", time.monotonic() + timeout
        while not path.exists():
            if time.monotonic() > deadline:
                pytest.fail(f"scenario {name} did not finish within {timeout:.0f} s")
            time.sleep(0.2)
        done = json.loads(path.read_text())
        if "error" in done:
            pytest.fail(f"scenario {name} raised:\n{done['error']}")
        return dict(done["outcome"])

    def join(self) -> None:
        """Wait for the scenarios this worker started (nothing of theirs is left running)."""
        for thread in self.threads:
            thread.join()
