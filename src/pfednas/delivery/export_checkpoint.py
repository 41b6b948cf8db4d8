"""``pfednas export --from-checkpoint``: a PerFedRLNAS or HAPFNAS client's architecture cut
from the server's checkpointed supernet, BatchNorm statistics re-estimated on the client's
train split exactly as in its personalized evaluation: the un-fine-tuned slice (PerFedRLNAS
as published), not the fine-tuned model behind a reported ``+FT`` figure."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from pfednas.app.checkpoint import load_checkpoint
from pfednas.clients.subnet import recalibrate_on
from pfednas.config import ConfigError, RunSettings, settings_from_cfg, task_shape
from pfednas.data import data_normalisation, load_client_data
from pfednas.edge.spec import input_spec
from pfednas.hardware.profile import MB, MBPS, SIMULATED, ClientProfile
from pfednas.methods import METHODS
from pfednas.methods.build import build_strategy
from pfednas.search import ElasticNet
from pfednas.strategies import PerFedRLNASStrategy
from pfednas.strategies.hapfnas import HAPFNASStrategy

EXPORTABLE = tuple(name for name, spec in METHODS.items() if spec.exports_from_checkpoint)


def run_settings(run_dir: Path) -> RunSettings:
    path = run_dir / "resolved_config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a pfednas run directory (no resolved_config.yaml)")
    cfg = OmegaConf.load(path)
    cfg.resume = None
    return settings_from_cfg(cfg)  # type: ignore[arg-type]


def recorded_profiles(run_dir: Path) -> dict[int, ClientProfile] | None:
    """A deployed run's client profiles as its ``summary.json`` recorded them (they came
    from the nodes, not from the seed); None for a simulation, or a run with no summary."""
    path = run_dir / "summary.json"
    if not path.is_file():
        return None
    rows = json.loads(path.read_text()).get("profiles", [])
    if not rows or all(row.get("source") == SIMULATED for row in rows):
        return None
    return {int(row["client_id"]): ClientProfile(
        memory_bytes=(math.inf if row["memory_budget_mb"] is None
                      else float(row["memory_budget_mb"]) * MB),
        macs_per_second=float(row["macs_per_second"]),
        bandwidth_bps=float(row["bandwidth_mbps"]) * MBPS, source=str(row["source"]))
        for row in rows}


def server_slice(run_dir: Path, client_id: int) -> tuple[ElasticNet[Any], dict[str, Any]]:
    """The client's architecture cut from the checkpointed supernet, and its spec."""
    settings = run_settings(run_dir)
    if settings.method not in EXPORTABLE:
        raise ConfigError(f"--from-checkpoint supports {', '.join(EXPORTABLE)} runs; with "
                          f"method={settings.method} the server holds no personalized model")
    if not 0 <= client_id < settings.federation.num_clients:
        raise ConfigError(f"--client must be in 0..{settings.federation.num_clients - 1}")
    # the budgets that chose the client's architecture: the seeded spread of a simulation,
    # or what a deployment's nodes claimed
    profiles = recorded_profiles(run_dir)
    strategy = build_strategy(settings, deployment=profiles is not None, claimed=profiles)
    assert isinstance(strategy, PerFedRLNASStrategy | HAPFNASStrategy)
    _, state = load_checkpoint(run_dir)
    strategy.load_state(state)
    arch = strategy.personalized_arch(client_id)
    net = strategy.supernet.extract(arch)
    if settings.options.bn_recalibrate:
        data = load_client_data(settings.data, client_id)
        recalibrate_on(net, data.train, settings.federation.batch_size, torch.device("cpu"))
    task = task_shape(settings)
    spec = {"client_id": client_id, "arch": arch.to_str(), "method": settings.method,
            "dataset": settings.data.name, "num_classes": task.num_classes,
            "search_space": settings.search_space.as_dict(),
            "task": {"num_classes": task.num_classes, "in_channels": task.in_channels,
                     "image_size": task.image_size},
            "input": input_spec(task, data_normalisation(settings.data)),
            "parameters": sum(p.numel() for p in net.parameters())}
    return net.eval(), spec
