"""Find finished runs under the given folders and read what each wrote.

A run folder is any folder holding a ``summary.json`` (a single ``pfednas``
run, a cell of ``pfednas bench``, a job of a Hydra ``-m`` sweep). Its config is
``resolved_config.yaml`` (written by the ServerApp) or else Hydra's
``.hydra/config.yaml``. Its per-round records are ``metrics.jsonl``, or
``metrics.jsonl.gz`` where ``pfednas bench`` compressed a finished cell's. A bench
cell that failed leaves ``FAILED.json`` instead.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
METRICS_GZ = METRICS + ".gz"  # a finished bench cell's metrics.jsonl, compressed by the bench
FAILED = "FAILED.json"
CELL_RECORD = "cell.json"  # written by `pfednas bench` beside a cell: commit, load while it ran
CONFIG_FILES = ("resolved_config.yaml", ".hydra/config.yaml")


class ReportError(ValueError):
    """No runs to report, or a run folder that cannot be read; the message says which."""


@dataclass(frozen=True)
class Run:
    """One finished run: its summary, its per-round records and its composed config."""

    path: Path
    summary: dict[str, Any]
    rounds: list[dict[str, Any]]
    config: dict[str, Any]
    cell: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        """The run's name in the report: its ``label`` (a bench variant's), else its method."""
        return str(self.config.get("label") or self.summary["method"])

    @property
    def dataset(self) -> str:
        """The dataset's name, and how the run dealt it where that is not the Dirichlet label
        skew alone (α has its column): ``fashion_mnist, rotation_groups=4``, ``digits, iid``.
        Runs dealt otherwise are never one row."""
        dealt = dealt_text(self.config.get("dataset") or {})
        return str(self.summary["dataset"]) + (f", {dealt}" if dealt else "")

    @property
    def alpha(self) -> float:
        return float(self.config["dataset"]["alpha"])

    @property
    def seed(self) -> int:
        return int(self.summary.get("seed", self.config.get("seed", 0)))

    @property
    def space(self) -> str:
        return str(self.config["search_space"]["name"])

    @property
    def space_config(self) -> dict[str, Any]:
        """The search space's values as the run built it (its per-dataset choices applied)."""
        from pfednas.config import space_for_dataset

        dataset = str((self.config.get("dataset") or {}).get("name", self.dataset))
        return space_for_dataset(dict(self.config["search_space"]), self._sizing(dataset))

    def _sizing(self, dataset: str) -> str | tuple[str, ...]:
        """Which ``per_dataset`` entry sized the run's space: for ``own`` data, read from its
        files where they are here (else ``own`` alone)."""
        from pfednas.data import OWN, DataError, DataSpec
        from pfednas.data.spec import sizing_names

        if dataset != OWN:
            return dataset
        try:
            return sizing_names(DataSpec.from_config(
                self.config["dataset"], seed=self.seed,
                num_clients=int(self.config["federation"]["num_clients"])))
        except (DataError, OSError, ValueError, KeyError):
            return dataset

    def evaluation(self) -> list[dict[str, Any]]:
        """The final personalized evaluation rows (those ``summary.json`` was computed from)."""
        evaluated = [r for r in self.rounds if r.get("evaluation")]
        return list(evaluated[-1]["evaluation"]) if evaluated else []


def dealt_text(dataset: Mapping[str, Any]) -> str:
    """How a run's ``dataset`` config dealt the data beyond Dirichlet label skew: its
    partitioner with the parameters it reads (not for ``dirichlet``, whose α the report
    shows as a column), then each feature-skew option off its default; ``""`` for the
    Dirichlet partition without feature skew (every run before partitioners had a name).
    The words of :func:`pfednas.settings.partitioner_text`, from a saved config."""
    from pfednas.data.partitioners import partition_words
    from pfednas.data.shift import FeatureSkew

    partitioner = str(dataset.get("partitioner", "dirichlet"))
    parts = [partition_words(partitioner, dataset)] if partitioner != "dirichlet" else []
    skew = FeatureSkew.words(dataset.get("feature_skew") or {})
    return ", ".join([*parts, *([skew] if skew else [])])


def file_safe(text: str) -> str:
    """``text`` as one file name's part: every run of other characters than letters,
    digits and ``_.=+-`` becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", text)


def find_run_dirs(paths: list[Path]) -> list[Path]:
    """Every folder at or below ``paths`` that holds a ``summary.json``, sorted, once each."""
    found: set[Path] = set()
    for path in paths:
        if not path.exists():
            raise ReportError(f"{path}: no such file or directory")
        if path.is_file():
            if path.name != SUMMARY:
                raise ReportError(f"{path}: not a run folder nor its {SUMMARY}")
            found.add(path.resolve().parent)
            continue
        found.update(p.resolve().parent for p in path.rglob(SUMMARY))
    if not found:
        raise ReportError(f"no finished runs ({SUMMARY}) under {', '.join(map(str, paths))}")
    return sorted(found)


def split_tuning_runs(run_dirs: list[Path]) -> tuple[list[Path], list[Path]]:
    """(reported runs, tuning runs): a tuning run (``pfednas bench --tune``) scored its
    clients on validation splits (``eval_split: val`` in its summary), so it never shares a
    table with test-split runs; a report of tuning runs alone shows them."""
    tuning = [p for p in run_dirs if _eval_split(p) in ("val", "val_half")]
    reported = [p for p in run_dirs if p not in tuning]
    return (reported, tuning) if reported else (tuning, [])


def _eval_split(path: Path) -> Any:
    try:
        summary = json.loads((path / SUMMARY).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportError(f"{path}: cannot read the run's results: {err}") from err
    return summary.get("eval_split") if isinstance(summary, dict) else None


def results_problem(summary: Any, rounds: list[Any]) -> str | None:
    """What makes ``summary`` and ``rounds`` not a run's results (None: they are): the
    fields a report reads, with their types and ranges."""
    if not isinstance(summary, dict):
        return "summary.json is not an object"
    for key in ("method", "dataset"):
        if not isinstance(summary.get(key), str):
            return f"summary.json has no {key}"
    rows = summary.get("per_client")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        return "summary.json's per_client is not a list of client rows"
    for row in rows:
        accuracy = row.get("accuracy")
        if not isinstance(row.get("client_id"), int) or not isinstance(accuracy, int | float) \
                or not 0 <= accuracy <= 1:
            return f"summary.json has a client row without client_id and accuracy: {row}"[:200]
    for record in rounds:
        if not isinstance(record, dict) or not isinstance(record.get("evaluation", []), list) \
                or not isinstance(record.get("train", []), list):
            return "metrics.jsonl has a line that is not a round record"
    return None


def find_failed(paths: list[Path]) -> list[dict[str, Any]]:
    """The ``FAILED.json`` records of bench cells below ``paths`` that have no summary."""
    failed = []
    for path in paths:
        if not path.is_dir():
            continue
        for marker in sorted(path.rglob(FAILED)):
            if not (marker.parent / SUMMARY).is_file():
                failed.append({**json.loads(marker.read_text()), "path": str(marker.parent)})
    return failed


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The run's per-round records: its ``metrics.jsonl``, else its ``metrics.jsonl.gz``
    (a plain file is the newer: a run writes it, the bench compresses it once the cell has
    finished); none when it has neither."""
    plain, packed = path / METRICS, path / METRICS_GZ
    if plain.is_file():
        text = plain.read_text()
    elif packed.is_file():
        text = gzip.decompress(packed.read_bytes()).decode()
    else:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def load_run(path: Path) -> Run:
    try:
        summary = json.loads((path / SUMMARY).read_text())
        rounds = read_metrics(path)
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportError(f"{path}: cannot read the run's results: {err}") from err
    problem = results_problem(summary, rounds)
    if problem is not None:
        raise ReportError(f"{path}: not a pfednas run's results ({problem})")
    for name in CONFIG_FILES:
        if (path / name).is_file():
            config = OmegaConf.to_container(OmegaConf.load(path / name), resolve=False)
            break
    else:
        raise ReportError(f"{path}: no {' or '.join(CONFIG_FILES)} beside {SUMMARY}")
    if not isinstance(config, dict):
        raise ReportError(f"{path}: the run's config is not a mapping")
    try:
        record = path / CELL_RECORD
        cell = json.loads(record.read_text()) if record.is_file() else {}
    except (OSError, json.JSONDecodeError):
        cell = {}  # the record only adds the load column; the results stand without it
    return Run(path=path, summary=summary, rounds=rounds,
               config={str(k): v for k, v in config.items()},
               cell=cell if isinstance(cell, dict) else {})
