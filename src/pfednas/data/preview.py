"""How a run deals its data, shown before anything trains (``pfednas partition``,
:mod:`pfednas.report.preview`): each client's split sizes and largest classes, and the
partition plot drawn by flwr-datasets' ``plot_label_distributions`` over these labels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

TOP_CLASSES = 3  # classes named per client, largest first
MAX_LEGEND = 20  # classes named in the plot's legend (more: colours alone)


@dataclass(frozen=True)
class ClientSplit:
    """One client's share of the data, as its splits hold it."""

    client_id: int
    train: int
    val: int
    test: int
    classes: int  # classes present in any split
    largest: tuple[tuple[int, float], ...]  # (class, share of the client's samples)
    shift: str | None = None  # its feature-skew transformation, where one is on

    @property
    def samples(self) -> int:
        return self.train + self.val + self.test


def client_splits(labels: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                  shifts: Sequence[str] | None = None) -> list[ClientSplit]:
    """Each client's sizes and classes from its train / val / test labels."""
    rows = []
    for cid, splits in enumerate(labels):
        pooled = np.concatenate(splits).astype(np.int64)
        counts = np.bincount(pooled) if pooled.size else np.zeros(0, dtype=np.int64)
        order = [int(c) for c in np.argsort(-counts, kind="stable")[:TOP_CLASSES]
                 if counts[c] > 0]
        rows.append(ClientSplit(
            client_id=cid, train=int(splits[0].size), val=int(splits[1].size),
            test=int(splits[2].size), classes=int(np.count_nonzero(counts)),
            largest=tuple((c, float(counts[c]) / pooled.size) for c in order),
            shift=None if shifts is None else shifts[cid]))
    return rows


def format_splits(rows: Sequence[ClientSplit], class_names: Sequence[str] | None = None) -> str:
    """The clients as a text table, then their totals."""
    def name(c: int) -> str:
        return class_names[c] if class_names and c < len(class_names) else str(c)

    header = ["client", "samples", "train", "val", "test", "classes", "largest classes"]
    if any(r.shift for r in rows):
        header.append("feature skew")
    body = [[str(r.client_id), str(r.samples), str(r.train), str(r.val), str(r.test),
             str(r.classes), ", ".join(f"{name(c)} {share:.0%}" for c, share in r.largest),
             *([r.shift or ""] if len(header) == 8 else [])] for r in rows]
    sizes = [r.samples for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
             for line in [header, *body]]
    lines.append(f"{len(rows)} clients, {sum(sizes)} samples: {min(sizes)} to {max(sizes)} "
                 f"per client (median {int(np.median(sizes))}), "
                 f"{min(r.classes for r in rows)} to {max(r.classes for r in rows)} classes")
    return "\n".join(lines)


def partition_plot(labels: Sequence[np.ndarray], *, num_classes: int, title: str) -> Any:
    """flwr-datasets' label-distribution bar plot of these clients' labels (one bar per
    client, stacked by class); the matplotlib figure."""
    import datasets
    from flwr_datasets.partitioner import Partitioner
    from flwr_datasets.visualization import plot_label_distributions

    pooled = np.concatenate(labels).astype(np.int64)
    bounds = np.cumsum([0, *(len(y) for y in labels)])
    features = datasets.Features({"label": datasets.ClassLabel(
        names=[str(c) for c in range(num_classes)])})
    table = datasets.Dataset.from_dict({"label": pooled.tolist()}, features=features)

    class Dealt(Partitioner):  # the clients' rows of the pooled labels, as dealt
        @property
        def num_partitions(self) -> int:
            return len(labels)

        def load_partition(self, partition_id: int) -> datasets.Dataset:
            return self.dataset.select(range(bounds[partition_id], bounds[partition_id + 1]))

    dealt = Dealt()
    dealt.dataset = table
    width = min(4.0 + 0.3 * len(labels), 24.0)
    figure, axis, _ = plot_label_distributions(
        dealt, label_name="label", plot_type="bar", size_unit="absolute",
        figsize=(width, 4.5), title=title, legend=num_classes <= MAX_LEGEND,
        legend_title="class",
        verbose_labels=False)
    axis.set_xlabel("client")
    axis.set_ylabel("samples")
    return figure
