"""Find finished runs under the given folders and read what each wrote.

A run folder is any folder holding a ``summary.json`` (a single ``pfednas``
run, a cell of ``pfednas bench``, a job of a Hydra ``-m`` sweep). Its config is
``resolved_config.yaml`` (written by the ServerApp) or else Hydra's
``.hydra/config.yaml``. Its per-round records are ``metrics.jsonl``, or
``metrics.jsonl.gz`` where ``pfednas bench`` compressed a finished cell's. A bench
cell that failed leaves ``FAILED.json`` instead.

Runs pool (one table row, one curve, one TensorBoard folder) only where they differ in
nothing but their seed: the dataset as dealt, the method, α, the search space, the
federation's size, how they ran (:attr:`Run.ran_as`) and every other value of their configs
(:func:`settle`).
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pfednas.config import RUN_KEYS_NOT_COMPARED, saved_config_values

SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
METRICS_GZ = METRICS + ".gz"  # a finished bench cell's metrics.jsonl, compressed by the bench
FAILED = "FAILED.json"
CELL_RECORD = "cell.json"  # written by `pfednas bench` beside a cell: commit, load while it ran
CONFIG_FILES = ("resolved_config.yaml", ".hydra/config.yaml")
# summary.json's record of how the run ran (pfednas.app.results.how_it_runs); runs from before
# it was recorded ran deployed where their clients stated or measured their own profiles
RAN_AS, SIMULATED, DEPLOYED = "ran_as", "simulated", "deployed"
CLAIMED_SOURCES = ("stated", "measured")
# config keys that never make runs unlike: the seed (pooled), the row's name (``label``: the
# method), where and how the run wrote its files; and those that other parts of the key show
NOT_A_SETTING = (*RUN_KEYS_NOT_COMPARED, "seed", "label", "checkpoint_every", "method.name",
                 "search_space.name", "dataset.name", "dataset.alpha",
                 "federation.num_clients", "federation.clients_per_round",
                 "federation.num_rounds", "federation.local_epochs")
ABSENT = "(absent)"  # a key a run's config does not hold (an older run's)


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
    # the run's values of the config keys that other runs of the report set otherwise, and
    # those of them that tell it from runs of its row otherwise (:func:`settle`)
    options: tuple[tuple[str, str], ...] = ()
    variant: str = ""

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
    def reads_alpha(self) -> bool:
        """Whether α dealt the run's data (a Dirichlet partition: not ``iid``, ...)."""
        from pfednas.data.partitioners import PARAMETERS

        partitioner = str((self.config.get("dataset") or {}).get("partitioner", "dirichlet"))
        return "alpha" in PARAMETERS.get(partitioner, ("alpha",))

    @property
    def alpha_text(self) -> str:
        """``α=0.5`` where α dealt the data, else ``""``."""
        return f"α={self.alpha:g}" if self.reads_alpha else ""

    @property
    def row_name(self) -> str:
        """Its method, with what tells it from other runs of that method where anything
        does: ``fedavg (federation.lr=0.05)``."""
        return f"{self.method} ({self.variant})" if self.variant else self.method

    @property
    def budget(self) -> str:
        return budget_of(self.config)

    @property
    def ran_as(self) -> str:
        """``simulated``, ``flwr run`` or ``deployed``, as ``summary.json`` records it."""
        if self.summary.get(RAN_AS):
            return str(self.summary[RAN_AS])
        profiles = self.summary.get("profiles")
        claimed = isinstance(profiles, list) and any(
            isinstance(p, dict) and p.get("source") in CLAIMED_SOURCES for p in profiles)
        return DEPLOYED if claimed else SIMULATED

    @property
    def setting(self) -> str:
        """The federation it ran: ``K=4 N=4 R=2 E=1, simulated``."""
        return f"{self.budget}, {self.ran_as}"

    @property
    def row_key(self) -> tuple[str, str, float, str, str, tuple[tuple[str, str], ...]]:
        """What its table row shares with every run pooled into it (all but the seed)."""
        return (self.dataset, self.setting, self.alpha, self.method, self.space, self.options)

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


def budget_of(config: Mapping[str, Any]) -> str:
    fed = config["federation"]
    return (f"K={fed['num_clients']} N={fed['clients_per_round']} R={fed['num_rounds']} "
            f"E={fed['local_epochs']}")


def compared_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """The config as ``dotted.key -> JSON value``, without :data:`NOT_A_SETTING`."""
    out: dict[str, str] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if dotted in NOT_A_SETTING:
            continue
        if isinstance(value, Mapping) and value:
            out.update(compared_config(value, dotted + "."))
        else:
            out[dotted] = json.dumps(value, sort_keys=True)
    return out


def settle(runs: Sequence[Run]) -> list[Run]:
    """The runs, each with its :attr:`Run.options`: its values of every config key that two
    of the runs hold with different values (a key only some runs hold, unchanged where they
    hold it, splits nothing), and :attr:`Run.variant`: those that differ between runs of
    one row otherwise, ``federation.lr=0.05``. Runs with equal :attr:`Run.row_key` pool."""
    flats = [compared_config(run.config) for run in runs]
    values: dict[str, set[str]] = {}
    for flat in flats:
        for key, value in flat.items():
            values.setdefault(key, set()).add(value)
    varying = sorted(k for k, v in values.items() if len(v) > 1)
    options = [tuple((k, flat.get(k, ABSENT)) for k in varying) for flat in flats]
    rows: dict[tuple[Any, ...], list[int]] = {}
    for i, run in enumerate(runs):
        rows.setdefault(run.row_key[:-1], []).append(i)
    variants = [""] * len(runs)
    for members in rows.values():
        differing = [j for j in range(len(varying))
                     if len({options[i][j][1] for i in members}) > 1]
        for i in members:
            variants[i] = ", ".join(f"{varying[j]}={_shown(options[i][j][1])}"
                                    for j in differing)
    return [replace(run, options=o, variant=v) for run, o, v in zip(runs, options, variants,
                                                                    strict=True)]


def _shown(value: str) -> str:
    """A JSON value as the command line gives it: a string without its quotes."""
    if value == ABSENT:
        return value
    loaded = json.loads(value)
    return loaded if isinstance(loaded, str) else value


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
            config = saved_config_values(path / name, resolve=False)
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
