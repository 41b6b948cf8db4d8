"""The bench's tuning choice: what each method's reported cells run, read from its tuning cells.

``bench.tuning`` gives every method the same number of configurations, tried on the tuning
seed and scored on the clients' validation splits (``pfednas bench --tune``). A method that
can fine-tune its whole model or its head only (a ``finetune_scope`` option) has both scopes
scored from each tuning run (``federation.finetune_both``): its grid is the configurations
× {full, head}. The choice is the highest validation score (the first of equal ones, full
before head); the reported cells run the preset's values, then the chosen configuration and
scope (:func:`pfednas.bench.cells.cells`). There is no second copy of the choice to keep in
step: a re-run tuning cell changes what the reported cells run, and so makes them stale.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pfednas.bench.cells import (
    BenchError,
    BenchPreset,
    Cell,
    scope_tuned,
    stale_keys,
    tuning_cells,
)
from pfednas.options.common import FINETUNE_SCOPES


@dataclass(frozen=True)
class Tried:
    """One scored configuration of a method's grid."""

    method: str
    index: int                 # the configuration's place in bench.tuning
    overrides: tuple[str, ...]
    scope: str | None          # the fine-tuning scope scored (None: the method has none)
    score: float | None        # mean validation accuracy over clients (None: not run)
    std: float | None = None

    @property
    def chosen_overrides(self) -> tuple[str, ...]:
        scope = () if self.scope is None else (f"method.finetune_scope={self.scope}",)
        return (*self.overrides, *scope)


def scored(method: str, index: int, overrides: Sequence[str], summary: Mapping[str, Any] | None
           ) -> list[Tried]:
    """The configurations one tuning run scored: one per fine-tuning scope where the method
    has a scope (the run's ``finetune_scopes``), else the run's personalized accuracy."""
    if scope_tuned(method):
        scopes = (summary or {}).get("finetune_scopes") or {}
        return [Tried(method, index, tuple(overrides), scope,
                      scopes[scope]["mean"] if scope in scopes else None,
                      scopes[scope]["std"] if scope in scopes else None)
                for scope in FINETUNE_SCOPES]
    if summary is None:
        return [Tried(method, index, tuple(overrides), None, None)]
    return [Tried(method, index, tuple(overrides), None, float(summary["personalized_acc_mean"]),
                  float(summary["personalized_acc_std"]))]


def best(tried: Sequence[Tried]) -> Tried | None:
    """The highest score (the first of equal ones); None where a configuration did not run."""
    if not tried or any(t.score is None for t in tried):
        return None
    return max(tried, key=lambda t: t.score or 0.0)  # max keeps the first of equal ones


def _summary(cell: Cell) -> dict[str, Any] | None:
    path = cell.path / "summary.json"
    if not path.is_file():
        return None
    value = json.loads(path.read_text())
    return value if isinstance(value, dict) else None


def tuning_results(preset: BenchPreset, extra: Sequence[str],
                   spaces: Mapping[str, tuple[str, ...]], *, check_stale: bool = True
                   ) -> dict[str, list[Tried]]:
    """Method → every configuration of its grid with its validation score (None: the cell
    has not finished, or ran another configuration than the grid composes now)."""
    out: dict[str, list[Tried]] = {}
    for cell in tuning_cells(preset, extra, spaces):
        index = int(cell.path.name.split("=", 1)[1])
        summary = _summary(cell)
        if summary is not None and check_stale and stale_keys(cell):
            summary = None
        out.setdefault(cell.method, []).extend(
            scored(cell.method, index, preset.tuning[cell.method][index], summary))
    return out


def chosen_overrides(preset: BenchPreset, extra: Sequence[str],
                     spaces: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """Method → the overrides its tuning chose; a BenchError names a method whose tuning cells
    have not all finished with the grid of now."""
    if not preset.tuning:
        return {}
    results = tuning_results(preset, extra, spaces)
    missing = [m for m, tried in results.items() if best(tried) is None]
    if missing:
        raise BenchError(f"bench={preset.name}: the tuning of {', '.join(missing)} has not "
                         "finished with the grid of now; run `pfednas bench "
                         f"bench={preset.name} --tune` first (the reported cells run its choice)")
    return {m: choice.chosen_overrides for m, tried in results.items()
            if (choice := best(tried)) is not None}


def tuning_table(preset: BenchPreset, results: Mapping[str, Sequence[Tried]], alpha: float
                 ) -> str:
    """The grid, every configuration's validation score, and the choice (★), as Markdown."""
    count = len(next(iter(preset.tuning.values()))) if preset.tuning else 0
    scored = ("every method on the same half of them; a method that selects on validation "
              "data selects on the other half" if preset.tuning_split == "val_half" else
              "a method that selects on them: on the half it did not select on")
    lines = [f"Seed {preset.tuning_seed} (never reported), α = {alpha:g}, {count} training "
             "configurations per method (× the fine-tuning scope, full or head, scored from the "
             "same run, for a method that has one); score = mean personalized accuracy on the "
             f"clients' **validation** splits ({scored}). Chosen (★) = the highest score; the "
             "reported cells run it.", "",
             "| method | configuration | val acc (mean ± std clients): fine-tuning full "
             "/ head, or the run's | chosen |", "|---|---|---|---|"]
    for method, tried in results.items():
        choice = best(tried)
        for index in sorted({t.index for t in tried}):
            runs = [t for t in tried if t.index == index]
            configuration = " ".join(runs[0].overrides) or "(preset values)"
            scores = " / ".join("not run" if t.score is None
                                else f"{t.score:.4f} ± {t.std or 0.0:.4f}" for t in runs)
            chosen = next((f"★ {t.scope}" if t.scope else "★" for t in runs if t == choice), "")
            lines.append(f"| {method} | `{configuration}` | {scores} | {chosen} |")
    return "\n".join(lines) + "\n"


def write_tuning_table(preset: BenchPreset, extra: Sequence[str],
                       spaces: Mapping[str, tuple[str, ...]]) -> Path:
    """``<out>/tuning/tuning.md``: the grid, its scores and the choice."""
    alpha = preset.alphas[0] if preset.tuning_alpha is None else preset.tuning_alpha
    text = (f"# Tuning of bench={preset.name}\n\n"
            + tuning_table(preset, tuning_results(preset, extra, spaces), alpha))
    out = preset.out / "tuning" / "tuning.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out
