"""The results pages (``pfednas report --doc FILE.md [--check]``): a page's marked tables
rendered from the bench's cells that ran the configuration the bench would run now, each
method at its tuning's choice. The ``pfednas report`` command is served from here, so that
the report needs no bench (:mod:`pfednas.report.cli`) and the bench renders reports."""

from __future__ import annotations

import sys
from pathlib import Path

from pfednas.bench.cells import BenchError, BenchPreset, cells, compose_preset, stale_keys
from pfednas.bench.tuning import best, tuning_results, tuning_table
from pfednas.report import cli as report_cli
from pfednas.report import page
from pfednas.report.bench_results import load_bench, read_preset
from pfednas.report.cli import EXIT_STALE, method_order
from pfednas.report.collect import ReportError
from pfednas.report.document import render_document


def main(argv: list[str]) -> int:
    """``pfednas report``: :func:`pfednas.report.cli.main`, its ``--doc`` rendered here."""
    return report_cli.main(argv, refresh=refresh_doc)


def current_cells(name: str, folder: Path) -> set[Path]:
    """The reported cells of preset ``name`` below ``folder`` that finished with the
    configuration the bench would run now (each method at its tuning's choice): what a
    results page may render (resolved paths); none of a method whose tuning has not
    finished (a method just added to a preset: the page names it as still running)."""
    from pfednas.methods import METHODS

    try:
        preset = BenchPreset.from_config(compose_preset(name, [f"bench.out={folder}"]), METHODS)
        spaces = {m: METHODS[m].spaces for m in map(preset.base_of, preset.methods)}
        results = tuning_results(preset, [], spaces) if preset.tuning else {}
    except BenchError:
        return set()
    chosen = {m: choice.chosen_overrides for m, tried in results.items()
              if (choice := best(tried)) is not None}
    untuned = set(results) - set(chosen)
    return {cell.path.resolve() for cell in cells(preset, [], spaces, chosen)
            if preset.base_of(cell.method) not in untuned and stale_keys(cell) == []}


def render_doc(doc: Path, bench_root: Path) -> tuple[str, str]:
    """(the file's text, the text with its marked blocks rendered from the cells below
    ``bench_root``, each preset's in ``bench_root/<preset>``)."""
    from pfednas.config import conf_dir

    if not doc.is_file():
        raise ReportError(f"{doc}: no such file")
    order = method_order()
    loaded: dict[str, page.BenchResults] = {}

    def results_of(name: str) -> page.BenchResults:
        if name not in loaded:
            preset = read_preset(conf_dir() / "bench" / f"{name}.yaml", order)
            current = current_cells(name, bench_root / name)
            loaded[name] = load_bench(preset, bench_root / name, order,
                                           lambda d: d.resolve() in current)
        return loaded[name]

    def tuning_of(name: str) -> str:
        from pfednas.methods import METHODS

        try:
            preset = BenchPreset.from_config(
                compose_preset(name, [f"bench.out={bench_root / name}"]), METHODS)
        except BenchError as err:
            raise ReportError(str(err)) from err
        spaces = {m: METHODS[m].spaces for m in map(preset.base_of, preset.methods)}
        alpha = preset.alphas[0] if preset.tuning_alpha is None else preset.tuning_alpha
        return tuning_table(preset, tuning_results(preset, [], spaces), alpha)

    text = doc.read_text()
    return text, render_document(text, results_of, tuning_of)


def refresh_doc(doc: Path, bench_root: Path | None, *, check: bool) -> int:
    current, rendered = render_doc(doc, bench_root or doc.parent / "bench")
    if rendered == current:
        print(f"[pfednas report] {doc}: its tables are what the cells render")
        return 0
    if check:
        print(f"pfednas report: {doc}: its marked tables differ from what the cells render; "
              f"run `pfednas report --doc {doc}`", file=sys.stderr)
        return EXIT_STALE
    doc.write_text(rendered)
    print(f"[pfednas report] {doc}: tables rendered from the cells")
    return 0
