"""The tightened tuning protocol: both fine-tuning scopes scored from one run, the choice read
from the tuning cells, the reported cells running it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pfednas.bench.cells import BenchError, BenchPreset, cells, tuning_cells
from pfednas.bench.tuning import Tried, best, chosen_overrides, scored, tuning_table
from pfednas.methods import METHODS
from pfednas.run.inprocess import run_inprocess
from tests.test_protocol import TINY


def _preset(tmp_path: Path) -> BenchPreset:
    cfg = {"name": "t", "dataset": "digits", "search_space": "mobilenetv3",
           "methods": ["fedavg", "local"], "alphas": [0.5], "seeds": [0],
           "overrides": [], "method_overrides": {"fedavg": ["federation.lr=0.2"]},
           "out": str(tmp_path), "finetune_epochs": 3, "tuning_seed": 100,
           "tuning": {"fedavg": [["federation.lr=0.1"], ["federation.lr=0.05"]],
                      "local": [["federation.lr=0.1"], ["federation.lr=0.05"]]}}
    return BenchPreset.from_config(cfg, METHODS)


def test_one_tuning_run_scores_both_finetuning_scopes_as_runs_at_each_scope_alone() -> None:
    # Prepare: FedAvg+FT, fine-tuning 2 epochs, at each scope alone and at both
    args = ["method=fedavg", "method.finetune_epochs=2", "federation.lr=0.05", *TINY]

    # Execute
    both = run_inprocess([*args, "federation.finetune_both=true"]).summary
    alone = {scope: run_inprocess([*args, f"method.finetune_scope={scope}"]).summary
             for scope in ("full", "head")}

    # Assert: each scope's accuracy is the one a run at that scope reports, per client
    # too; the reported figure is the configured scope's (the default: head), its work
    # counted once
    for scope in ("full", "head"):
        assert both["finetune_scopes"][scope]["mean"] == pytest.approx(
            alone[scope]["personalized_acc_mean"], abs=1e-9)
    assert [r[f"accuracy_ft_{s}"] for r in both["per_client"] for s in ("full", "head")] == \
        [alone[s]["per_client"][i]["accuracy"] for i in range(len(both["per_client"]))
         for s in ("full", "head")]
    assert both["personalized_acc_mean"] == alone["head"]["personalized_acc_mean"]
    assert both["client_sample_passes"] == alone["head"]["client_sample_passes"]
    assert "finetune_scopes" not in alone["full"]


def test_the_choice_is_the_best_validation_score_of_configuration_and_scope() -> None:
    # Prepare: two runs of a method with a scope, one of a method without
    summaries = [{"finetune_scopes": {"full": {"mean": 0.80, "std": 0.1},
                                      "head": {"mean": 0.86, "std": 0.1}}},
                 {"finetune_scopes": {"full": {"mean": 0.86, "std": 0.1},
                                      "head": {"mean": 0.85, "std": 0.1}}}]

    # Execute
    fedavg = [t for i, s in enumerate(summaries)
              for t in scored("fedavg", i, [f"federation.lr={0.1 / (i + 1)}"], s)]
    local = scored("local", 0, ["federation.lr=0.1"], {"personalized_acc_mean": 0.7,
                                                       "personalized_acc_std": 0.2})

    # Assert: 2 runs x 2 scopes; of equal scores the first (run 0 head before run 1 full)
    assert len(fedavg) == 4 and [t.scope for t in fedavg] == ["full", "head"] * 2
    choice = best(fedavg)
    assert choice is not None and choice.chosen_overrides == (
        "federation.lr=0.1", "method.finetune_scope=head")
    assert best(local) == local[0] and local[0].chosen_overrides == ("federation.lr=0.1",)
    assert best([*local, Tried("local", 1, (), None, None)]) is None  # one did not run


def test_reported_cells_run_the_tuning_choice_and_wait_for_the_tuning(tmp_path: Path) -> None:
    # Prepare
    preset = _preset(tmp_path)
    spaces = {m: METHODS[m].spaces for m in preset.methods}

    # Execute
    tuning = tuning_cells(preset, [], spaces)
    reported = {c.method: c.overrides for c in cells(
        preset, [], spaces, {"fedavg": ("federation.lr=0.05", "method.finetune_scope=head")})}

    # Assert: a method with a scope is tuned at both scopes; the choice replaces the method's
    # own value of what the grid varies; without finished tuning cells there is no choice
    assert all(("federation.finetune_both=true" in c.overrides) == (c.method == "fedavg")
               for c in tuning)
    assert "federation.lr=0.2" not in reported["fedavg"]
    assert reported["fedavg"][-2:] == ("federation.lr=0.05", "method.finetune_scope=head")
    with pytest.raises(BenchError, match="--tune"):
        chosen_overrides(preset, [], spaces)
    table = tuning_table(preset, {"fedavg": scored("fedavg", 0, ["federation.lr=0.1"], None)},
                         0.5)
    assert table.count("not run") == 2


def test_a_val_half_preset_scores_every_method_on_the_same_half(tmp_path: Path) -> None:
    # Prepare: the second-round rule; Local never selects on validation data
    from dataclasses import replace

    from pfednas.app.client_app import client_env, evaluation_split
    from pfednas.config import compose, settings_from_cfg
    from pfednas.data import load_client_data, tuning_splits
    from pfednas.run.inprocess import InProcessGrid

    preset = replace(_preset(tmp_path), tuning_split="val_half")
    spaces = {m: METHODS[m].spaces for m in preset.methods}
    settings = {split: settings_from_cfg(compose(["method=local", f"eval_split={split}"]))
                for split in ("val", "val_half")}
    context = next(iter(InProcessGrid([], 20).contexts.values()))

    # Execute
    tuning = tuning_cells(preset, [], spaces)
    scored_on = client_env(context, settings["val_half"]).data.test
    half = tuning_splits(load_client_data(settings["val_half"].data, 0), 0, 0).test

    # Assert
    assert all("eval_split=val_half" in c.overrides for c in tuning)
    assert evaluation_split(settings["val"]) == "val"  # the first round's rule, kept
    assert evaluation_split(settings["val_half"]) == "val-half"
    assert (scored_on.y == half.y).all() and (scored_on.x == half.x).all()
    with pytest.raises(BenchError, match="tuning_split must be val|val_half"):
        BenchPreset.from_config({"name": "t", "dataset": "digits", "search_space": "mobilenetv3",
                                 "methods": ["local"], "alphas": [0.5], "seeds": [0],
                                 "tuning_split": "test"}, METHODS)
