"""Progress on the console (issue 63 item 4): bars for the export's stages, a run's rounds
and its final evaluation's clients on a terminal (or with ``PFEDNAS_PROGRESS=1``), and
nothing where the console is not a terminal."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from pfednas import progress
from pfednas.delivery.export import main as export_main
from pfednas.report.cli import build_report
from pfednas.run.launcher import _pump
from tests.conftest import REPO

STREAM = ["Successfully started run 1\n",
          "[pfednas] fedavg on digits, K=3, N=3, R=2\n",
          "[pfednas] round 1/2 |  10.0s | train loss 2.0\n",
          "(ClientAppActor pid=7) " + progress.event_line(progress.FINAL_EVALUATION, 0, 3) + "\n",
          "(ClientAppActor pid=8) " + progress.event_line(progress.FINAL_EVALUATION, 2, 3) + "\n",
          "[pfednas] round 2/2 |  20.0s | personalized acc 0.9\n",
          # Ray forwards a client's output late: an event after the round's line
          "(ClientAppActor pid=7) " + progress.event_line(progress.FINAL_EVALUATION, 1, 3) + "\n"]


def pumped(tmp_path: Path) -> None:
    _pump(io.StringIO("".join(STREAM)), tmp_path / "flwr_run.log", set())


def test_a_forced_console_shows_the_rounds_and_the_final_evaluations_clients(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare
    monkeypatch.setenv(progress.ENV, "1")

    # Execute
    pumped(tmp_path)
    out, err = capsys.readouterr()

    # Assert: the user's lines on stdout, the events only in the log, the bars on stderr
    assert out.splitlines() == [line.strip() for line in STREAM[1:3] + STREAM[5:6]]
    assert (tmp_path / "flwr_run.log").read_text() == "".join(STREAM)
    assert "rounds" in err and "1/2" in err
    assert "final evaluation" in err
    assert err.count("0/3") == 1  # one bar: the late event opens none


def test_a_console_that_is_not_a_terminal_gets_no_bar(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare: pytest's captured stderr is not a terminal
    monkeypatch.delenv(progress.ENV, raising=False)

    # Execute
    pumped(tmp_path)
    out, err = capsys.readouterr()

    # Assert
    assert err == ""
    assert len(out.splitlines()) == 3


@pytest.mark.parametrize(("forced", "tty", "shown"), [
    (None, True, True), (None, False, False), ("1", False, True), ("0", True, False)])
def test_bars_follow_the_terminal_unless_forced(
        forced: str | None, tty: bool, shown: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    stream = io.StringIO()
    stream.isatty = lambda: tty  # type: ignore[method-assign]
    if forced is None:
        monkeypatch.delenv(progress.ENV, raising=False)
    else:
        monkeypatch.setenv(progress.ENV, forced)

    # Execute, Assert
    assert progress.enabled(stream) is shown


@pytest.mark.parametrize("asked", [True, False])
def test_a_client_prints_its_event_only_where_the_console_asked(
        asked: bool, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare
    monkeypatch.setenv(progress.EVENTS_ENV, "1" if asked else "0")

    # Execute
    progress.emit_event(progress.FINAL_EVALUATION, 4, 20)

    # Assert
    expected = "[pfednas:progress] final evaluation: client 4 of 20 done\n"
    assert capsys.readouterr().out == (expected if asked else "")


def test_export_shows_its_stages_when_forced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare: a run folder with nothing kept, so the export stops in its first stage
    monkeypatch.setenv(progress.ENV, "1")

    # Execute
    code = export_main([str(tmp_path), "--client", "0", "--no-measure"])
    err = capsys.readouterr().err

    # Assert: the bar over its three stages, at the first, then the one-line error
    assert code == 2
    assert "export client 0 (torchscript)" in err and "0/3" in err and "rebuild" in err
    assert err.rstrip().splitlines()[-1].startswith("pfednas: error:")


def test_each_client_of_a_final_evaluation_sends_its_event(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare: the console asked for the events (the launcher sets it where it draws bars)
    from pfednas.run.inprocess import run_inprocess

    monkeypatch.setenv(progress.EVENTS_ENV, "1")

    # Execute: two rounds, an evaluation at each; only the second is the final one
    run_inprocess(["method=local", "method.arch=min", "federation.num_clients=2",
                   "federation.clients_per_round=2", "federation.num_rounds=2",
                   "federation.eval_every=1", "federation.local_epochs=1",
                   "dataset.max_samples_per_client=60"])
    events = [line for line in capsys.readouterr().out.splitlines()
              if line.startswith(progress.EVENT)]

    # Assert
    assert sorted(events) == [progress.event_line(progress.FINAL_EVALUATION, c, 2)
                              for c in (0, 1)]


@pytest.mark.parametrize("forced", ["1", "0"])
def test_a_report_shows_its_stages_on_a_terminal_only(
        forced: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare: one committed bench cell (`pfednas report` was silent for 36 s on four runs)
    monkeypatch.setenv(progress.ENV, forced)
    cell = REPO / "docs" / "bench" / "digits" / "fedavg" / "alpha=0.5" / "seed=0"

    # Execute
    table = build_report([cell], tmp_path / "report")

    # Assert: the table written; the bar over read / tables / plots where bars are on
    err = capsys.readouterr().err
    assert table.is_file()
    if forced == "1":
        assert "report of 1 runs" in err and "3/3" in err
    else:
        assert err == ""
