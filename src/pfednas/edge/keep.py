"""The ClientApp's side of keeping: the spec's costs, the write, and on a node the
measurement of the reported model (the app layer calls these; clients only hand models
over, :class:`pfednas.clients.common.ClientEnv.keep`)."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pfednas.data import data_normalisation
from pfednas.data.spec import spec_info
from pfednas.edge.kept import KeptModel, write_kept
from pfednas.edge.spec import ModelCost, model_spec, reported_kind, sample_inputs
from pfednas.search import SpaceConfig
from pfednas.search.memory_bound import training_memory_upper_bound
from pfednas.settings import RunSettings, task_shape


def model_cost(settings: RunSettings, arch: str,
               search_space: Mapping[str, Any] | None = None) -> ModelCost:
    """Parameters, MACs per sample, training memory (estimate and bound) of ``arch`` (of
    ``search_space``, in its flat form; None: the run's)."""
    task = task_shape(settings)
    space = (settings.search_space if search_space is None
             else SpaceConfig.of(search_space)).build()
    supernet = space.build_supernet(num_classes=task.num_classes,
                                    in_channels=task.in_channels, image_size=task.image_size)
    parsed = space.arch_from_str(arch)
    training = supernet.cost(parsed, batch_size=settings.federation.batch_size)
    return ModelCost.of(supernet.cost(parsed, batch_size=1), training,
                        training_memory_upper_bound(training, space.name))


def source_commit() -> str:
    """The commit of the code this process runs (``<head>+dirty`` with changes); empty
    outside a git checkout (an installed FAB)."""
    from pfednas.source import source_state

    return source_state().commit


def keep_client_models(root: Path, client_id: int, models: list[KeptModel],
                       settings: RunSettings, config: Mapping[str, Any], *, split: str,
                       num_examples: int, overrides: tuple[str, ...] = ()) -> Path:
    """Write ``models`` (the reported one's architecture sets the costs) and their spec."""
    kinds = {m.kind for m in models}
    reported = next(m for m in models if m.kind == reported_kind(kinds))
    space = (settings.search_space.as_dict() if reported.search_space is None
             else reported.search_space)
    spec = model_spec(client_id=client_id, method=settings.method, dataset=settings.data.name,
                      seed=settings.seed, search_space=space,
                      task=task_shape(settings), norm=data_normalisation(settings.data),
                      cost=model_cost(settings, reported.arch, space), kept_kinds=kinds,
                      split=split,
                      num_examples=num_examples, config=config, commit=source_commit(),
                      overrides=overrides, names=spec_info(settings.data).class_names)
    return write_kept(root, client_id, models, spec)


def measure_on_node(folder: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """The reported model's inference latency and peak memory on this node: traced to
    TorchScript in a temporary folder and run in a fresh process
    (:func:`pfednas.edge.measure.measure`)."""
    from pfednas.edge.formats import export
    from pfednas.edge.measure import measure
    from pfednas.edge.rebuild import rebuild, task_of

    net = rebuild(folder, spec, spec["reported"])
    task = task_of(spec)
    sample = sample_inputs(task, 8)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        path = Path(tmp) / "model.pt"
        export(net, "torchscript", path, sample)
        return measure(path, (task.in_channels, task.image_size, task.image_size))
