"""Benchmark reports: one table and a few plots from finished ``pfednas`` runs.

``collect`` finds and reads run folders (``summary.json``, ``metrics.jsonl``,
the resolved config); ``table`` and ``archs`` are pure functions of what was
read; ``plots`` returns matplotlib figures; ``cli`` (``pfednas report``) is the
only module that writes files.
"""

from pfednas.report.collect import ReportError, Run, find_run_dirs, load_run
from pfednas.report.table import GroupRow, RunRow, aggregate, run_row

__all__ = ["GroupRow", "ReportError", "Run", "RunRow", "aggregate", "find_run_dirs", "load_run",
           "run_row"]
