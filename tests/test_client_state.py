"""Crash and resume, the parts without a Flower run: client state on disk, the ServerApp watch."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from pfednas.app.checkpoint import carry_client_state, read_checkpoint, save_checkpoint
from pfednas.clients.state_store import ClientStateStore
from pfednas.run.launcher import SERVERAPP_DIED, incomplete_message, process_alive, wait_run


def state_of(value: float) -> RecordDict:
    return RecordDict({"head": ArrayRecord(numpy_ndarrays=[np.full((2, 3), value, np.float32),
                                                           np.arange(4)]),
                       "search": ConfigRecord({"rounds": 3, "mask": [True, False]})})


def test_restores_the_newest_state_before_the_round_of_the_same_lineage(tmp_path: Path) -> None:
    # Arrange: client 5 saved after rounds 1, 3 and 4
    store = ClientStateStore(tmp_path, 5, lineage="run-a", keep=10)
    for server_round in (1, 3, 4):
        store.save(state_of(float(server_round)), server_round)

    # Execute: a restarted client addressed in round 4 (the server resumed after round 3)
    restored = RecordDict()
    got = store.restore(restored, before_round=4)

    # Assert: the state saved after round 3, every record back with its dtype
    assert got == 3
    head = restored["head"].to_numpy_ndarrays()  # type: ignore[union-attr]
    np.testing.assert_array_equal(head[0], np.full((2, 3), 3.0, np.float32))
    assert head[0].dtype == np.float32 and head[1].tolist() == [0, 1, 2, 3]
    assert dict(restored["search"]) == {"rounds": 3, "mask": [True, False]}  # type: ignore[arg-type]
    assert store.restore(RecordDict(), before_round=1) is None


def test_another_lineage_is_ignored_and_only_the_newest_files_are_kept(tmp_path: Path) -> None:
    old = ClientStateStore(tmp_path, 0, lineage="old-run", keep=2)
    for server_round in (1, 2, 3):
        old.save(state_of(1.0), server_round)

    assert old.rounds() == [2, 3]
    assert ClientStateStore(tmp_path, 0, lineage="new-run", keep=2).restore(
        RecordDict(), before_round=9) is None
    assert ClientStateStore(tmp_path, 1, lineage="old-run", keep=2).restore(
        RecordDict(), before_round=9) is None  # another client's folder


def test_checkpoint_keeps_lineage_and_resume_carries_client_states(tmp_path: Path) -> None:
    run, new = tmp_path / "run", tmp_path / "new"
    run.mkdir()
    new.mkdir()
    save_checkpoint(run, 4, {"w": np.ones(3)}, lineage="/runs/first")
    ClientStateStore(run / "client_state", 2, lineage="/runs/first", keep=3).save(
        state_of(2.0), 4)

    saved = read_checkpoint(run)

    assert (saved.finished_round, saved.lineage) == (4, "/runs/first")
    assert list(saved.state) == ["w"]
    assert carry_client_state(run, new) == 1
    assert ClientStateStore(new / "client_state", 2, lineage="/runs/first", keep=3).restore(
        RecordDict(), before_round=5) == 4
    assert carry_client_state(new, new) == 0


def test_a_dead_serverapp_stops_the_wait_and_the_message_says_how_to_resume(
        tmp_path: Path) -> None:
    # Arrange: "flwr run" streams for ever; the ServerApp is a process that gets killed
    streaming = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    pid_file = tmp_path / "serverapp.pid"
    pid_file.write_text(f"{server.pid} {socket.gethostname()}\n")
    try:
        assert process_alive(server.pid)
        server.kill()  # not reaped yet: a zombie counts as dead
        start = time.monotonic()

        code = wait_run(streaming, pid_file, poll=0.1)

        assert code == SERVERAPP_DIED and time.monotonic() - start < 15
        assert not process_alive(server.pid)
        assert streaming.poll() is not None  # flwr run was stopped
    finally:
        for proc in (streaming, server):
            proc.kill()
            proc.wait()
    save_checkpoint(tmp_path, 2, {})
    message = incomplete_message(code, tmp_path)
    assert "ServerApp process died" in message and f"resume={tmp_path}" in message


def test_a_serverapp_on_another_host_is_not_watched(tmp_path: Path) -> None:
    finished = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    pid_file = tmp_path / "serverapp.pid"
    pid_file.write_text("1 some-other-host\n")

    assert wait_run(finished, pid_file, poll=0.1) == 0
