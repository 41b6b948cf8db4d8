"""`pfednas bench` without real cells: the stale check on the resolved configuration, and
the rule that reported cells run from committed code (a fake `pfednas` stands in for a run)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pfednas.bench.cells import BenchPreset, Cell, cell_done, cells, compose_preset, stale_keys
from pfednas.bench.cli import main
from pfednas.bench.runs import SOURCE_DIFF, source_diff, source_state
from pfednas.config import compose

OVERRIDES = ("method=fedavg", "dataset=digits", "search_space=mobilenetv3", "dataset.alpha=0.5",
             "seed=0", "federation.num_rounds=2", "checkpoint_every=0")


def _finished_cell(path: Path, overrides: Sequence[str] = OVERRIDES, **saved: object) -> Cell:
    """A cell folder as a finished run leaves it: its config (``saved`` changes it, as a run
    from other defaults would have) and a summary recording its overrides."""
    cfg = OmegaConf.create(OmegaConf.to_container(compose(list(overrides))))
    for name, value in saved.items():  # ``a__b=None`` removes a.b: a run from before it existed
        key = name.replace("__", ".")
        if value is None:
            parent, _, leaf = key.rpartition(".")
            del OmegaConf.select(cfg, parent)[leaf]
        else:
            OmegaConf.update(cfg, key, value)
    path.mkdir(parents=True)
    (path / "resolved_config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (path / "summary.json").write_text(json.dumps({"overrides": list(overrides)}))
    (path / "cell.json").write_text(json.dumps({"commit": "abc", "returncode": 0}))
    return Cell("fedavg", 0.5, 0, "mobilenetv3", tuple(overrides), path)


def test_a_cell_run_before_a_default_changed_is_stale_and_runs_again(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lr = compose(list(OVERRIDES)).federation.lr
    cell = _finished_cell(tmp_path / "cell", federation__lr=lr * 2)

    done = cell_done(cell)

    assert done is False
    assert not (cell.path / "summary.json").exists()
    assert "its run's config differs in federation.lr; running again" in capsys.readouterr().out


def test_stale_keys_name_changed_values_and_options_added_since_the_run(tmp_path: Path) -> None:
    cfg = compose(list(OVERRIDES))
    cell = _finished_cell(tmp_path / "cell", federation__weight_decay=None,
                          federation__momentum=cfg.federation.momentum / 2,
                          method__retired_option=3)

    differ = stale_keys(cell)

    assert differ == ["federation.momentum", "federation.weight_decay (new)",
                      "method.retired_option (gone)"]


def test_a_cell_differing_only_in_keys_that_do_not_change_results_is_done(
        tmp_path: Path) -> None:
    cell = _finished_cell(tmp_path / "cell", progress=False, checkpoint_every=7, label="renamed",
                          output_dir="/elsewhere", resume="/an/older/run")

    done = cell_done(cell)

    assert stale_keys(cell) == [] and done is True
    assert (cell.path / "summary.json").is_file()


def test_a_cell_without_its_resolved_config_runs_again(tmp_path: Path) -> None:
    cell = _finished_cell(tmp_path / "cell")
    (cell.path / "resolved_config.yaml").unlink()

    differ, done = stale_keys(cell), cell_done(cell)

    assert differ == ["resolved_config.yaml (missing)"] and done is False


@pytest.mark.parametrize("record", [{"commit": "abc", "returncode": 1}, None])
def test_a_cell_whose_run_failed_after_its_summary_runs_again(
        tmp_path: Path, record: dict | None, capsys: pytest.CaptureFixture[str]) -> None:
    # a run that wrote its summary, then exited 1 (clients missing from its final
    # evaluation), or was stopped before the bench wrote its record
    cell = _finished_cell(tmp_path / "cell")
    if record is None:
        (cell.path / "cell.json").unlink()
    else:
        (cell.path / "cell.json").write_text(json.dumps(record))

    done = cell_done(cell)

    assert done is False and not (cell.path / "summary.json").exists()
    assert "did not finish with exit code 0; running again" in capsys.readouterr().out


def test_a_cell_that_never_finished_is_not_stale_but_not_done(tmp_path: Path) -> None:
    cell = Cell("fedavg", 0.5, 0, "mobilenetv3", OVERRIDES, tmp_path / "cell")

    assert stale_keys(cell) is None and cell_done(cell) is False


def test_committed_cells_stay_current_under_the_options_added_since() -> None:
    # issue 61's federation.aggregation and trim_fraction: every earlier cell ran each
    # method's mean, which null still is in a simulation
    root = Path(__file__).resolve().parents[1] / "docs" / "bench"
    paths = [root / "digits" / "fedavg" / "alpha=0.5" / "seed=0",
             root / "devices" / "tuning" / "fedavg" / "config=0"]
    found = [p for p in paths if (p / "summary.json").is_file()]

    differ = {p.name: stale_keys(Cell("fedavg", 0.5, 0, "mobilenetv3", tuple(json.loads(
        (p / "summary.json").read_text())["overrides"]), p)) for p in found}

    assert found and all(keys == [] for keys in differ.values()), differ


# -- uncommitted changes ------------------------------------------------------------------------
def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t",
                           *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def dirty_checkout(tmp_path: Path) -> Path:
    """A git checkout with a modified module, a new config file, and a changed README."""
    root = tmp_path / "checkout"
    for name, text in {"src/pfednas/x.py": "A = 1\n", "conf/a.yaml": "a: 1\n",
                       "pyproject.toml": "[project]\n", "README.md": "# x\n"}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    _git(root.parent, "init", "-q", str(root))
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "base")
    (root / "src/pfednas/x.py").write_text("A = 2\n")
    (root / "conf/new.yaml").write_text("b: 2\n")
    (root / "README.md").write_text("# y\n")
    return root


def test_source_state_names_uncommitted_package_and_config_files_only(
        dirty_checkout: Path) -> None:
    head = _git(dirty_checkout, "rev-parse", "HEAD").strip()

    state = source_state(dirty_checkout)

    assert sorted(state.changed) == ["conf/new.yaml", "src/pfednas/x.py"]
    assert state.commit == f"{head}+dirty"


def test_source_diff_replays_the_uncommitted_changes_on_the_commit(
        dirty_checkout: Path, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", str(dirty_checkout), str(clone))
    (tmp_path / "changes.diff").write_text(source_diff(dirty_checkout))

    _git(clone, "apply", str(tmp_path / "changes.diff"))

    assert (clone / "src/pfednas/x.py").read_text() == "A = 2\n"
    assert (clone / "conf/new.yaml").read_text() == "b: 2\n"
    assert (clone / "README.md").read_text() == "# x\n"


def _fake_pfednas(cell: Cell) -> list[str]:
    """A run that only writes the summary and the config the real one would."""
    script = ("import sys, pathlib; from omegaconf import OmegaConf; "
              "from pfednas.config import compose; out = pathlib.Path(sys.argv[1]); "
              "(out / 'resolved_config.yaml').write_text(OmegaConf.to_yaml(compose(sys.argv[2:])));"
              " (out / 'summary.json').write_text('{}')")
    return [sys.executable, "-c", script, str(cell.path), *cell.overrides]


@pytest.fixture
def fake_runs(monkeypatch: pytest.MonkeyPatch, dirty_checkout: Path) -> list[Path]:
    """Cells run the fake ``pfednas`` from ``dirty_checkout``; the report is a stub."""
    reports: list[Path] = []

    def report(finished: list[Path], out: Path, **_: object) -> Path:
        out.mkdir(parents=True)
        reports.append(out / "table.md")
        reports[-1].write_text(f"{len(finished)} cells\n")
        return reports[-1]

    monkeypatch.setattr("pfednas.source.checkout_root", lambda: dirty_checkout)
    monkeypatch.setattr("pfednas.bench.runs.pfednas_command", _fake_pfednas)
    monkeypatch.setattr("pfednas.report.cli.build_report", report)
    return reports


def test_bench_refuses_reported_cells_from_uncommitted_changes(
        fake_runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench"

    code = main(["bench=smoke", f"bench.out={out}"])

    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("pfednas bench: error: uncommitted changes to ")
    assert "src/pfednas/x.py" in err and "conf/new.yaml" in err and "README" not in err
    assert "--allow-dirty" in err and not out.exists() and not fake_runs


def test_allow_dirty_runs_and_keeps_the_changes_beside_each_cell(
        fake_runs: list[Path], dirty_checkout: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    head = _git(dirty_checkout, "rev-parse", "HEAD").strip()

    code = main(["bench=smoke", f"bench.out={out}", "--allow-dirty"])

    cell_dirs = sorted(p.parent for p in out.glob("*/alpha=0.5/seed=0/summary.json"))
    assert code == 0 and len(cell_dirs) == 2 and fake_runs[0].read_text() == "2 cells\n"
    for path in cell_dirs:
        assert (path / SOURCE_DIFF).read_text() == source_diff(dirty_checkout)
        assert json.loads((path / "cell.json").read_text())["commit"] == f"{head}+dirty"


def test_a_finished_bench_reports_again_from_uncommitted_changes(
        fake_runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pfednas.methods import METHODS

    out = tmp_path / "bench"
    preset = BenchPreset.from_config(compose_preset("smoke", [f"bench.out={out}"]), METHODS)
    for cell in cells(preset, [], {m: METHODS[m].spaces for m in preset.methods}):
        _finished_cell(cell.path, cell.overrides)

    code = main(["bench=smoke", f"bench.out={out}"])

    assert code == 0 and capsys.readouterr().out.count("done before, skipped") == 2
    assert fake_runs[0].read_text() == "2 cells\n"


def _slow_pfednas(seconds: float) -> object:
    """A fake run that notes its pid and start, sleeps ``seconds``, then finishes as
    :func:`_fake_pfednas` does and notes its end."""
    def command(cell: Cell) -> list[str]:
        fake = _fake_pfednas(cell)
        script = ("import os, sys, time, pathlib; out = pathlib.Path(sys.argv[1]); "
                  "(out / 'pid').write_text(str(os.getpid())); "
                  "(out / 'began').write_text(repr(time.time())); "
                  f"time.sleep({seconds}); "
                  f"import subprocess; subprocess.run({fake[:3]!r} + sys.argv[1:], check=True); "
                  "(out / 'ended').write_text(repr(time.time()))")
        return [sys.executable, "-c", script, *fake[3:]]
    return command


def test_cells_at_once_runs_cells_side_by_side_and_records_it(
        fake_runs: list[Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("pfednas.bench.runs.pfednas_command", _slow_pfednas(2.0))
    out = tmp_path / "bench"

    code = main(["bench=smoke", f"bench.out={out}", "bench.cells_at_once=2", "--allow-dirty"])

    cell_dirs = sorted(p.parent for p in out.glob("*/alpha=0.5/seed=0/summary.json"))
    assert code == 0 and len(cell_dirs) == 2
    spans = [(float((d / "began").read_text()), float((d / "ended").read_text()))
             for d in cell_dirs]
    assert max(b for b, _ in spans) < min(e for _, e in spans)  # the two ran at the same time
    assert {json.loads((d / "cell.json").read_text())["cells_at_once"] for d in cell_dirs} == {2}


def test_a_stopped_bench_stops_every_cell_running_and_records_none(
        fake_runs: list[Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os
    import signal
    import threading

    monkeypatch.setattr("pfednas.bench.runs.pfednas_command", _slow_pfednas(120.0))
    out = tmp_path / "bench"
    pids = [out / m / "alpha=0.5/seed=0/pid" for m in ("fedavg", "local")]

    def stop_when_both_run() -> None:
        while not all(p.is_file() for p in pids):
            threading.Event().wait(0.1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_when_both_run, daemon=True).start()
    code = main(["bench=smoke", f"bench.out={out}", "bench.cells_at_once=2", "--allow-dirty"])

    assert code == 130
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid.read_text()), 0)
        assert not (pid.parent / "cell.json").exists() and not (pid.parent / "FAILED.json").exists()


@pytest.mark.parametrize(("at_once", "share", "free", "expected"), [
    (3, None, 80_000, 3), (3, 4096, None, 3), (3, 4096, 80_000, 3), (30, 4096, 80_000, 19),
    (3, 4096, 1_000, 1)])
def test_cells_side_by_side_are_as_many_as_the_gpu_memory_holds(
        at_once: int, share: int | None, free: int | None, expected: int) -> None:
    from pfednas.bench.runs import cells_side_by_side

    assert cells_side_by_side(at_once, share, free) == expected


@pytest.mark.parametrize("bad", ["bench.cells_at_once=0", "bench.cells_at_once=two",
                                 "bench.cell_gpu_mib=0"])
def test_a_bad_side_by_side_setting_is_one_line_naming_its_key(
        bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench=smoke", bad, "--dry-run"])

    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and bad.split("=")[0] in err


def test_a_tuning_run_that_scored_both_scopes_is_current_whatever_the_default_scope(
        tmp_path: Path) -> None:
    both = (*OVERRIDES, "federation.finetune_both=true")
    scope = compose(list(both)).method.finetune_scope
    other = "full" if scope == "head" else "head"

    scored_both = _finished_cell(tmp_path / "both", both, method__finetune_scope=other)
    one_scope = _finished_cell(tmp_path / "one", OVERRIDES, method__finetune_scope=other)

    assert stale_keys(scored_both) == []
    assert stale_keys(one_scope) == ["method.finetune_scope"]


def test_each_methods_defaults_are_what_the_main_jobs_benchmark_chose() -> None:
    # Prepare: bench=digits' reported cells of seed 0 (the main job's seed), with what its
    # committed tuning cells chose
    from pfednas.bench.cells import config_differences, resolved_values
    from pfednas.bench.tuning import chosen_overrides
    from pfednas.methods import METHODS

    preset = BenchPreset.from_config(compose_preset("digits", [
        f"bench.out={Path(__file__).resolve().parents[1] / 'docs' / 'bench' / 'digits'}"]),
        METHODS)
    spaces = {m: METHODS[m].spaces for m in preset.methods}
    reported = [c for c in cells(preset, [], spaces, chosen_overrides(preset, [], spaces))
                if c.seed == 0]

    # Execute: `pfednas method=<m>` against each cell
    differences = {c.method: config_differences(
        resolved_values(compose([f"method={c.method}"])), resolved_values(compose(
            list(c.overrides)))) for c in reported}

    # Assert: they differ only in how often the run is evaluated (and whether fine-tuned
    # along the way) and checkpointed, and in whether it prints progress, none of which
    # changes a figure (tests/test_inprocess.py)
    assert set(differences) == {"perfedrlnas", "fedavg"}
    for keys in differences.values():
        assert set(keys) <= {"federation.eval_every", "federation.eval_finetune",
                             "checkpoint_every", "progress"}


def test_a_tuning_run_is_not_stale_by_fine_tuned_evaluations_along_the_way(
        tmp_path: Path) -> None:
    tuning = (*OVERRIDES, "eval_split=val_half", "federation.eval_finetune=all")
    reported = (*OVERRIDES, "federation.eval_finetune=all")

    before_tuning = _finished_cell(tmp_path / "tuning", tuning, federation__eval_finetune="final")
    before_reported = _finished_cell(tmp_path / "reported", reported,
                                     federation__eval_finetune="final")

    assert stale_keys(before_tuning) == []
    assert stale_keys(before_reported) == ["federation.eval_finetune"]


def test_a_tuning_run_scored_on_the_validation_half_is_current_under_the_one_half_rule(
        tmp_path: Path) -> None:
    # Prepare: tuning runs saved with eval_split=val, today's preset asking val_half; a
    # SPIDER one from before issue 45, whose config said it trained on val in its final phase
    def tuning(method: str, *extra: str) -> tuple[str, ...]:
        return (f"method={method}", *OVERRIDES[1:], "eval_split=val_half", *extra)

    nas = _finished_cell(tmp_path / "nas", tuning("perfedrlnas"), eval_split="val")
    baseline = _finished_cell(tmp_path / "baseline", tuning("fedavg"), eval_split="val")
    darts = ("search_space=darts_s2", "search_space.channels=4", "search_space.layers=3")
    spider = _finished_cell(tmp_path / "spider", tuning("spider", *darts), eval_split="val",
                            method__train_on_val_when_final=True)

    # Execute / Assert: a method that selects on validation data was scored on that half
    # already (and SPIDER ran without val, as its record now says); a baseline was scored on
    # all of it, so it runs again
    assert stale_keys(nas) == []
    assert stale_keys(spider) == []
    assert stale_keys(baseline) == ["eval_split"]


def test_a_cell_whose_run_refuses_its_configuration_is_recorded_with_why(
        tmp_path: Path) -> None:
    # a refused run removes its output folder (bench.log in it included): the bench keeps
    # the folder, its record and the run's one line of why
    from pfednas.bench.runs import run_cell

    cell = Cell("fedavg", 0.5, 0, "mobilenetv3",
                ("method=fedavg", "federation.hardware.memory_level_shares=[1.5]"),
                tmp_path / "fedavg" / "alpha=0.5" / "seed=0")

    problem = run_cell(cell, timeout=300)

    assert problem is not None and problem["returncode"] == 2
    assert "memory_level_shares" in problem["error"]
    assert json.loads((cell.path / "cell.json").read_text())["returncode"] == 2
    assert "memory_level_shares" in (cell.path / "bench.log").read_text()
    assert not list(cell.path.parent.glob(".*.bench.log"))
