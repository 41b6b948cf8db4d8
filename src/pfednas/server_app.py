"""Flower ServerApp: builds the method's strategy from the config, runs it, writes results.

The config is composed from ``conf/`` with the Hydra overrides that the
``pfednas`` command passes through run-config (key ``overrides``, a JSON list),
so the CLI, the server and every client see the identical config.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from omegaconf import OmegaConf

from pfednas.config import RunSettings, compose, describe, overrides_from_json, settings_from_cfg
from pfednas.data import dataset_info
from pfednas.models import build_model
from pfednas.results import ResultsWriter, format_table, summarize
from pfednas.strategies import Budget, FedAvgFTStrategy, LocalStrategy, PersonalizedStrategy
from pfednas.strategies.base import RoundRecord
from pfednas.train import get_arrays

app = ServerApp()


def build_strategy(settings: RunSettings) -> PersonalizedStrategy:
    fed = settings.federation
    budget = Budget(num_clients=fed.num_clients, clients_per_round=fed.clients_per_round,
                    num_rounds=fed.num_rounds, local_epochs=fed.local_epochs,
                    eval_every=fed.eval_every, round_timeout=fed.round_timeout,
                    seed=settings.seed)
    train_config = {"lr": fed.lr, "momentum": fed.momentum, "weight_decay": fed.weight_decay,
                    "batch_size": fed.batch_size}
    if settings.method == "local":
        return LocalStrategy(budget=budget, train_config=train_config)
    info = dataset_info(settings.data.name)
    model = build_model(in_channels=info.in_channels, image_size=info.image_size,
                        num_classes=info.num_classes, seed=settings.seed)
    return FedAvgFTStrategy(budget=budget, train_config=train_config,
                            initial_arrays=get_arrays(model),
                            finetune_epochs=int(settings.method_options.get("finetune_epochs", 0)))


def progress_line(record: RoundRecord, num_rounds: int, start: float) -> str:
    parts = [f"[pfednas] round {record.round}/{num_rounds}",
             f"{time.perf_counter() - start:6.1f}s"]
    if record.train:
        parts.append(f"train loss {np.mean([r['train_loss'] for r in record.train]):.4f}")
    if record.evaluation:
        accs = [r["accuracy"] for r in record.evaluation]
        parts.append(f"personalized acc {np.mean(accs):.4f} ± {np.std(accs):.4f}")
    if record.failures:
        parts.append(f"{record.failures} failed")
    return " | ".join(parts)


def output_dir(context: Context) -> Path:
    given = str(context.run_config.get("output-dir", "")).strip()
    if given:
        return Path(given)
    return Path("outputs") / time.strftime("%Y-%m-%d/%H-%M-%S_serverapp")


@app.main()
def main(grid: Grid, context: Context) -> None:
    overrides = overrides_from_json(str(context.run_config.get("overrides", "[]")))
    cfg = compose(overrides)
    settings = settings_from_cfg(cfg)
    out = output_dir(context)
    writer = ResultsWriter(out)
    (out / "resolved_config.yaml").write_text(OmegaConf.to_yaml(cfg))
    print(f"[pfednas] {describe(settings)}", flush=True)

    start = time.perf_counter()
    strategy = build_strategy(settings)
    strategy.connect(grid)

    def on_round(record: RoundRecord) -> None:
        writer.write_round(record)
        if settings.progress:
            print(progress_line(record, settings.federation.num_rounds, start), flush=True)

    records = strategy.run(grid, on_round)
    summary = summarize(method=settings.method, dataset=settings.data.name, records=records,
                        wall_seconds=time.perf_counter() - start,
                        extra={"seed": settings.seed, "overrides": list(overrides)})
    path = writer.write_summary(summary)
    print(format_table(summary), flush=True)
    print(f"[pfednas] results written to {path.parent}", file=sys.stdout, flush=True)
