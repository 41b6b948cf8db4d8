"""The ``pfednas`` command: compose the Hydra config, validate it, run it with ``flwr run``.

    pfednas                                   # the main job on the embedded default
    pfednas method=local dataset=fashion_mnist federation.num_clients=50
    pfednas -m method=fedavg,local            # a Hydra multirun sweep

Invalid configs stop here, with one message and exit code 2, before any Flower
or Ray process starts. What only a valid run needs (PyTorch, Flower, the methods) is
imported after the checks that do without it, so that a typo fails in a second.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from pfednas.app.preflight import (
    check_runnable,
    composition_error,
    one_line,
    printed_config_error,
)
from pfednas.config import (
    ConfigError,
    RunSettings,
    conf_dir,
    describe,
    overrides_to_json,
    settings_from_cfg,
)
from pfednas.data import DataError, partition
from pfednas.run.launcher import (  # noqa: F401 (EXIT_*, app_dir: the commands' own)
    EXIT_CONFIG,
    EXIT_RUN,
    SimulationRequest,
    app_dir,
    incomplete_message,
    run_simulation,
)
from pfednas.run.ray_cluster import cluster_address


def fail(message: str, code: int) -> None:
    print(f"pfednas: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def check_job(cfg: DictConfig) -> tuple[RunSettings, Path, str | None]:
    """Settings, app directory and Ray address of a job that can start; raises
    :class:`ConfigError` or :class:`DataError` before anything has started."""
    settings = settings_from_cfg(cfg)
    root = app_dir()
    try:
        partition(settings.data)  # reads the data: missing files and impossible splits fail here
    except DataError:
        raise
    except ValueError as err:
        raise ConfigError(f"cannot partition the data: {err}") from err
    ray_address = cluster_address(settings.federation.ray_address, os.environ)
    check_gpus(settings.federation.client_gpus, ray_address)
    check_runnable(settings)  # the strategy builds; a resume's checkpoint fits it
    return settings, root, ray_address


def check_gpus(client_gpus: float, ray_address: str | None) -> None:
    """``federation.client_gpus`` > 0 on this machine's own Ray needs a CUDA GPU here: Ray
    would otherwise wait for ever for a GPU to place the clients on. (A cluster's GPUs are
    its own; Ray places the clients there.)"""
    if client_gpus <= 0 or ray_address is not None:
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"federation.client_gpus={client_gpus:g} asks each client for a share "
                          "of a GPU, but this machine has no CUDA GPU; set "
                          "federation.client_gpus=0 (CPU) or run on a GPU machine or cluster")


def discard_output(out: Path) -> None:
    """Remove the output folder Hydra made for a job refused before it started: only one
    that holds nothing but Hydra's ``.hydra/`` and its ``*.log`` (never a run's folder, as
    a resume into it has), and the date folder above it if that is left empty."""
    if not out.is_dir() or any(p.name != ".hydra" and p.suffix != ".log"
                               for p in out.iterdir()):
        return
    shutil.rmtree(out, ignore_errors=True)
    with contextlib.suppress(OSError):
        out.parent.rmdir()  # only if empty


def discard_sweep(sweep: Path) -> None:
    """Remove a sweep's folder that holds nothing but Hydra's ``multirun.yaml`` (its first
    job was refused, and the refusal ends the sweep), and the date folder above it if that
    is left empty."""
    if not sweep.is_dir() or any(p.name != "multirun.yaml" for p in sweep.iterdir()):
        return
    shutil.rmtree(sweep, ignore_errors=True)
    with contextlib.suppress(OSError):
        sweep.parent.rmdir()  # only if empty


def refuse(message: str) -> None:
    if HydraConfig.initialized():  # a job Hydra started, with its output folder
        hydra_cfg = HydraConfig.get()
        discard_output(Path(hydra_cfg.runtime.output_dir))
        if hydra_cfg.mode == RunMode.MULTIRUN:
            discard_sweep(Path(hydra_cfg.sweep.dir))
    fail(message, EXIT_CONFIG)


def run_job(cfg: DictConfig) -> dict:
    try:
        settings, root, ray_address = check_job(cfg)
    except (ConfigError, DataError) as err:
        refuse(one_line(str(err)))
    except ValueError as err:  # anything else a value of the config made fail
        refuse(one_line(str(err)) or type(err).__name__)
    hydra_cfg = HydraConfig.get()
    out = Path(hydra_cfg.runtime.output_dir).resolve()
    overrides = list(hydra_cfg.overrides.task)
    fed = settings.federation
    header = (f"[pfednas] {describe(settings)}",
              f"[pfednas] output: {out} (full logs in {out / 'logs'})",
              *([f"[pfednas] Ray: joining the cluster at {ray_address}"]
                if ray_address is not None else []))
    print("\n".join(header), flush=True)
    if settings.resume:
        from pfednas.app.checkpoint import carry_client_state

        carry_client_state(Path(settings.resume), out)
    request = SimulationRequest(
        app_dir=root,
        run_config={"overrides": overrides_to_json(overrides), "output-dir": str(out)},
        num_supernodes=fed.num_clients, client_cpus=fed.client_cpus,
        client_gpus=fed.client_gpus, ray_num_cpus=fed.ray_num_cpus, log_dir=out / "logs",
        announced=header, ray_address=ray_address)
    code = run_simulation(request)
    summary_path = out / "summary.json"
    if code != 0 or not summary_path.is_file():
        fail(incomplete_message(code, out), EXIT_RUN)
    summary = json.loads(summary_path.read_text())
    from pfednas.app.results import missing_clients_error

    problem = missing_clients_error(summary, allowed=fed.allow_missing_clients)
    if problem is not None:
        fail(f"{problem}; results in {out}", EXIT_RUN)
    return summary


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base=None)
def _hydra_main(cfg: DictConfig) -> None:
    run_job(cfg)


EXIT_PIPE_CLOSED = 141  # 128 + SIGPIPE: what a shell reports for a writer whose reader left

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    # name: (module, help) — each module has ``main(argv: list[str]) -> int``
    "deploy": ("pfednas.deploy.cli", "SuperLink + SuperNodes with TLS and node auth; certs, keys"),
    "export": ("pfednas.delivery.export",
               "a client's personalized model as TorchScript or ONNX + spec"),
    "predict": ("pfednas.delivery.predict",
                "run an exported model on a client's split or your data"),
    "partition": ("pfednas.report.preview",
                  "each client's splits and classes, and the partition plot, before a run"),
    "bench": ("pfednas.bench.cli",
              "methods x alphas x seeds on identical partitions, then a report"),
    "report": ("pfednas.bench.pages", "table (markdown, CSV) and plots of finished runs"),
}


def usage() -> str:
    """What ``pfednas --help`` prints before Hydra's help (config groups and values)."""
    width = max(len(name) for name in SUBCOMMANDS)
    return "\n".join([
        "usage: pfednas [KEY=VALUE ...]            a run: Hydra overrides, e.g. method=spider",
        "       pfednas -m KEY=A,B [KEY=VALUE ...]  a Hydra multirun sweep",
        "       pfednas SUBCOMMAND [--help] ...",
        "",
        "subcommands:",
        *(f"  {name.ljust(width)}  {text}" for name, (_, text) in SUBCOMMANDS.items()),
        "",
        "A run prints one line per round and a results table, and writes resolved_config.yaml,",
        "metrics.jsonl, summary.json and logs/ to its output folder.",
        "",
    ])


def print_help(overrides: list[str]) -> None:
    """``pfednas [KEY=VALUE ...] --help``: the subcommands, then every option of the config
    these overrides compose, with its value and description (:mod:`pfednas.config.help`); exits."""
    from pfednas.config.help import render

    problem = composition_error(overrides)
    if problem is not None:
        fail(problem, EXIT_CONFIG)
    print(usage(), flush=True)
    print(render(overrides), flush=True)
    sys.exit(0)


def with_output_dir(argv: list[str]) -> list[str]:
    """``output_dir=DIR`` names the run's folder: it becomes Hydra's ``hydra.run.dir=DIR``
    (a sweep's ``hydra.sweep.dir``), which the command writes to. ``ValueError`` where both
    are given and differ."""
    given = [a.split("=", 1)[1] for a in argv if a.startswith("output_dir=")]
    if not given or given[-1] in ("null", ""):
        return argv
    key = "hydra.sweep.dir" if any(a in ("-m", "--multirun") for a in argv) else "hydra.run.dir"
    named = [a.split("=", 1)[1] for a in argv if a.startswith(f"{key}=")]
    if named and named[-1] != given[-1]:
        raise ValueError(f"output_dir={given[-1]} and {key}={named[-1]} disagree: give one")
    return argv if named else [*argv, f"{key}={given[-1]}"]


def main() -> None:
    """``pfednas [SUBCOMMAND] ARGS``; without a subcommand, a Hydra-configured run. Output
    piped into a reader that stops early (``pfednas --help | head``) ends it quietly."""
    try:
        _main()
    except BrokenPipeError:  # the reader has what it wanted: no traceback, nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_PIPE_CLOSED)


def _main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in SUBCOMMANDS:
        import importlib

        module = importlib.import_module(SUBCOMMANDS[sys.argv[1]][0])
        sys.exit(module.main(sys.argv[2:]))
    if any(arg in ("--help", "-h") for arg in sys.argv[1:]):
        print_help([a for a in sys.argv[1:] if a not in ("--help", "-h")])
    try:
        sys.argv[1:] = with_output_dir(sys.argv[1:])
    except ValueError as err:
        fail(str(err), EXIT_CONFIG)
    if os.environ.get("HYDRA_FULL_ERROR") != "1":  # else Hydra's own report, with its trace
        # Hydra's: many lines, exit code 1; and a --cfg job of a config no run would accept
        problem = composition_error(sys.argv[1:]) or printed_config_error(sys.argv[1:])
        if problem is not None:
            fail(problem, EXIT_CONFIG)
    _hydra_main()


if __name__ == "__main__":
    main()
