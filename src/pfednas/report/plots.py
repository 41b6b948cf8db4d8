"""Report figures (matplotlib, Agg canvas; no pyplot state): each function returns a Figure.

The caller saves them (``fig.savefig(path)``); nothing here writes files. Every figure is
laid out to hold its text: titles wrapped to their panel's width, rounds on integer ticks.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from pfednas.report.archs import ArchMatrix
from pfednas.report.collect import Run
from pfednas.report.table import FT_SUFFIX
from pfednas.report.tiers import TierSeries


@dataclass(frozen=True)
class Curve:
    """Mean personalized accuracy at each evaluated round, seeds averaged."""

    method: str
    rounds: np.ndarray
    accuracy: np.ndarray
    wall_seconds: np.ndarray  # cumulative round wall time at each of those rounds
    # cumulative simulated device time at each of those rounds (NaN: records without it)
    simulated_seconds: np.ndarray | None = None


def _cumulative(run: Run, key: str, rounds: np.ndarray) -> np.ndarray:
    """The cumulative per-round ``key`` of the run's records at ``rounds`` (NaN if absent)."""
    values = {int(r["round"]): float(r.get(key, np.nan)) for r in run.rounds}
    return np.cumsum([values.get(r, 0.0) for r in range(1, int(rounds.max()) + 1)])[rounds - 1]


def run_curve(run: Run) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rounds, mean accuracy, cumulative round wall s, cumulative simulated s): accuracy
    from ``summary.json``."""
    points = run.summary["curve"]
    rounds = np.array([int(p["round"]) for p in points])
    accuracy = np.array([float(p["acc_mean"]) for p in points])
    return (rounds, accuracy, _cumulative(run, "wall_seconds", rounds),
            _cumulative(run, "simulated_seconds", rounds))


def seed_mean_curve(method: str, runs: Sequence[Run]) -> Curve:
    """Average over seeds at the rounds every seed evaluated."""
    curves = [run_curve(r) for r in runs]
    common = sorted(set.intersection(*(set(c[0].tolist()) for c in curves)))
    acc = np.mean([[dict(zip(c[0], c[1], strict=True))[r] for r in common] for c in curves],
                  axis=0)
    wall, simulated = (np.mean([[dict(zip(c[0], c[i], strict=True))[r] for r in common]
                                for c in curves], axis=0) for i in (2, 3))
    return Curve(method, np.array(common), np.asarray(acc), np.asarray(wall),
                 np.asarray(simulated))


def train_loss(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """(rounds, the trained clients' mean training loss weighted by their samples) of every
    round whose records have one."""
    points = []
    for record in run.rounds:
        rows = [r for r in record.get("train") or [] if "train_loss" in r]
        weights = np.array([float(r.get("num_examples", 1)) for r in rows])
        if rows and weights.sum() > 0:
            losses = np.array([float(r["train_loss"]) for r in rows])
            points.append((int(record["round"]), float(np.dot(losses, weights) / weights.sum())))
    return (np.array([p[0] for p in points], dtype=np.int64),
            np.array([p[1] for p in points], dtype=np.float64))


def seed_mean_loss(method: str, runs: Sequence[Run]) -> Curve:
    """The training loss averaged over seeds at the rounds every seed trained (no times)."""
    curves = [train_loss(r) for r in runs]
    common = sorted(set.intersection(*(set(c[0].tolist()) for c in curves)))
    loss = np.mean([[dict(zip(c[0], c[1], strict=True))[r] for r in common] for c in curves],
                   axis=0) if common else np.array([])
    empty = np.full(len(common), np.nan)
    return Curve(method, np.array(common, dtype=np.int64), np.asarray(loss), empty, empty)


def loss_curves(panels: Mapping[str, Sequence[Curve]]) -> Figure:
    """One panel per title, one line per method: the clients' training loss per round (a
    curve's ``accuracy`` holds the loss; :func:`seed_mean_loss`)."""
    fig, axes = _figure(len(panels))
    for ax, (title, curves) in zip(axes, panels.items(), strict=True):
        for c in curves:
            ax.plot(c.rounds, c.accuracy, marker="o", markersize=2, label=c.method)
        _title(ax, title)
        _round_axis(ax)
        ax.set_ylabel("mean client training loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return fig


def timed(curve: Curve) -> bool:
    """Whether every point of the curve has its simulated time (records from before the time
    axis have none)."""
    return curve.simulated_seconds is not None and not np.isnan(curve.simulated_seconds).any()


def _figure(panels: int, width: float = 5.0, height: float = 3.8) -> tuple[Figure, list]:
    fig = Figure(figsize=(width * panels, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    return fig, list(axes)


CHARS_PER_INCH = 9.0  # a title's characters per inch of width, at matplotlib's default size


def wrapped(text: str, inches: float) -> str:
    """``text`` with each line wrapped to ``inches`` of width (never cut)."""
    width = max(12, int(inches * CHARS_PER_INCH))
    return "\n".join(textwrap.fill(line, width, break_long_words=False) or line
                     for line in text.splitlines())


def _title(ax: Axes, title: str) -> None:
    """The panel's title, wrapped to the panel's width."""
    fig = ax.get_figure()
    inches = (fig.get_figwidth() * ax.get_position().width if isinstance(fig, Figure)
              else 5.0)
    ax.set_title(wrapped(title, inches))


def _round_axis(ax: Axes) -> None:
    """A round axis: labelled, ticks on whole rounds only."""
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def accuracy_curves(panels: Mapping[str, Sequence[Curve]], *, x: str) -> Figure:
    """One panel per title (e.g. ``digits α=0.5``), one line per method; ``x``: round |
    wall | simulated (the simulated device time, :mod:`pfednas.report.timeaxis`)."""
    fig, axes = _figure(len(panels))
    labels = {"round": "round", "wall": "cumulative round wall time (s)",
              "simulated": "cumulative simulated device time (s)"}
    for ax, (title, curves) in zip(axes, panels.items(), strict=True):
        for c in curves:
            xs = {"round": c.rounds, "wall": c.wall_seconds, "simulated": c.simulated_seconds}[x]
            ax.plot(xs, c.accuracy, marker="o", markersize=3, label=c.method)
        _title(ax, title)
        ax.set_xlabel(labels[x])
        if x == "round":
            _round_axis(ax)
        ax.set_ylabel("mean personalized accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return fig


def client_accuracy_distribution(panels: Mapping[str, Mapping[str, Sequence[float]]]) -> Figure:
    """Box plot of client accuracies per method (all clients of all seeds), one panel per title."""
    fig, axes = _figure(len(panels), width=max(5.0, 1.1 * max(len(p) for p in panels.values())))
    for ax, (title, by_method) in zip(axes, panels.items(), strict=True):
        names = list(by_method)
        data = [np.asarray(by_method[m]) for m in names]
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right")
        rng = np.random.default_rng(0)  # jitter of the dots only
        for i, values in enumerate(data, start=1):
            ax.scatter(i + rng.uniform(-0.15, 0.15, len(values)), values, s=6, alpha=0.4)
        _title(ax, title)
        ax.set_ylabel("personalized client accuracy")
        ax.grid(axis="y", alpha=0.3)
    return fig


def tier_accuracy(panels: Mapping[str, Sequence[TierSeries]]) -> Figure:
    """Accuracy against budget, one panel per title, one colour per method: each client a dot
    (every seed's), each tier's mean at its clients' mean budget joined by a line, dashed for
    the figure as published where the runs have the pair; budgets on a log₂ axis."""
    fig, axes = _figure(len(panels), width=5.5)
    for ax, (title, series) in zip(axes, panels.items(), strict=True):
        for i, s in enumerate(series):
            colour = f"C{i}"
            ax.scatter(s.budgets, s.accuracies, s=8, alpha=0.35, color=colour)
            published = all("accuracy_no_ft" in t for t in s.tiers)
            ax.plot(s.tier_budgets, [t["accuracy"] for t in s.tiers], marker="o", markersize=4,
                    color=colour, label=s.method + (FT_SUFFIX if published else ""))
            if published:
                ax.plot(s.tier_budgets, [t["accuracy_no_ft"] for t in s.tiers], marker="s",
                        markersize=3, linestyle="--", color=colour,
                        label=f"{s.method} (as published)")
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        _title(ax, title)
        ax.set_xlabel(f"client budget ({series[0].budget_metric}, {series[0].unit})")
        ax.set_ylabel("personalized client accuracy")
        ax.grid(alpha=0.3)
        # beside the panel: with several methods a legend inside covers their lines
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


MIN_HEATMAP_HEIGHT = 4.5  # inches: the client axis holds its label with a few clients


def arch_heatmap(archs: ArchMatrix, histograms: np.ndarray | None, *, title: str) -> Figure:
    """Label distribution (left) and chosen option per dimension (right), one row per client.

    ``archs`` and ``histograms`` are already in the same client order.
    """
    n, d = archs.indices.shape
    height = min(max(MIN_HEATMAP_HEIGHT, 2.0 + 0.22 * n), 30.0)
    classes = 0 if histograms is None else histograms.shape[1]
    width = 3.0 + 0.25 * (d + classes)
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    ratios = [max(classes, 1), d] if histograms is not None else [d]
    axes = fig.subplots(1, len(ratios), squeeze=False, width_ratios=ratios)[0]
    ticks = [str(c) for c in archs.client_ids]
    if histograms is not None:
        share = histograms / histograms.sum(axis=1, keepdims=True)
        image = axes[0].imshow(share, aspect="auto", cmap="Greys", vmin=0, vmax=share.max())
        axes[0].set_xlabel("class")
        axes[0].set_ylabel("client (label-similarity order)")
        axes[0].set_yticks(range(n), ticks, fontsize="x-small")
        axes[0].set_xticks(range(classes))
        fig.colorbar(image, ax=axes[0], label="label share", shrink=0.6)
    ax = axes[-1]
    image = ax.imshow(archs.normalised(), aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(d), archs.dimensions, rotation=90, fontsize="x-small")
    ax.set_yticks(range(n), ticks, fontsize="x-small")
    ax.set_xlabel("search dimension")
    if n * d <= 600:
        for (i, j), value in np.ndenumerate(archs.indices):
            ax.text(j, i, str(value), ha="center", va="center", fontsize=6, color="w")
    fig.colorbar(image, ax=ax, label="option (0 first, 1 last)", shrink=0.6)
    fig.suptitle(wrapped(title, width))
    return fig


def partition_figure(histograms: np.ndarray, shifts: Sequence[str] | None, *,
                     title: str) -> Figure:
    """How the data was dealt: samples per class and client (top, a heatmap), each client's
    samples (bottom, bars) and, where the clients' inputs are transformed, each client's
    transformation under its bar (``shifts``: one label per client; ticks stay readable to
    40 clients, beyond that every ``K // 40``-th)."""
    k, classes = histograms.shape
    width = min(4.0 + 0.28 * k, 24.0)
    fig = Figure(figsize=(width, 3.0 + 0.25 * classes + (1.5 if shifts else 0)),
                 layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[max(classes, 2), 3])
    image = top.imshow(histograms.T, aspect="auto", cmap="Greys", interpolation="nearest")
    top.set_ylabel("class")
    top.set_yticks(range(classes), [str(c) for c in range(classes)], fontsize="x-small")
    fig.colorbar(image, ax=top, label="samples", shrink=0.8)
    bottom.bar(range(k), histograms.sum(axis=1), color="0.4")
    bottom.set_ylabel("samples")
    bottom.set_xlabel("client")
    step = max(1, k // 40)
    ticks = list(range(0, k, step))
    names = [str(c) if not shifts else f"{c}: {shifts[c]}" for c in ticks]
    bottom.set_xticks(ticks, names, rotation=90 if shifts else 0, fontsize="x-small")
    bottom.grid(axis="y", alpha=0.3)
    fig.suptitle(wrapped(title, width))
    return fig
