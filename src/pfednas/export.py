"""``pfednas export RUN_DIR --client ID``: a client's personalized model for the edge.

Writes ``client_<ID>.pt`` (TorchScript: loadable with ``torch.jit.load`` and
nothing else) and ``client_<ID>.json`` beside it: the architecture string, the
input spec (shape, dtype, the normalisation the model expects) and the class
count. Supported for methods whose server holds the personalized model: the
client's architecture (PerFedRLNAS: the argmax of its policy; HAPFNAS: the one
its evolutionary search chose) cut from the checkpointed supernet, with
BatchNorm statistics re-estimated on the client's train split exactly as in its
personalized evaluation. Other methods keep the personalized model on the
client and say so.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path

import torch
from omegaconf import OmegaConf

from pfednas.build import build_strategy
from pfednas.checkpoint import load_checkpoint
from pfednas.clients.subnet import recalibrate_on
from pfednas.config import ConfigError, RunSettings, settings_from_cfg, task_shape
from pfednas.data import load_client_data
from pfednas.data.registry import normalisation
from pfednas.methods import METHODS
from pfednas.nas.profile import MB, MBPS, SIMULATED, ClientProfile
from pfednas.strategies import PerFedRLNASStrategy
from pfednas.strategies.hapfnas import HAPFNASStrategy

EXPORTABLE = ("perfedrlnas", "hapfnas")


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


def export_client(run_dir: Path, client_id: int, out_dir: Path) -> tuple[Path, Path]:
    settings = run_settings(run_dir)
    if settings.method not in EXPORTABLE:
        raise ConfigError(f"export supports {', '.join(EXPORTABLE)} runs; with "
                          f"method={settings.method} the personalized model lives on the client")
    if not 0 <= client_id < settings.federation.num_clients:
        raise ConfigError(f"--client must be in 0..{settings.federation.num_clients - 1}")
    assert settings.method in METHODS
    # the budgets that chose the client's architecture: the seeded spread of a simulation,
    # or what a deployment's nodes claimed
    profiles = recorded_profiles(run_dir)
    strategy = build_strategy(settings, deployment=profiles is not None)
    if profiles is not None:
        strategy.profiles = profiles
    assert isinstance(strategy, PerFedRLNASStrategy | HAPFNASStrategy)
    _, state = load_checkpoint(run_dir)
    strategy.load_state(state)
    arch = strategy.personalized_arch(client_id)
    net = strategy.supernet.extract(arch)
    cpu = torch.device("cpu")
    if settings.method_options.get("bn_recalibrate"):
        data = load_client_data(settings.data, client_id)
        recalibrate_on(net, data.train, settings.federation.batch_size, cpu)
    net.eval()
    task = task_shape(settings)
    example = torch.zeros(1, task.in_channels, task.image_size, task.image_size)
    with torch.no_grad(), warnings.catch_warnings():
        # Shapes are fixed by the input spec, so the tracer's shape constants are exact.
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        scripted = torch.jit.trace(net, example)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / f"client_{client_id}.pt"
    scripted.save(str(model_path))
    norm = normalisation(settings.data.name)
    spec = {
        "client_id": client_id, "arch": arch.to_str(), "method": settings.method,
        "dataset": settings.data.name, "num_classes": task.num_classes,
        "input": {"shape": [None, task.in_channels, task.image_size, task.image_size],
                  "dtype": "float32",
                  "normalisation": {"x": "(raw / scale - mean[c]) / std[c]",
                                    "scale": norm.scale, "mean": list(norm.mean),
                                    "std": list(norm.std)}},
        "parameters": sum(p.numel() for p in net.parameters()),
        "source_run": str(run_dir.resolve()),
    }
    spec_path = out_dir / f"client_{client_id}.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    return model_path, spec_path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pfednas export", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--client", type=int, required=True)
    parser.add_argument("--out", type=Path, default=None, help="default: RUN_DIR/export")
    args = parser.parse_args(argv)
    try:
        model, spec = export_client(args.run_dir, args.client, args.out or args.run_dir / "export")
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"pfednas: error: {err}", file=sys.stderr)
        return 2
    print(f"[pfednas] wrote {model} and {spec}")
    return 0
