"""Flower ServerApp: builds the method's strategy from the config (:mod:`pfednas.methods.build`),
runs it, writes results.

The config is composed from ``conf/`` with the Hydra overrides that the
``pfednas`` command passes through run-config (key ``overrides``, a JSON list),
so the CLI, the server and every client see the identical config.

``flwr run .`` runs the app too, without the ``pfednas`` command: on a simulation
SuperLink (Flower's local one) it is a simulation like ``pfednas``'s
(:func:`pfednas.config.in_simulation`), with one SuperNode per client; a federation of
another size, or any refused config, logs one ``pfednas: error:`` line and fails the run
(:class:`RunRefused`: Flower's status ``finished:failed``, its simulation process exits
non-zero).
"""

from __future__ import annotations

import os
import resource
import socket
import sys
import time
from logging import ERROR, WARNING
from pathlib import Path

import numpy as np
from flwr.app import Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp
from omegaconf import OmegaConf

from pfednas.app.checkpoint import read_checkpoint, save_checkpoint, verified_resume
from pfednas.app.environment import environment_record
from pfednas.app.preflight import one_line
from pfednas.app.results import ResultsWriter, format_table, summarize
from pfednas.app.tensorboard import LIVE_DIR, LiveScalars
from pfednas.config import (
    DATA_ROOT_ENV,
    OUTPUT_BASE_ENV,
    RESOLVED_CONFIG,
    SERVERAPP_PID_FILE,
    ConfigError,
    RunSettings,
    compose,
    describe,
    in_simulation,
    output_base,
    overrides_from_json,
    settings_from_cfg,
)
from pfednas.data import DataError, partition_record
from pfednas.edge.kept import MODELS_DIR
from pfednas.hardware.profile import SIMULATED
from pfednas.methods import METHODS
from pfednas.methods.build import build_strategy
from pfednas.methods.fixed import deployment_changes
from pfednas.records import RoundRecord

app = ServerApp()


def progress_line(record: RoundRecord, num_rounds: int, start: float) -> str:
    parts = [f"[pfednas] round {record.round}/{num_rounds}",
             f"{time.perf_counter() - start:6.1f}s"]
    losses = [r["train_loss"] for r in record.train if "train_loss" in r]
    if losses:
        parts.append(f"train loss {np.mean(losses):.4f}")
    over = sum(1 for r in record.train if r.get("over_budget"))
    if over:
        parts.append(f"{over} over budget")
    if record.evaluation:
        accs = [r["accuracy"] for r in record.evaluation]
        quick = " (quick: not fine-tuned)" if record.eval_kind == "quick" else ""
        parts.append(f"personalized acc{quick} {np.mean(accs):.4f} ± {np.std(accs):.4f}")
    if record.clients_missing:
        parts.append(f"{len(record.clients_missing)} missing from the evaluation")
    if record.failures:
        parts.append(f"{record.failures} failed")
    return " | ".join(parts)


def peak_rss_mb() -> float:
    """Peak resident memory of the server process (in simulation it also hosts Ray's driver)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def output_dir(context: Context, *, simulation: bool | None = None) -> Path:
    """The run's output folder: run config ``output-dir`` (default: a dated folder).

    In a simulation it is used as given, absolute or relative to the simulation process's
    folder (the SuperLink's). In a deployment the run's submitter names it but the
    SuperLink's operator bounds it: it must lie inside :func:`output_base` (a relative path
    is taken from there), else :class:`ConfigError`. ``simulation`` None: :func:`in_simulation`.
    """
    given = str(context.run_config.get("output-dir", "")).strip()
    dated = time.strftime("%Y-%m-%d/%H-%M-%S_serverapp")
    if in_simulation() if simulation is None else simulation:
        return (Path(given).expanduser() if given else Path("outputs") / dated).absolute()
    return inside_base(given or dated, output_base())


def inside_base(path: str | Path, base: Path) -> Path:
    """``base / path`` resolved (``..`` and symbolic links followed); refused unless the
    result is ``base`` or below it."""
    base = base.resolve()
    resolved = (base / path).resolve()
    if not resolved.is_relative_to(base):
        raise ConfigError(
            f"run config output-dir={str(path)!r} is {resolved}, outside this deployment's "
            f"output base {base} ({OUTPUT_BASE_ENV}, set by the SuperLink operator): give a "
            "folder inside it, or a relative path; nothing was written")
    return resolved


def server_data_root(run_root: str | None) -> str | None:
    """``dataset.root`` of a deployed ServerApp (HAPFNAS reads its transfer set there):
    ``$PFEDNAS_DATA_ROOT`` of its process, set where the SuperLink side starts (None: the
    dataset's environment variable or default folder).

    Raises :class:`ConfigError` when the run config names another folder: whoever submits a
    run does not choose the files the server reads (nodes refuse it likewise).
    """
    operator_root = os.environ.get(DATA_ROOT_ENV, "").strip() or None
    if run_root and (operator_root is None
                     or Path(run_root).resolve() != Path(operator_root).resolve()):
        raise ConfigError(
            f"run config dataset.root={run_root!r} is refused in a deployment: the ServerApp "
            f"reads only the folder its operator sets ({DATA_ROOT_ENV}={operator_root!r} where "
            "the SuperLink side starts); drop dataset.root from the run; nothing was read")
    return operator_root


def write_pid_file(out: Path) -> Path:
    """``logs/serverapp.pid`` (``<pid> <host>``): the launcher watches this process and
    stops the run if it dies (``flwr run --stream`` would otherwise wait for ever)."""
    path = out / "logs" / SERVERAPP_PID_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{os.getpid()} {socket.gethostname()}\n")
    tmp.replace(path)
    return path


def simulated_supernodes(grid: Grid, *, settle: float = 0.3, timeout: float = 60.0) -> int:
    """How many SuperNodes Flower's Simulation Runtime runs: it registers them all at once
    as it starts, beside the ServerApp, so the count is read once it has stopped growing."""
    count, since = len(list(grid.get_node_ids())), time.monotonic()
    deadline = since + timeout
    while time.monotonic() < deadline and not (count and time.monotonic() - since >= settle):
        time.sleep(0.05)
        now = len(list(grid.get_node_ids()))
        if now != count:
            count, since = now, time.monotonic()
    return count


def check_supernodes(grid: Grid, num_clients: int) -> None:
    """A simulation runs one SuperNode per client (its ``partition-id`` is the client id);
    :class:`ConfigError` naming both numbers and the fixes when Flower runs another number."""
    count = simulated_supernodes(grid)
    if count != num_clients:
        raise ConfigError(
            f"this simulation runs {count} SuperNodes but federation.num_clients={num_clients} "
            f"(one SuperNode per client): pass --federation-config 'num-supernodes={num_clients}' "
            f"to flwr run, or size the local SuperLink's federation once with `flwr federation "
            f"simulation-config --num-supernodes {num_clients}`, or set "
            f"federation.num_clients={count} in the run config's overrides; nothing was run")


class RunRefused(RuntimeError):
    """A simulation's config refused before anything ran: the run fails with this one line
    (its reason was logged as ``pfednas: error:``)."""


@app.main()
def serve(grid: Grid, context: Context) -> None:
    """The ServerApp: :func:`main`. A refused config fails the run. In a simulation its
    reason is first logged as one ``pfednas: error:`` line, then :class:`RunRefused` ends the
    run as failed (Flower logs the exception and marks the run ``finished:failed``); in a
    deployment the exception itself fails the run, as the SuperLink's operator sees it."""
    simulation = in_simulation(grid)
    try:
        main(grid, context, simulation=simulation)
    except (ConfigError, DataError) as err:
        if not simulation:
            raise
        reason = one_line(str(err)) or type(err).__name__
        log(ERROR, "pfednas: error: %s", reason)
        raise RunRefused(f"pfednas refused the run: {reason}") from None


def main(grid: Grid, context: Context, *, simulation: bool | None = None) -> None:
    """Run the configured job on ``grid``; ``simulation`` None: :func:`in_simulation`."""
    simulation = in_simulation(grid) if simulation is None else simulation
    out = output_dir(context, simulation=simulation)  # first: a refused folder stops the run
    overrides = overrides_from_json(str(context.run_config.get("overrides", "[]")))
    cfg = compose(overrides)
    if not simulation:  # before any data is read, by a method's check or its strategy
        cfg.dataset.root = server_data_root(cfg.dataset.get("root"))
    settings = settings_from_cfg(cfg)
    if simulation and grid is not None:  # before anything is written
        check_supernodes(grid, settings.federation.num_clients)
    print(f"[pfednas] {describe(settings)}", flush=True)

    write_pid_file(out)
    start = time.perf_counter()
    # the run's lineage: a resumed run keeps its original's (read again, and checked, below)
    lineage = (read_checkpoint(Path(settings.resume)).lineage if settings.resume else "") \
        or str(out.resolve())
    strategy = build_strategy(settings, deployment=not simulation, lineage=lineage)
    # a resume reads (and checks) its checkpoint and history before anything in `out` is
    # written: `out` may be the resumed run's own folder
    resumed = (verified_resume(Path(settings.resume), strategy, settings.federation.num_rounds)
               if settings.resume else None)
    previous: list[RoundRecord] = resumed.records if resumed else []
    writer = ResultsWriter(out, previous)
    (out / RESOLVED_CONFIG).write_text(OmegaConf.to_yaml(cfg))
    if resumed:
        if resumed.warning:
            log(WARNING, "%s", resumed.warning)
        print(f"[pfednas] resumed from {settings.resume} after round "
              f"{resumed.checkpoint.finished_round}", flush=True)
    strategy.connect(grid)
    if not simulation and settings.federation.profiles != SIMULATED:
        fixed = strategy.profile_summary().get("fixed_arch")  # a baseline's fits_all choice
        for line in deployment_changes(settings, strategy.profiles, fixed):
            print(f"[pfednas] {line}", flush=True)

    live = LiveScalars(out / LIVE_DIR) if settings.tensorboard else None

    def on_round(record: RoundRecord) -> None:
        writer.write_round(record)
        if live is not None:
            live.write(record.to_json())
        if checkpoint_due(record.round, settings):
            save_checkpoint(out, record.round, strategy.state(), lineage=strategy.lineage)
        if settings.progress:
            print(progress_line(record, settings.federation.num_rounds, start), flush=True)

    try:
        records = previous + strategy.run(grid, on_round, start_round=len(previous) + 1)
    finally:
        if live is not None:
            live.close()
    extra: dict[str, object] = {"server_peak_memory_mb": peak_rss_mb(), "seed": settings.seed,
                                "environment": environment_record(settings.federation.client_cpus),
                                "eval_split": settings.eval_split,
                                "overrides": [o for o in overrides if not o.startswith("resume=")]}
    extra.update(strategy.summary_extra(records))
    if simulation:
        extra.update(partition_record(settings.data))
    summary = summarize(method=settings.method, dataset=settings.data.name, records=records,
                        wall_seconds=time.perf_counter() - start
                        + sum(r.wall_seconds for r in previous), extra=extra)
    path = writer.write_summary(summary)
    print(format_table(summary), flush=True)
    print(f"[pfednas] results written to {path.parent}", file=sys.stdout, flush=True)
    print(models_line(path.parent), flush=True)


def checkpoint_due(finished_round: int, settings: RunSettings) -> bool:
    """Whether ``checkpoint.npz`` is written after this round: every ``checkpoint_every``-th
    round (0: never), and the final one of a method whose clients' models ``pfednas export
    --from-checkpoint`` cuts from it (PerFedRLNAS, HAPFNAS), so that it is the run's last
    supernet, not an earlier one."""
    every = settings.checkpoint_every
    if every <= 0:
        return False
    final = (finished_round == settings.federation.num_rounds
             and METHODS[settings.method].exports_from_checkpoint)
    return finished_round % every == 0 or final


def models_line(out: Path) -> str:
    """Where the clients' personalized models are, and the command that exports one."""
    kept = out / MODELS_DIR
    if kept.is_dir():  # a simulation, or a local deployment's nodes on this machine
        return (f"[pfednas] personalized models in {kept} (pfednas export {out} --client ID "
                "--format onnx)")
    return ("[pfednas] personalized models: on each node, in its model-dir (pfednas export "
            "MODEL_DIR --client ID on the node)")
