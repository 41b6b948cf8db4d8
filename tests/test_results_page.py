"""docs/BENCHMARKS.md's tables are rendered from the committed bench cells (`pfednas report
--doc`); rendering a bench's cells: tests/test_report.py (on the smoke bench)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pfednas.bench.pages import render_doc
from pfednas.config import conf_dir
from pfednas.report import levers, page, pairs, table, targets
from pfednas.report.bench_results import BenchResults, Key, load_bench, read_preset
from pfednas.report.cli import method_order
from pfednas.report.collect import ReportError
from pfednas.report.document import render_document
from pfednas.report.paired import (
    TIE_MARGIN,
    detectable_difference,
    holds_after_bonferroni,
    paired_difference,
    signed,
)
from pfednas.report.shift import render_shift
from tests.conftest import REPO

DOC = REPO / "docs" / "BENCHMARKS.md"
TUNING = REPO / "docs" / "TUNING.md"
BENCH_ROOT = REPO / "docs" / "bench"
PUBLISHED = ("fashion_mnist", "spider_fashion_mnist")
T_975_DOF2 = 4.302652729911275  # Student's t, 97.5 % quantile, 2 degrees of freedom
T_80_DOF2 = 1.0606601717798214  # Student's t, 80 % quantile, 2 degrees of freedom


@pytest.mark.slow
def test_the_committed_results_pages_are_what_the_committed_cells_render() -> None:
    current, rendered = render_doc(DOC, BENCH_ROOT)
    tuning, tuning_rendered = render_doc(TUNING, BENCH_ROOT)
    readme, readme_rendered = render_doc(REPO / "README.md", BENCH_ROOT)

    assert rendered == current, "docs/BENCHMARKS.md is stale: run `pfednas report --doc " \
                                "docs/BENCHMARKS.md`"
    assert tuning_rendered == tuning, "docs/TUNING.md is stale: run `pfednas report --doc " \
                                      "docs/TUNING.md`"
    assert readme_rendered == readme, "README.md's rendered block is stale: run `pfednas " \
                                      "report --doc README.md --bench-root docs/bench`"
    assert "<!-- verdict:digits -->" in readme
    for name in PUBLISHED:
        assert f"<!-- tuning:{name} -->" in tuning


def test_a_tuning_block_lists_every_configuration_and_scope_not_yet_run(tmp_path: Path) -> None:
    # Prepare: a page with the fair preset's tuning block and no cells at all
    doc = tmp_path / "page.md"
    doc.write_text("# Page\n\n<!-- tuning:fashion_mnist -->\n<!-- /tuning -->\n")

    # Execute
    _, rendered = render_doc(doc, tmp_path)

    # Assert: 7 methods x 4 configurations, both fine-tuning scopes for the 5 that have one
    rows = [line for line in rendered.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) == 7 * 4
    assert sum(row.endswith("| not run / not run |  |") for row in rows) == 5 * 4
    assert sum(row.endswith("| not run |  |") for row in rows) == 2 * 4


@pytest.mark.parametrize(("text", "message"), [
    ("<!-- table:spider_fashion_mnist -->\nno end\n", "has no <!-- /table --> after it"),
    ("<!-- plots:spider_fashion_mnist -->\n<!-- /plots -->\n", "unknown block kind"),
])
def test_a_malformed_block_is_an_error(text: str, message: str) -> None:
    with pytest.raises(ReportError, match=message):
        render_document(text, lambda name: pytest.fail("nothing is rendered"))


def test_a_preset_cell_that_has_not_run_is_named(tmp_path: Path) -> None:
    order = method_order()
    preset = read_preset(conf_dir() / "bench" / "spider_fashion_mnist.yaml", order)

    with pytest.raises(ReportError, match=r"spider/alpha=0.2/seed=0: not finished with the "
                                          r"configuration of now \(18 of the 18 cells"):
        load_bench(preset, tmp_path, order)


def test_a_bench_still_running_renders_its_finished_methods_and_names_the_others(
        tmp_path: Path) -> None:
    # Prepare: the committed digits cells, one of PerFedRLNAS's three not finished
    order = method_order()
    preset = read_preset(conf_dir() / "bench" / "digits.yaml", order)
    shutil.copytree(BENCH_ROOT / "digits", tmp_path / "digits")
    (tmp_path / "digits" / "perfedrlnas" / "alpha=0.5" / "seed=1" / "summary.json").unlink()

    # Execute
    results = load_bench(preset, tmp_path / "digits", order)
    table, verdict = page.render_table(results), page.render_verdict(results)

    # Assert: FedAvg+FT's rows only, and both blocks say what is missing
    assert results.unfinished == (("perfedrlnas", 2, 3),)
    assert {page.label_of(g) for g in results.groups} == {"fedavg"}
    assert "PerFedRLNAS" not in table.split("Not in these figures yet")[0]
    assert "| FedAvg+FT | 0.5 |" in table
    note = "Not in these figures yet, their cells not all run: PerFedRLNAS (2 of 3 cells)"
    assert note in table and note in verdict
    assert verdict.startswith("No method to compare.")


@pytest.mark.slow
def test_a_bench_running_its_alphas_in_turn_renders_the_seeds_every_method_has_finished(
        tmp_path: Path) -> None:
    # Prepare: the committed Fashion-MNIST cells (7 methods, α 0.1 and 0.3, seeds 0-4), seed 4
    # of every method not finished at α 0.3: no method has all its cells, α 0.1 has, and
    # α 0.3 has seeds 0-3 of every method
    order = method_order()
    preset = read_preset(conf_dir() / "bench" / "fashion_mnist.yaml", order)
    shutil.copytree(BENCH_ROOT / "fashion_mnist", tmp_path / "fm",
                    ignore=shutil.ignore_patterns("tuning", "diagnostics"))

    def unfinish(method: str, alpha: float, seed: int) -> None:
        (tmp_path / "fm" / method / f"alpha={alpha:g}" / f"seed={seed}" / "summary.json").unlink()

    # a seed finished by some methods only (the bench runs a seed's methods in turn): every
    # method still shown, on the seeds all of them have finished
    for method in preset.methods[3:]:
        unfinish(method, 0.3, 4)
    results = load_bench(preset, tmp_path / "fm", order)
    assert results.unfinished == ()
    assert results.pending_alphas == ((0.3, 31, 35, (0, 1, 2, 3)),)
    assert {page.label_of(g) for g in results.groups} >= set(preset.methods)
    for method in preset.methods[:3]:
        unfinish(method, 0.3, 4)
    whole = load_bench(preset, BENCH_ROOT / "fashion_mnist", order)

    # Execute
    results = load_bench(preset, tmp_path / "fm", order)
    table = page.render_table(results)

    # Assert: every method at α 0.1 as the whole bench renders it, at α 0.3 on seeds 0-3,
    # and what is interim named
    assert results.unfinished == ()
    assert results.pending_alphas == ((0.3, 28, 35, (0, 1, 2, 3)),)
    assert {k: v for k, v in whole.by_seed.items() if k[2] == 0.1} == \
        {k: v for k, v in results.by_seed.items() if k[2] == 0.1}
    assert all(set(v) == {0, 1, 2, 3} for k, v in results.by_seed.items() if k[2] == 0.3)
    assert table.startswith("Seeds 0, 1, 2, 3, 4 (α 0.3: 0, 1, 2, 3 so far);")
    assert ("Cells not all run yet, these figures are interim: α 0.3: 28 of 35 cells, shown "
            "on seeds 0, 1, 2, 3.") in table

    # Execute, then Assert: with seeds 1 and 2 of one method not finished either, α 0.3 has
    # two seeds of every method, fewer than an α is shown on before it has run
    unfinish("local", 0.3, 1)
    unfinish("local", 0.3, 2)
    results = load_bench(preset, tmp_path / "fm", order)
    assert results.pending_alphas == ((0.3, 26, 35, ()),)
    assert {k[2] for k in results.by_seed} == {0.1}
    assert "α 0.3: 26 of 35 cells, not shown." in page.render_table(results)

    # Execute, then Assert: one α 0.1 cell missing too leaves α 0.1 on four seeds
    unfinish("local", 0.1, 0)
    results = load_bench(preset, tmp_path / "fm", order)
    assert results.pending_alphas == ((0.1, 34, 35, (1, 2, 3, 4)), (0.3, 26, 35, ()))

    # Execute, then Assert: and nothing to render once no α has three seeds of every method
    for seed in (1, 2):
        unfinish("local", 0.1, seed)
    with pytest.raises(ReportError, match=r"not finished with the configuration of now"):
        load_bench(preset, tmp_path / "fm", order)


def test_paired_difference_is_the_mean_by_seed_with_its_t_interval() -> None:
    a = {0: 0.90, 1: 0.80, 2: 0.85, 7: 0.5}
    b = {0: 0.88, 1: 0.79, 2: 0.86}

    d = paired_difference(a, b)

    assert d is not None and d.seeds == (0, 1, 2)
    half = T_975_DOF2 * 0.015275252316519466 / 3 ** 0.5  # std of (0.02, 0.01, −0.01), ddof 1
    assert d.mean == pytest.approx(0.02 / 3)
    assert (d.low, d.high) == (pytest.approx(0.02 / 3 - half), pytest.approx(0.02 / 3 + half))
    assert d.verdict == "inconclusive" and not d.meets_target
    assert d.detectable == pytest.approx((T_975_DOF2 + T_80_DOF2) * 0.015275252316519466
                                         / 3 ** 0.5)
    assert d.words == (f"inconclusive (3 seeds; detects ≥ {d.detectable:.4f}; 0.01 needs "
                       f"{d.seeds_for_margin} seeds)")
    # the seeds a difference of 0.01 needs: the first n whose detectable difference is <= it
    n = d.seeds_for_margin
    assert n is not None and n > 3
    assert detectable_difference(0.015275252316519466, n) <= TIE_MARGIN \
        < detectable_difference(0.015275252316519466, n - 1)
    assert paired_difference({0: 0.9, 1: 0.8}, {0: 0.5, 1: 0.45}).verdict == "wins"  # type: ignore[union-attr]
    assert paired_difference({0: 0.5, 1: 0.45}, {0: 0.9, 1: 0.8}).verdict == "loses"  # type: ignore[union-attr]
    assert paired_difference({0: 0.9}, {0: 0.8}) is None


def test_a_tie_needs_the_whole_interval_within_the_margin() -> None:
    # Prepare: differences of 0.002 ± 0.001 (a tie) and of 0.002 ± 0.01 (inconclusive)
    narrow = paired_difference({0: 0.501, 1: 0.502, 2: 0.503}, {0: 0.5, 1: 0.5, 2: 0.5})
    wide = paired_difference({0: 0.492, 1: 0.502, 2: 0.512}, {0: 0.5, 1: 0.5, 2: 0.5})

    # Assert
    assert narrow is not None and wide is not None
    assert narrow.high < TIE_MARGIN and narrow.verdict == "ties" and narrow.meets_target
    assert wide.high > TIE_MARGIN and wide.verdict == "inconclusive"
    assert wide.summary == (f"inconclusive (+0.0020; 3 seeds, detects ≥ {wide.detectable:.4f}, "
                            f"0.01 needs {wide.seeds_for_margin} seeds)")


def test_a_win_holds_after_bonferroni_only_with_room_to_spare() -> None:
    # Prepare: a win whose 95 % interval starts just above 0, and a clear one
    a, b = {0: 0.53, 1: 0.54, 2: 0.55}, {0: 0.5, 1: 0.5, 2: 0.5}
    clear = {0: 0.70, 1: 0.71, 2: 0.72}

    # Assert
    d = paired_difference(a, b)
    assert d is not None and d.verdict == "wins"
    assert holds_after_bonferroni(a, b, 1)
    assert not holds_after_bonferroni(a, b, 6)
    assert holds_after_bonferroni(clear, b, 6)


def test_trained_macs_count_training_and_fine_tuning_by_stage() -> None:
    rounds = [{"train": [{"train_macs": 10.0}, {"train_macs": 5.0}], "evaluation": []},
              {"train": [{"client_id": 1}], "evaluation": [{"train_macs": 7.0}]}]

    assert table.trained_macs(rounds, ("train",)) == 15.0
    assert table.trained_macs(rounds, ("train", "evaluation")) == 22.0


def test_budget_used_is_the_mean_share_over_clients_that_have_a_budget() -> None:
    rows = [{"cost": 5.0, "budget": 10.0}, {"cost": 9.0, "budget": 10.0},
            {"cost": 3.0, "budget": None}]

    assert levers.budget_used(rows) == pytest.approx(0.7)
    assert levers.budget_used([{"cost": 3.0, "budget": None}]) is None


def test_budget_share_is_a_figure_only_of_models_chosen_against_the_budgets() -> None:
    # a NAS method (no method.arch) and fits_all read the budgets; arch=max never did
    assert table.chosen_within_budgets({"method": {"name": "perfedrlnas"}})
    assert table.chosen_within_budgets({"method": {"name": "fedavg", "arch": "fits_all"}})
    assert not table.chosen_within_budgets({"method": {"name": "fedavg", "arch": "max"}})


def test_the_levers_block_gives_the_method_then_each_lever_against_it() -> None:
    # Prepare: the committed levers cells (PerFedRLNAS and two variants, seed 100)
    order = method_order()
    preset = read_preset(conf_dir() / "bench" / "fashion_mnist_levers.yaml", order)
    results = load_bench(preset, BENCH_ROOT / "fashion_mnist_levers", order)

    # Execute
    rows = [line.split(" | ") for line in levers.render_levers(results).splitlines()[2:]]

    # Assert: the method first, then each variant's +FT minus the method's
    assert len(rows) == 1 + len(preset.variants)
    assert rows[0][0] == "| `perfedrlnas` at its tuning's choice" and rows[0][4] == "—"
    base = float(rows[0][2])
    for row in rows[1:]:  # (the figures are rounded to 4 places, the difference is not)
        assert float(row[4].replace("−", "-")) == pytest.approx(float(row[2]) - base, abs=1e-4)
    assert {row[0] for row in rows[1:]} == {
        "| " + ", ".join(f"`{o}`" for o in overrides) for _, overrides in preset.variants.values()}


def test_the_targets_block_marks_each_target_from_the_verdicts_figures() -> None:
    # Prepare: the committed digits cells (PerFedRLNAS against FedAvg+FT)
    order = method_order()
    preset = read_preset(conf_dir() / "bench" / "digits.yaml", order)
    results = load_bench(preset, BENCH_ROOT / "digits", order)
    by_method = {g.method: g for g in results.groups}
    ft, published = by_method["perfedrlnas+ft"], by_method["perfedrlnas"]
    best = page.best_of(results, ft)
    assert best is not None
    d = paired_difference(results.by_seed[page.key_of(ft)], results.by_seed[page.key_of(best)])
    assert d is not None

    # Execute
    (row,) = targets.render_targets(results).splitlines()[2:]
    cells = row.strip("| ").split(" | ")

    # Assert: one row for PerFedRLNAS; each target's figure and mark follow its threshold
    gap = ft.acc_mean - published.acc_mean
    traffic = page.traffic_ratio(ft, best)
    assert traffic is not None
    assert cells[:2] == ["PerFedRLNAS", "0.5"]
    assert cells[2] == ("✓ " if d.meets_target else "✗ ") + d.summary
    assert cells[3] == ("✓ " if gap <= targets.PUBLISHED_GAP else "✗ ") + f"{gap:.4f}"
    assert cells[4] == "✓ 0"
    # the training messages' bytes over the whole run, read from the rounds' training rows
    assert traffic == ft.bytes_train / best.bytes_train
    assert ft.bytes_train == pytest.approx(statistics.mean(
        table.training_bytes(results.runs[("perfedrlnas", 0.5, seed)].rounds)
        for seed in preset.seeds))
    assert 0 < ft.bytes_train <= ft.bytes_total
    assert cells[5] == ("✓ " if traffic <= targets.TRAFFIC_MAX else "✗ ") + f"{traffic:.3f}×"
    assert cells[6].startswith(("✓ ", "✗ "))


def test_a_cell_that_ran_another_configuration_is_not_rendered(tmp_path: Path) -> None:
    # Prepare: the committed digits cells (tuning included); one PerFedRLNAS cell's saved
    # configuration differs from what the bench composes now (another learning rate)
    shutil.copytree(BENCH_ROOT / "digits", tmp_path / "digits")
    saved = tmp_path / "digits" / "perfedrlnas" / "alpha=0.5" / "seed=1" / "resolved_config.yaml"
    cfg = OmegaConf.load(saved)
    cfg.federation.lr = float(cfg.federation.lr) / 2
    OmegaConf.save(cfg, saved)
    doc = tmp_path / "page.md"
    doc.write_text("<!-- table:digits -->\n<!-- /table -->\n")

    # Execute
    _, rendered = render_doc(doc, tmp_path)

    # Assert: PerFedRLNAS is named as not finished, FedAvg+FT alone is rendered
    assert "PerFedRLNAS (2 of 3 cells)" in rendered
    assert "| FedAvg+FT | 0.5 |" in rendered and "| PerFedRLNAS" not in rendered


def test_a_figure_without_fine_tuning_is_reported_only_for_a_method_published_without_it(
        ) -> None:
    # Prepare: the committed Fashion-MNIST cells, where every method that fine-tunes also
    # records its figure without fine-tuning
    order = method_order()
    preset = read_preset(conf_dir() / "bench" / "fashion_mnist.yaml", order)
    results = load_bench(preset, BENCH_ROOT / "fashion_mnist", order)
    recorded = {g.method for g in results.groups}
    assert {"perfedrlnas", "hapfnas", "fednas", "fedavg"} <= recorded

    # Execute
    shown = {g.method for g in page.shown_rows(results, preset.methods)}

    # Assert: PerFedRLNAS and HAPFNAS both ways; FedNAS and the baselines fine-tuned only
    assert {"perfedrlnas", "perfedrlnas+ft", "hapfnas", "hapfnas+ft"} <= shown
    assert {"fednas+ft", "fedavg+ft"} <= shown
    assert not {"fednas", "fedavg", "fedbabu", "fedrep"} & shown


def test_the_pairs_block_gives_each_method_against_every_baseline_paired_by_seed() -> None:
    # Prepare: the committed cross-silo cells (SPIDER against Ditto and FedAvg+FT) and each
    # seed's accuracy read straight from the cells' summaries
    order = method_order()
    preset = read_preset(conf_dir() / "bench" / "spider_fashion_mnist.yaml", order)
    cells = BENCH_ROOT / "spider_fashion_mnist"
    results = load_bench(preset, cells, order)

    def accuracy(method: str, seed: int) -> float:
        summary = cells / method / "alpha=0.2" / f"seed={seed}" / "summary.json"
        return float(json.loads(summary.read_text())["personalized_acc_mean"])

    def published(method: str, seed: int) -> float:
        summary = cells / method / "alpha=0.2" / f"seed={seed}" / "summary.json"
        return float(json.loads(summary.read_text())["personalized_acc_no_ft_mean"])

    by_hand = {"ditto": [accuracy("spider", s) - published("ditto", s) for s in preset.seeds],
               "ditto+ft": [accuracy("spider", s) - accuracy("ditto", s) for s in preset.seeds],
               "fedavg+ft": [accuracy("spider", s) - accuracy("fedavg", s)
                             for s in preset.seeds]}

    # Execute
    header, _, *lines = pairs.render_pairs(results).splitlines()
    rows = [line for line in lines if line.startswith("| ")]

    # Assert: a row per SPIDER figure, a column per baseline figure; SPIDER+FT's differences
    # are the means by seed
    assert header == ("| method | α | Δ against Ditto (as published) | Δ against Ditto+FT | "
                      "Δ against FedAvg+FT |")
    assert [r.split(" | ")[0] for r in rows] == ["| SPIDER (as published)", "| SPIDER+FT"]
    cells_of_row = rows[1].strip("| ").split(" | ")
    assert cells_of_row[1] == "0.2"
    for cell, baseline in zip(cells_of_row[2:], ("ditto", "ditto+ft", "fedavg+ft"),
                              strict=True):
        mean = sum(by_hand[baseline]) / len(preset.seeds)
        assert cell.startswith(signed(mean) + " [")
        assert cell.split("] ")[1].split(" ")[0] in ("ties", "wins", "loses", "inconclusive")
    # six uncorrected comparisons; only a win that survives Bonferroni over them is marked
    assert "uncorrected (6 at α 0.2)" in lines[-1] or "uncorrected (6 at α 0.2)" in lines[-2]
    ditto = [int(k) for k in preset.seeds]
    assert cells_of_row[2].endswith("†") == pairs.holds_after_bonferroni(
        {s: accuracy("spider", s) for s in ditto}, {s: published("ditto", s) for s in ditto}, 6)


def _fashion_and_shifted(change: Callable[[Key, Mapping[int, float]], dict[int, float]]
                         ) -> tuple[BenchResults, BenchResults]:
    """The committed Fashion-MNIST cells as the preset without a shift, and as the preset
    with it the same cells, each row's accuracies by seed changed by ``change`` (its rows
    named as the report names a shifted run's dataset)."""
    order = method_order()
    plain = load_bench(read_preset(conf_dir() / "bench" / "fashion_mnist.yaml", order),
                       BENCH_ROOT / "fashion_mnist", order)
    name = "fashion_mnist, rotation_groups=4"
    by_seed = {(name, *k[1:]): change(k, v) for k, v in plain.by_seed.items()}
    shifted = dataclasses.replace(
        plain, preset=dataclasses.replace(plain.preset, name="rotated", shifts="fashion_mnist"),
        by_seed=by_seed,
        groups=tuple(dataclasses.replace(g, dataset=name, acc_mean=statistics.mean(
            by_seed[(name, *page.key_of(g)[1:])].values())) for g in plain.groups))
    return plain, shifted


def test_the_shift_block_pairs_each_figure_with_and_without_the_shift_by_seed() -> None:
    # Prepare: the committed Fashion-MNIST cells as the preset without the shift, and as the
    # preset with it the same cells with PerFedRLNAS+FT's accuracy lowered by 0.02 on every
    # seed (a shift that costs it 0.02 and nothing else)
    plain, shifted = _fashion_and_shifted(
        lambda k, v: ({s: a - 0.02 for s, a in v.items()} if k[1:3] == ("perfedrlnas+ft", 0.3)
                      else dict(v)))

    # Execute
    header, _, *lines = render_shift(shifted, plain).splitlines()
    rows = {r.split(" | ")[0][2:] + " " + r.split(" | ")[1]: r.split(" | ")
            for r in lines if r.startswith("| ")}

    # Assert: every figure of both presets, each at Δ 0 but PerFedRLNAS+FT at α 0.3, whose
    # gap to the strongest baseline widens by the same 0.02; a baseline has no gap
    assert "`bench=fashion_mnist`" in header and "`bench=rotated`" in header
    assert len(rows) == len(page.shown_rows(plain, [m for m in plain.preset.methods]))
    for name, cells in rows.items():
        expected = "-0.0200" if name == "PerFedRLNAS+FT 0.3" else "0.0000"
        assert cells[4].replace("−", "-").startswith(expected), (name, cells[4])
    before, after = (float(x.replace("−", "-"))
                     for x in rows["PerFedRLNAS+FT 0.3"][5].strip(" |").split(" → "))
    assert after == pytest.approx(before - 0.02, abs=1e-4)
    assert rows["FedAvg+FT 0.3"][5].strip(" |") == "—"
    # the interaction: its shift minus FedAvg+FT's (0), paired by seed: −0.02 exactly for
    # PerFedRLNAS+FT, 0 for every other method that is not a baseline; none for a baseline
    assert rows["PerFedRLNAS+FT 0.3"][6].replace("−", "-").startswith("-0.0200 [-0.0200")
    assert rows["HAPFNAS+FT 0.3"][6].replace("−", "-").startswith("0.0000")
    assert rows["FedAvg+FT 0.3"][6].strip(" |") == "—"


def test_the_shift_block_compares_over_the_seeds_both_presets_ran() -> None:
    # Prepare: the committed Fashion-MNIST cells (seeds 0-4) as the preset without the
    # shift, and as the preset with it the same cells on seeds 0-2 only (a shift that changes
    # nothing, run on fewer seeds)
    plain, shifted = _fashion_and_shifted(lambda _, v: {s: a for s, a in v.items() if s < 3})
    assert len(plain.preset.seeds) > 3

    # Execute
    _, _, *lines = render_shift(shifted, plain).splitlines()
    rows = [r.split(" | ") for r in lines if r.startswith("| ")]

    # Assert: without and with read the same on every row (the same accuracies on the seeds
    # both ran), three seeds paired, and each NAS figure's gap to the strongest baseline
    # unchanged
    assert rows
    for cells in rows:
        assert cells[2] == cells[3], cells
        assert "(3 seeds)" in cells[4], cells
        gap = cells[5].strip(" |")
        if gap != "—":  # a baseline has none
            before, _, after = gap.partition(" → ")
            assert before == after, cells
    assert any(cells[5].strip(" |") != "—" for cells in rows)
