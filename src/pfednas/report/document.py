"""A results page whose tables are rendered from the bench cells, never typed by hand.

A Markdown file marks each generated block with an opening and a closing comment::

    <!-- table:fashion_mnist -->
    ...(rendered: the preset's methods, one row per figure and α)...
    <!-- /table -->
    <!-- variants:fashion_mnist -->
    ...(rendered: the preset's variants, what each changes, then their rows)...
    <!-- /variants -->
    <!-- tuning:fashion_mnist -->
    ...(rendered: the tuning grid, each configuration's validation score, the choice)...
    <!-- /tuning -->
    <!-- verdict:fashion_mnist -->
    ...(rendered: each NAS figure against the strongest baseline, paired by seed)...
    <!-- /verdict -->
    <!-- targets:fashion_mnist -->
    ...(rendered: each NAS method against the benchmark's targets, met or missed)...
    <!-- /targets -->
    <!-- pairs:spider_fashion_mnist -->
    ...(rendered: each NAS figure against every baseline, paired by seed)...
    <!-- /pairs -->
    <!-- levers:fashion_mnist_levers -->
    ...(rendered: a method and each variant turning one lever on, a compact row each)...
    <!-- /levers -->
    <!-- shift:fashion_mnist_rotated -->
    ...(rendered: each figure without and with the preset's input shift, paired by seed)...
    <!-- /shift -->
    <!-- devices:devices -->
    ...(rendered: one model, sliced and searched models and the controls of search, paired by
    seed and corrected; accuracy by device tier; the answer in one sentence)...
    <!-- /devices -->
    <!-- answer:devices -->
    ...(rendered: the devices block's answer sentence of each α, for the README)...
    <!-- /answer -->

A block without a preset, ``<!-- options -->`` ... ``<!-- /options -->``, is the README's table
of every method's options and defaults (:func:`pfednas.options.options_table`).

The name after the colon is a bench preset (``conf/bench/<name>.yaml``); its cells are read
from ``<bench root>/<name>/<method>/alpha=<α>/seed=<s>/``, every (method, α, seed) of the
preset, and aggregated exactly as ``pfednas report`` aggregates them (the numbers of the
preset's ``report/table.csv``). A bench still running renders the methods whose cells have
all finished and names the others with how many of their cells have. ``pfednas report --doc
FILE`` rewrites the blocks; ``--check`` says whether the file is what the cells render.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from pfednas.options import options_table
from pfednas.report.bench_results import BenchResults
from pfednas.report.collect import ReportError
from pfednas.report.devices import render_answer, render_devices
from pfednas.report.levers import render_levers
from pfednas.report.page import render_table, render_variants, render_verdict
from pfednas.report.pairs import render_pairs
from pfednas.report.shift import render_shift
from pfednas.report.targets import render_targets

BLOCK = re.compile(r"<!-- (?P<kind>[a-z]+):(?P<name>[a-z0-9_]+) -->\n(?P<body>.*?)"
                   r"<!-- /(?P=kind) -->", re.S)
OPENING = re.compile(r"<!-- (?P<kind>[a-z]+):(?P<name>[a-z0-9_]+) -->")
RENDERERS: Mapping[str, Callable[[BenchResults], str]] = {
    "table": render_table, "variants": render_variants, "verdict": render_verdict,
    "targets": render_targets, "levers": render_levers, "pairs": render_pairs,
    "devices": render_devices, "answer": render_answer}
KINDS = (*RENDERERS, "tuning", "shift")
OPTIONS_BLOCK = re.compile(r"<!-- options -->\n.*?<!-- /options -->", re.S)


def render_document(text: str, results_of: Callable[[str], BenchResults],
                    tuning_of: Callable[[str], str] | None = None) -> str:
    """``text`` with every marked block's body rendered from its preset's results (a
    ``tuning`` block: ``tuning_of(preset)``, the tuning cells' table; the ``options`` block:
    the methods' options)."""
    openings = [(m.group("kind"), m.group("name")) for m in OPENING.finditer(text)]
    blocks = [(m.group("kind"), m.group("name")) for m in BLOCK.finditer(text)]
    if openings != blocks:
        unclosed = next(o for o in openings if o not in blocks)
        raise ReportError(f"<!-- {unclosed[0]}:{unclosed[1]} --> has no <!-- /{unclosed[0]} -->"
                          " after it")
    unknown = sorted({kind for kind, _ in blocks} - set(KINDS))
    if unknown:
        raise ReportError(f"unknown block kind(s) {', '.join(unknown)}; known: {', '.join(KINDS)}")

    def fill(match: re.Match[str]) -> str:
        kind, name = match.group("kind"), match.group("name")
        if kind == "tuning":
            if tuning_of is None:
                raise ReportError(f"<!-- tuning:{name} -->: no tuning results to render")
            body = tuning_of(name)
        elif kind == "shift":
            shifted = results_of(name)
            if shifted.preset.shifts is None:
                raise ReportError(f"<!-- shift:{name} -->: bench={name} names no preset it "
                                  f"shifts (`shifts:` in its file)")
            body = render_shift(shifted, results_of(shifted.preset.shifts))
        else:
            body = RENDERERS[kind](results_of(name))
        return f"<!-- {kind}:{name} -->\n{body}<!-- /{kind} -->"

    options = f"<!-- options -->\n{options_table()}\n<!-- /options -->"
    return OPTIONS_BLOCK.sub(lambda _: options, BLOCK.sub(fill, text))
