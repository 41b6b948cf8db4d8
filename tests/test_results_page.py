"""docs/BENCHMARKS.md's tables are rendered from the committed bench cells (`pfednas report
--doc`), and the committed reports are what those cells aggregate to."""

from __future__ import annotations

from pathlib import Path

import pytest

from pfednas.config import conf_dir
from pfednas.report import page
from pfednas.report.cli import main as report_main
from pfednas.report.cli import method_order, render_doc
from pfednas.report.collect import ReportError
from pfednas.report.paired import paired_difference
from pfednas.report.table import to_csv
from tests.conftest import REPO

DOC = REPO / "docs" / "BENCHMARKS.md"
BENCH_ROOT = REPO / "docs" / "bench"
PUBLISHED = ("fashion_mnist", "spider_fashion_mnist")
T_975_DOF2 = 4.302652729911275  # Student's t, 97.5 % quantile, 2 degrees of freedom


@pytest.fixture(scope="module")
def published() -> dict[str, page.BenchResults]:
    order = method_order()
    return {name: page.load_bench(page.read_preset(conf_dir() / "bench" / f"{name}.yaml", order),
                                  BENCH_ROOT / name, order) for name in PUBLISHED}


def test_the_committed_results_page_is_what_the_committed_cells_render() -> None:
    current, rendered = render_doc(DOC, BENCH_ROOT)

    assert rendered == current, "docs/BENCHMARKS.md is stale: run `pfednas report --doc " \
                                "docs/BENCHMARKS.md`"
    for name in PUBLISHED:
        assert f"<!-- table:{name} -->" in current


@pytest.mark.parametrize("name", PUBLISHED)
def test_each_committed_report_table_is_what_its_cells_aggregate(
        published: dict[str, page.BenchResults], name: str) -> None:
    committed = (BENCH_ROOT / name / "report" / "table.csv").read_text()

    assert to_csv(published[name].groups) == committed


def test_a_hand_edited_table_fails_the_check_and_the_doc_command_renders_it_back(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare: the page with one rendered number changed by hand
    original = DOC.read_text()
    block = original.index("<!-- table:fashion_mnist -->")
    number = original.index("| FedRep | 0.1 | **", block) + len("| FedRep | 0.1 | **")
    edited = original[:number] + "0.9999" + original[number + 6:]
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text(edited)
    args = ["--doc", str(doc), "--bench-root", str(BENCH_ROOT)]

    # Execute
    checked = report_main([*args, "--check"])
    after_check = doc.read_text()
    refreshed = report_main(args)

    # Assert: the check fails and writes nothing; the command puts the cells' number back
    assert checked == 1 and after_check == edited
    assert "differ from what the cells render" in capsys.readouterr().err
    assert refreshed == 0 and doc.read_text() == original


def _results(published: dict[str, page.BenchResults]) -> page.BenchResults:
    return published["spider_fashion_mnist"]


def test_render_document_replaces_only_the_marked_blocks(
        published: dict[str, page.BenchResults]) -> None:
    head = "# Page\n\nprose 0.1234 stays\n\n<!-- table:spider_fashion_mnist -->\n"
    text = head + "| stale | row |\n<!-- /table -->\n\nmore prose\n"

    rendered = page.render_document(text, lambda name: _results(published))

    before, after = rendered.split("<!-- /table -->")
    assert before.startswith(head)
    assert "| stale | row |" not in rendered and "| SPIDER | 0.2 | 0.7307 ± 0.0703 |" in before
    assert after == "\n\nmore prose\n"


@pytest.mark.parametrize(("text", "message"), [
    ("<!-- table:spider_fashion_mnist -->\nno end\n", "has no <!-- /table --> after it"),
    ("<!-- plots:spider_fashion_mnist -->\n<!-- /plots -->\n", "unknown block kind"),
])
def test_a_malformed_block_is_an_error(published: dict[str, page.BenchResults], text: str,
                                       message: str) -> None:
    with pytest.raises(ReportError, match=message):
        page.render_document(text, lambda name: _results(published))


def test_a_preset_cell_that_has_not_run_is_named(tmp_path: Path) -> None:
    order = method_order()
    preset = page.read_preset(conf_dir() / "bench" / "spider_fashion_mnist.yaml", order)

    with pytest.raises(ReportError, match=r"spider/alpha=0.2/seed=0: no summary.json \(24 of "
                                          r"the 24 cells"):
        page.load_bench(preset, tmp_path, order)


def test_paired_difference_is_the_mean_by_seed_with_its_t_interval() -> None:
    a = {0: 0.90, 1: 0.80, 2: 0.85, 7: 0.5}
    b = {0: 0.88, 1: 0.79, 2: 0.86}

    d = paired_difference(a, b)

    assert d is not None and d.seeds == (0, 1, 2)
    half = T_975_DOF2 * 0.015275252316519466 / 3 ** 0.5  # std of (0.02, 0.01, −0.01), ddof 1
    assert d.mean == pytest.approx(0.02 / 3)
    assert (d.low, d.high) == (pytest.approx(0.02 / 3 - half), pytest.approx(0.02 / 3 + half))
    assert d.verdict == "ties"
    assert paired_difference({0: 0.9, 1: 0.8}, {0: 0.5, 1: 0.45}).verdict == "wins"  # type: ignore[union-attr]
    assert paired_difference({0: 0.5, 1: 0.45}, {0: 0.9, 1: 0.8}).verdict == "loses"  # type: ignore[union-attr]
    assert paired_difference({0: 0.9}, {0: 0.8}) is None


def test_the_page_names_rows_as_published_and_ft_and_the_best_baseline(
        published: dict[str, page.BenchResults]) -> None:
    fashion = published["fashion_mnist"]

    body = page.render_table(fashion)
    variants = page.render_variants(fashion)

    assert "| PerFedRLNAS (as published) | 0.1 |" in body and "| PerFedRLNAS+FT | 0.1 |" in body
    assert "| FedRep | 0.1 | **" in body and "best baseline |" in body
    assert "- `fedavg_fth`: FedAvg with `method.finetune_scope=head`" in variants
    assert "| FedAvg+FT · `fedavg_fth` | 0.3 | **" in variants
    assert "Best baseline (variants included): α 0.1 FedRep; α 0.3 FedAvg+FT · `fedavg_fth`." \
        in body
