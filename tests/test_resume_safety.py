"""A resume keeps its history and starts only from what it can continue.

* A run resumed into its own folder (``resume=D hydra.run.dir=D``) reads its checkpoint and
  ``metrics.jsonl`` before anything there is written, and continues: the real `pfednas` run
  of this is FedRep's, interrupted and resumed, in tests/test_baselines_e2e.py.
* A folder without (or with an unreadable) ``resolved_config.yaml``, and a checkpoint that
  is garbage, cut short, non-finite, of another dtype, key set or shape than the configured
  strategy holds: exit 2 with one line before anything starts.
* A cut-short last line of ``metrics.jsonl`` (a crash while it was written) is dropped with
  a warning; a bad line before it is an error.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from pfednas.app.checkpoint import (
    Checkpoint,
    parse_history,
    read_checkpoint,
    save_checkpoint,
    verified_resume,
)
from pfednas.app.results import ResultsWriter
from pfednas.cli import run_job
from pfednas.config import (
    CHECKPOINT_FILE,
    RESOLVED_CONFIG,
    SIMULATION_ENV,
    ConfigError,
    compose,
    settings_from_cfg,
)
from pfednas.methods.build import build_strategy
from pfednas.records import RoundRecord
from pfednas.strategies.base import PersonalizedStrategy

TINY = ["method=fedavg", "method.arch=min", "method.finetune_epochs=1",
        "federation.num_clients=3", "federation.clients_per_round=3",
        "federation.num_rounds=4", "federation.eval_every=2", "federation.local_epochs=1",
        "checkpoint_every=2"]
PERFEDRLNAS = ["method=perfedrlnas", "federation.num_clients=3",
               "federation.clients_per_round=3", "federation.num_rounds=4",
               "checkpoint_every=2"]


def fresh_strategy(overrides: list[str]) -> PersonalizedStrategy:
    return build_strategy(settings_from_cfg(compose(overrides)))


def write_run_folder(folder: Path, overrides: list[str] = TINY,
                     state: dict[str, np.ndarray] | None = None, finished: int = 2) -> Path:
    """A run folder as the ServerApp leaves it after round ``finished``'s checkpoint."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RESOLVED_CONFIG).write_text(OmegaConf.to_yaml(compose(overrides)))
    ResultsWriter(folder, [RoundRecord(round=r, sampled=[0, 1, 2]) for r in range(1, 3)])
    save_checkpoint(folder, finished, fresh_strategy(overrides).state() if state is None
                    else state, lineage=str(folder))
    return folder


def refusal(folder: Path, overrides: list[str] = TINY) -> str:
    """The one line `pfednas OVERRIDES resume=FOLDER` stops with (in-process, before any
    process starts); fails unless it exits with code 2."""
    with pytest.raises(ConfigError) as caught:
        settings = settings_from_cfg(compose([*overrides, f"resume={folder}"]))
        verified_resume(folder, build_strategy(settings), settings.federation.num_rounds)
    assert "\n" not in str(caught.value)
    return str(caught.value)


# -- the folder's config ---------------------------------------------------------------------
@pytest.mark.parametrize(("content", "message"), [
    (None, f"no {RESOLVED_CONFIG} in that directory"),
    ("method: [fedavg\n", f"{RESOLVED_CONFIG} is not a readable config"),
    ("- a list\n", f"{RESOLVED_CONFIG} is not a readable config"),
])
def test_a_folder_without_a_readable_config_is_refused_in_one_line(
        tmp_path: Path, content: str | None, message: str) -> None:
    folder = write_run_folder(tmp_path / "run")
    if content is None:
        (folder / RESOLVED_CONFIG).unlink()
    else:
        (folder / RESOLVED_CONFIG).write_text(content)

    assert message in refusal(folder)


# -- the checkpoint --------------------------------------------------------------------------
def _tampered(how: str, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    first = sorted(state)[0]
    if how == "nan":
        return {k: np.full_like(v, np.nan) if v.dtype.kind == "f" else v
                for k, v in state.items()}
    if how == "inf":
        return {**state, first: np.full_like(state[first], np.inf)}
    if how == "float64":
        return {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in state.items()}
    if how == "missing key":
        return {k: v for k, v in state.items() if k != first}
    if how == "extra key":
        return {**state, "global_999": np.zeros(3, np.float32)}
    if how == "shape":
        return {**state, first: np.zeros((*state[first].shape, 2), state[first].dtype)}
    raise ValueError(how)


@pytest.mark.parametrize(("how", "message"), [
    ("nan", "non-finite value(s)"),
    ("inf", "non-finite value(s)"),
    ("float64", "is float64, the strategy holds float32"),
    ("missing key", "it lacks global_"),
    ("extra key", "no use for global_999"),
    ("shape", "has shape"),
])
def test_a_checkpoint_that_does_not_fit_the_strategy_is_refused(
        tmp_path: Path, how: str, message: str) -> None:
    state = _tampered(how, fresh_strategy(TINY).state())
    folder = write_run_folder(tmp_path / "run", state=state)

    line = refusal(folder)

    assert line.startswith(f"resume={folder}: {CHECKPOINT_FILE} does not fit")
    assert message in line


@pytest.mark.parametrize("how", ["garbage", "truncated", "empty", "npy", "no round"])
def test_an_unreadable_checkpoint_is_refused(tmp_path: Path, how: str) -> None:
    folder = write_run_folder(tmp_path / "run")
    path = folder / CHECKPOINT_FILE
    whole = path.read_bytes()
    if how == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif how == "truncated":
        path.write_bytes(whole[: len(whole) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "npy":
        np.save(path.with_suffix(".npy"), np.zeros(3))
        path.with_suffix(".npy").replace(path)
    else:
        np.savez(path.with_suffix(".tmp.npz"), global_0=np.zeros(3))
        path.with_suffix(".tmp.npz").replace(path)

    line = refusal(folder)

    assert line.startswith(f"resume={folder}: {CHECKPOINT_FILE}")
    assert ("unreadable" in line) if how != "no round" else ("no integer __round__" in line)


def test_a_checkpoint_past_the_run_s_rounds_is_refused(tmp_path: Path) -> None:
    folder = write_run_folder(tmp_path / "run", finished=9)

    assert "of round 9, outside this run's rounds 1..4" in refusal(folder)


def test_nan_stays_allowed_where_a_fresh_strategy_holds_it(tmp_path: Path) -> None:
    # PerFedRLNAS keeps NaN for "no accuracy yet" (acc_history); its supernet must be finite
    state = fresh_strategy(PERFEDRLNAS).state()
    assert np.isnan(state["acc_history"]).all()
    folder = write_run_folder(tmp_path / "ok", PERFEDRLNAS, state=state)
    poisoned = write_run_folder(tmp_path / "bad", PERFEDRLNAS,
                                state={**state, "supernet_0": state["supernet_0"] * np.nan})
    settings = settings_from_cfg(compose([*PERFEDRLNAS, f"resume={folder}"]))

    resumed = verified_resume(folder, build_strategy(settings), 4)

    assert resumed.checkpoint.finished_round == 2 and [r.round for r in resumed.records] == [1, 2]
    assert "supernet_0 holds" in refusal(poisoned, PERFEDRLNAS)


def test_a_fitting_checkpoint_is_loaded_into_the_strategy(tmp_path: Path) -> None:
    state = {k: v + 1 if v.dtype.kind == "f" else v
             for k, v in fresh_strategy(TINY).state().items()}
    folder = write_run_folder(tmp_path / "run", state=state)
    strategy = fresh_strategy(TINY)

    resumed = verified_resume(folder, strategy, 4)

    assert resumed.warning is None and resumed.checkpoint.lineage == str(folder)
    assert all(np.array_equal(strategy.state()[k], v) for k, v in state.items())


def test_the_command_refuses_a_bad_resume_with_exit_2_and_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_run_folder(tmp_path / "run")
    (folder / CHECKPOINT_FILE).write_bytes(b"PK\x03\x04 not a zip")

    with pytest.raises(SystemExit) as exit_:
        run_job(compose([*TINY, f"resume={folder}"]))

    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.count("\n") == 1 and err.startswith(f"pfednas: error: resume={folder}: ")


# -- metrics.jsonl ---------------------------------------------------------------------------
def _lines(*rounds: int) -> str:
    return "".join(json.dumps(RoundRecord(round=r).to_json()) + "\n" for r in rounds)


def test_a_cut_short_last_line_is_dropped_with_a_warning() -> None:
    text = _lines(1, 2, 3) + '{"round": 4, "sampled_cli'

    records, warning = parse_history(text, 3, "m.jsonl")

    assert [r.round for r in records] == [1, 2, 3]
    assert warning is not None and "dropped its last line (4)" in warning


def test_a_bad_line_before_the_last_is_an_error_and_rounds_must_be_complete() -> None:
    with pytest.raises(ConfigError, match="line 2 is not a round record"):
        parse_history(_lines(1) + "garbage\n" + _lines(3), 3, "m.jsonl")
    with pytest.raises(ConfigError, match=r"does not hold rounds 1\.\.3"):
        parse_history(_lines(1, 3), 3, "m.jsonl")

    records, warning = parse_history(_lines(1, 2, 3, 4), 2, "m.jsonl")
    assert [r.round for r in records] == [1, 2] and warning is None


def test_results_writer_keeps_the_previous_rounds_it_is_given(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text(_lines(1, 2, 3))
    previous, _ = parse_history((tmp_path / "metrics.jsonl").read_text(), 2, "m")

    writer = ResultsWriter(tmp_path, previous)
    writer.write_round(RoundRecord(round=3, sampled=[7]))

    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2, 3] and rows[2]["sampled_clients"] == [7]


# -- one real resume into its own folder ----------------------------------------------------
class Interrupted(Exception):
    """Stops the in-process run right after a checkpoint, as a crash would."""


def interrupted_run(folder: Path, overrides: list[str], after: int) -> Checkpoint:
    """The folder a `pfednas OVERRIDES hydra.run.dir=FOLDER` run leaves when it dies right
    after round ``after``'s checkpoint: the real strategy and ClientApp handlers, in this
    process (pfednas.run.inprocess), the ServerApp's files written as it writes them."""
    from pfednas.run.inprocess import InProcessGrid, _task_identity

    cfg = compose(overrides)
    settings = settings_from_cfg(cfg)
    writer = ResultsWriter(folder)
    (folder / RESOLVED_CONFIG).write_text(OmegaConf.to_yaml(cfg))
    strategy = build_strategy(settings, lineage=str(folder.resolve()))
    grid = InProcessGrid(overrides, settings.federation.num_clients)

    def on_round(record: RoundRecord) -> None:
        writer.write_round(record)
        if record.round == after:
            save_checkpoint(folder, after, strategy.state(), lineage=strategy.lineage)
            raise Interrupted

    with _task_identity(0), pytest.raises(Interrupted):
        strategy.connect(grid)  # type: ignore[arg-type]
        strategy.run(grid, on_round)  # type: ignore[arg-type]
    return read_checkpoint(folder)


HAPFNAS_AFTER_SEARCH = [
    "method=hapfnas", "federation.num_clients=3", "federation.clients_per_round=2",
    "federation.num_rounds=5", "federation.local_epochs=1", "federation.eval_every=5",
    "dataset.max_samples_per_client=120", "method.distill_rounds=2", "method.search_rounds=1",
    "method.knowledge_width=4", "method.transfer.size=200", "method.distill.steps=5",
    "method.distill.batch_size=32", "method.predictor.archs_per_client=8",
    "method.predictor.trees=10", "method.predictor.folds=3", "method.evolution.population=8",
    "method.evolution.generations=3", "method.evolution.parents=3",
    "search_space.base_widths=[8,16]", "search_space.depths=[1,2]", "search_space.kernels=[3,5]",
    "search_space.expand_ratios=[2,3]", "search_space.stage_strides=[1,2]",
    "search_space.stage_se=[false,true]", "search_space.stage_acts=[relu,hswish]",
    "search_space.head_width=32", "~search_space.per_dataset", "checkpoint_every=1"]


@pytest.mark.parametrize(("overrides", "after"), [
    (HAPFNAS_AFTER_SEARCH, 4),  # knowledge models, (arch, accuracy) pairs: keys that grow
    ([*PERFEDRLNAS, "federation.clients_per_round=2", "federation.local_epochs=1"], 2),
], ids=["hapfnas", "perfedrlnas"])
def test_a_checkpoint_written_after_real_rounds_is_resumable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str],
        after: int) -> None:
    # Prepare: real rounds (the real strategy and ClientApp handlers, in this process)
    monkeypatch.setenv(SIMULATION_ENV, "1")
    saved = interrupted_run(tmp_path, overrides, after=after)
    settings = settings_from_cfg(compose([*overrides, f"resume={tmp_path}"]))
    strategy = build_strategy(settings)

    resumed = verified_resume(tmp_path, strategy, settings.federation.num_rounds)

    assert resumed.checkpoint.finished_round == after
    assert [r.round for r in resumed.records] == list(range(1, after + 1))
    assert set(strategy.state()) == set(saved.state)
    if "method=hapfnas" in overrides:
        assert any(k.startswith("knowledge_") for k in saved.state)
        assert saved.state["pair_indices"].shape[0] > 0
