"""Progress on the console for the steps that take more than a few seconds.

One helper for every long step: a bar (tqdm) on stderr, its elapsed time ticking each
second, while stderr is a terminal, and nothing where nobody watches (a pipe, a file, a CI
log). ``PFEDNAS_PROGRESS=1`` shows the bars anyway, ``0`` never.

* ``pfednas export``: its stages (:func:`stages`);
* a run started by ``pfednas`` or ``pfednas deploy local``: the rounds, and in a simulation
  the final evaluation's clients. The console side of the run draws them
  (:class:`RunBars`, fed each line that ``flwr run`` streams): the rounds from the
  ServerApp's round lines, the clients from the event line (:func:`event_line`) each
  client prints when its final evaluation is done, only where the console asked for them
  (:data:`EVENTS_ENV`, set by the launcher: a client's process has no terminal).
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import IO

from tqdm import tqdm

ENV = "PFEDNAS_PROGRESS"
EVENTS_ENV = "PFEDNAS_PROGRESS_EVENTS"
EVENT = "[pfednas:progress]"
FINAL_EVALUATION = "final evaluation"
ROUNDS = "rounds"
TICK_SECONDS = 1.0
_EVENT_RE = re.compile(re.escape(EVENT) + r" (?P<stage>[a-z ]+): client (?P<client>\d+) of "
                       r"(?P<total>\d+) done")
_ROUND_RE = re.compile(r"^\[pfednas\] round (?P<round>\d+)/(?P<rounds>\d+) ")


def enabled(stream: IO[str] | None = None) -> bool:
    """Whether bars are drawn on ``stream`` (stderr by default): ``PFEDNAS_PROGRESS`` if set
    to 1 or 0, else whether the stream is a terminal."""
    forced = os.environ.get(ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def new_bar(desc: str, total: int | None, unit: str) -> tqdm:
    """A bar on stderr (disabled where :func:`enabled` says no)."""
    return tqdm(desc=desc, total=total, unit=f" {unit}", file=sys.stderr, leave=False,
                dynamic_ncols=True, disable=not enabled(sys.stderr))


@contextmanager
def ticking(bar: tqdm) -> Iterator[tqdm]:
    """``bar``, redrawn each :data:`TICK_SECONDS` so that its elapsed time moves during a
    long step; closed at the end."""
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(TICK_SECONDS):
            bar.refresh()

    thread = None if bar.disable else threading.Thread(target=tick, daemon=True)
    if thread is not None:
        thread.start()
    try:
        yield bar
    finally:
        stop.set()
        if thread is not None:
            thread.join()
        bar.close()


@contextmanager
def stages(desc: str, names: Sequence[str]) -> Iterator[Callable[[str], None]]:
    """A bar over the named stages of one task; yields ``begin(name)``, which marks the
    stages before ``name`` done and shows ``name`` as the one running."""
    with ticking(new_bar(desc, len(names), "stage")) as bar:
        def begin(name: str) -> None:
            bar.update(names.index(name) - bar.n)
            bar.set_postfix_str(name)

        yield begin
        bar.update(len(names) - bar.n)


def event_line(stage: str, client: int, total: int) -> str:
    return f"{EVENT} {stage}: client {client} of {total} done"


def emit_event(stage: str, client: int, total: int) -> None:
    """Print a client's event line, where the console side of the run asked for it."""
    if os.environ.get(EVENTS_ENV) == "1":
        print(event_line(stage, client, total), flush=True)


class RunBars:
    """The bars of a run's console, from the lines ``flwr run`` streams: the rounds, and a
    bar of clients per stage of their events (final evaluation)."""

    def __init__(self) -> None:
        self._bars: dict[str, tuple[tqdm, ExitStack]] = {}
        self._ended: set[str] = set()  # stages a round's line ended (late events: no bar)

    def _bar(self, name: str, total: int | None, unit: str) -> tqdm:
        if name not in self._bars:
            stack = ExitStack()
            self._bars[name] = (stack.enter_context(ticking(new_bar(name, total, unit))), stack)
        return self._bars[name][0]

    def _close(self, name: str) -> None:
        if name in self._bars:
            self._bars.pop(name)[1].close()

    def start(self) -> None:
        """The rounds' bar, before the first round's line (how many is not known yet)."""
        self._bar(ROUNDS, None, "round")

    def feed(self, line: str) -> bool:
        """Advance the bars on ``line``; True where it is an event line (not for the
        console)."""
        if (match := _EVENT_RE.search(line)) is not None:
            stage = match["stage"]
            if stage in self._ended:
                return True
            bar = self._bar(stage, int(match["total"]), "client")
            bar.update(1)
            if bar.total is not None and bar.n >= bar.total:
                self._close(stage)
            return True
        if (match := _ROUND_RE.match(line)) is not None:
            done, rounds = int(match["round"]), int(match["rounds"])
            bar = self._bar(ROUNDS, rounds, "round")
            bar.total = rounds
            bar.update(done - bar.n)
            for name in [name for name in self._bars if name != ROUNDS]:
                self._close(name)  # a round's line ends its evaluation
                self._ended.add(name)
            if done >= rounds:
                self._close(ROUNDS)
        return False

    def close(self) -> None:
        for name in list(self._bars):
            self._close(name)


@contextmanager
def writing_over(stream: IO[str]) -> Iterator[None]:
    """Write a line to ``stream`` with the bars cleared and drawn again after it."""
    with tqdm.external_write_mode(file=stream):
        yield
