"""``pfednas deploy``: a real SuperLink + SuperNodes run, certificates and node keys.

    pfednas deploy local [OPTIONS] [nodes=N] [HYDRA_OVERRIDE ...]
    pfednas deploy certs OUT_DIR [--host NAME_OR_IP ...]
    pfednas deploy keys OUT_DIR [--nodes N] [--start I]
    pfednas deploy secrets OUT_DIR [--nodes N] [--start I] [--no-superlink]
    pfednas deploy silos OUT_DIR [nodes=N] [HYDRA_OVERRIDE ...]
    pfednas deploy probe [--space NAME] [--node-config 'KEY=VALUE ...'] [HYDRA_OVERRIDE ...]
    pfednas deploy executor [--clientapps warm|cold] [--node-dir DIR] -- SUPEREXEC_ARGS ...

``deploy local`` takes the same Hydra overrides as ``pfednas`` (passed through
run-config to the ServerApp and ClientApps), validates the config and the data
before starting anything (exit code 2), and sets ``federation.num_clients`` to
the number of nodes (an explicit, different value is an error). TLS and
SuperNode authentication are on unless ``--insecure`` is given. Every node takes the
hardware profile the simulation draws for its client, so the run reproduces the
simulation of the same overrides; ``--profiles measured`` has each node measure its own
on first contact (``--node-profile`` states some or all of its fields), and the server
says which clients' profiles and models differ; ``deploy probe`` prints what this device
would report. Each node's ClientApps are warm (``--clientapps warm``, the default): a fork
server started with the node has imported PyTorch and pfednas once, and every task is a fresh
fork of it; ``--clientapps cold`` leaves Flower's own new process per task.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from pfednas.app.checkpoint import CLIENT_STATE_DIR, carry_client_state
from pfednas.app.preflight import check_runnable
from pfednas.app.results import accuracy_text, missing_clients_error
from pfednas.config import (
    DATA_ROOT_ENV,
    SERVERAPP_PID_FILE,
    ConfigError,
    RunSettings,
    compose,
    describe,
    overrides_to_json,
    settings_from_cfg,
)
from pfednas.data import DataError, partition
from pfednas.deploy.arguments import (
    DEFAULT_NODES,
    UsageError,
    command_parser,
    node_profiles,
    parse_node_config,
    profile_source,
    split_overrides,
)
from pfednas.deploy.certs import (
    CA_KEY,
    NodeKey,
    TlsFiles,
    node_key_paths,
    write_dev_certificates,
    write_node_keys,
)
from pfednas.deploy.commands import Security
from pfednas.deploy.local import DeploymentError, DeploymentRequest, run_deployment
from pfednas.deploy.superexec_auth import SecretError, write_superexec_secrets
from pfednas.edge.kept import MODELS_DIR
from pfednas.hardware.profile import ProfileBounds, profile_problem
from pfednas.node.data import silo_client_data
from pfednas.run.launcher import EXIT_CONFIG, EXIT_RUN, app_dir, clear_pid_file, incomplete_message

__all__ = ["DEFAULT_NODES", "EXIT_INTERRUPTED", "UsageError", "main", "node_profiles",
           "parse_node_config", "split_overrides"]

EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    """The command line (parsed and checked in :mod:`pfednas.deploy.arguments`); this
    module runs its commands. The help text is this module's docstring."""
    return command_parser(__doc__)


# -- security material -------------------------------------------------------------------------
def tls_files(certs: Path | None, work_dir: Path) -> TlsFiles:
    if certs is None:
        return write_dev_certificates(work_dir / "certs")
    files = TlsFiles.in_dir(certs)
    if missing := files.missing():
        raise UsageError(f"--certs {certs}: missing {', '.join(str(p) for p in missing)} "
                         "(make them with `pfednas deploy certs DIR`)")
    return files


def node_keys(keys: Path | None, work_dir: Path, count: int) -> tuple[NodeKey, ...]:
    if keys is None:
        return tuple(write_node_keys(work_dir / "keys", count))
    pairs = tuple(node_key_paths(keys, i) for i in range(count))
    missing = [str(p) for pair in pairs for p in (pair.private, pair.public) if not p.is_file()]
    if missing:
        raise UsageError(f"--keys {keys}: missing {', '.join(missing[:4])} (make them with "
                         f"`pfednas deploy keys {keys} --nodes {count}`)")
    return pairs


# -- commands ----------------------------------------------------------------------------------
def default_out_dir(method: str, dataset: str) -> Path:
    return Path("outputs") / time.strftime("%Y-%m-%d") / (
        time.strftime("%H-%M-%S") + f"_deploy_{method}_{dataset}")


def _validate(args: argparse.Namespace) -> tuple[DeploymentRequest, RunSettings]:
    overrides, nodes, run_dir = split_overrides(list(args.overrides), args.nodes)
    overrides, _ = profile_source(args.profiles, overrides, bool(args.node_profile))
    settings = settings_from_cfg(compose(overrides))
    if args.data_dir:
        if len(args.data_dir) != nodes:
            raise UsageError(f"{len(args.data_dir)} --data-dir for {nodes} nodes: give one each")
        for i, directory in enumerate(args.data_dir):
            silo_client_data(directory, settings, i)
    else:
        try:
            partition(settings.data)
        except ValueError as err:
            raise UsageError(f"cannot partition the data: {err}") from err
    check_runnable(settings, deployment=True)  # the strategy builds; a resume's checkpoint fits
    out = (args.out or run_dir or default_out_dir(settings.method, settings.data.name)).resolve()
    work = out / "deploy"
    if args.insecure:
        security = Security(tls=None, node_auth=False)
        keys: tuple[NodeKey, ...] = ()
    else:
        security = Security(tls=tls_files(args.certs, work), node_auth=True)
        keys = node_keys(args.keys, work, nodes)
    profiles = node_profiles(args.node_profile, nodes, settings)
    request = DeploymentRequest(
        app_dir=app_dir(), out_dir=out, num_nodes=nodes, security=security, keys=keys,
        node_profiles=profiles,
        run_config={"overrides": overrides_to_json(overrides), "output-dir": str(out)},
        data_dirs=tuple(p.resolve() for p in args.data_dir),
        # the nodes' folders, set as their operator would (the run config names none):
        data_root=Path(settings.data.root).resolve() if settings.data.root else None,
        checkpoint_dir=out / CLIENT_STATE_DIR if settings.checkpoint_every > 0 else None,
        # one machine: every node keeps its model in the run folder's models/client_<id>
        model_dir=out / MODELS_DIR,
        node_timeout=args.node_timeout, clientapps=args.clientapps)
    if settings.resume:  # the resumed run's client states, where the local nodes look
        out.mkdir(parents=True, exist_ok=True)
        carry_client_state(Path(settings.resume), out)
    return request, settings


def probe_device(args: argparse.Namespace) -> int:
    """Print what this device would report as its hardware profile, and the probe's time."""
    try:
        overrides = list(args.overrides) + ([f"search_space={args.space}"] if args.space else [])
        settings = settings_from_cfg(compose(overrides))
        stated = parse_node_config(args.node_config)
    except _config_errors() as err:
        return _config_error(err)
    from pfednas.config import task_shape
    from pfednas.node.probe import format_probe, node_profile

    def supernet() -> object:
        task = task_shape(settings)
        return settings.search_space.build().build_supernet(
            num_classes=task.num_classes, in_channels=task.in_channels,
            image_size=task.image_size)

    fed = settings.federation
    result = node_profile(stated, build_supernet=supernet,
                          default_bandwidth_mbps=fed.default_bandwidth_mbps)
    print(f"[pfednas] hardware profile of this device for {describe(settings)}, search space "
          f"{settings.search_space.name}:")
    print(format_probe(result))
    bounds = ProfileBounds.from_config(fed.profile_bounds, fed.default_bandwidth_mbps,
                                       fed.min_budget_mb)
    claim = profile_problem(0, 0, result.record, bounds, None)
    print("within federation.profile_bounds of this config" if not isinstance(claim, str)
          else claim.replace("node 0 (client id 0): ", ""))
    return 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _config_errors() -> tuple[type[BaseException], ...]:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return (ConfigError, DataError, UsageError, ValueError, HydraException,
            OmegaConfBaseException)


def _config_error(err: BaseException) -> int:
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    print(f"pfednas deploy: error: {message}", file=sys.stderr, flush=True)
    return EXIT_CONFIG


def deploy_local(args: argparse.Namespace) -> int:
    try:
        request, settings = _validate(args)
    except _config_errors() as err:
        return _config_error(err)
    if request.data_root is not None:  # the ServerApp's dataset folder, set as its operator would
        os.environ[DATA_ROOT_ENV] = str(request.data_root)
    clear_pid_file(request.out_dir / "logs" / SERVERAPP_PID_FILE)  # a run resumed in its folder
    header = (f"[pfednas] {describe(settings)}",
              f"[pfednas] deployment: {request.num_nodes} SuperNodes, output: {request.out_dir} "
              f"(full logs in {request.out_dir / 'logs'})",
              f"[pfednas] {hardware_line(settings.federation.profiles)}")
    print("\n".join(header), flush=True)
    request = dataclasses.replace(request, announced=header)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        code = run_deployment(request)
    except DeploymentError as err:
        print(f"pfednas deploy: error: {err}", file=sys.stderr, flush=True)
        return EXIT_RUN
    except KeyboardInterrupt:
        print("pfednas deploy: interrupted; every process of the run was stopped",
              file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
    summary = request.out_dir / "summary.json"
    if code != 0 or not summary.is_file():
        print(f"pfednas deploy: error: {incomplete_message(code, request.out_dir)}",
              file=sys.stderr, flush=True)
        return EXIT_RUN
    result = json.loads(summary.read_text())
    problem = missing_clients_error(result,
                                    allowed=settings.federation.allow_missing_clients)
    if problem is not None:
        print(f"pfednas deploy: error: {problem}; results in {request.out_dir}",
              file=sys.stderr, flush=True)
        return EXIT_RUN
    print(finished_line(result, request.out_dir), flush=True)
    return 0


def hardware_line(source: str) -> str:
    """What the nodes' hardware profiles are, and what that makes of the run."""
    if source == "simulated":
        return ("hardware: every node takes the profile the simulation draws for its client "
                "(--profiles simulated): the run reproduces `pfednas` with these overrides")
    return ("hardware: each node states or measures its own profile (--profiles measured); "
            "the server says which clients' profiles differ from the simulation's")


def finished_line(summary: dict[str, Any], out: Path) -> str:
    """The deployment's last line: its personalized accuracy as the results table gives it."""
    return (f"[pfednas] deployment finished: personalized accuracy {accuracy_text(summary)}; "
            f"results in {out}")


def export_silos(args: argparse.Namespace) -> int:
    """Client ``i``'s partition as ``OUT_DIR/i/data.npz`` (x scaled to [0, 1], y)."""
    import numpy as np

    from pfednas.data import data_normalisation
    from pfednas.data.registry import load_raw

    try:
        overrides, nodes, _ = split_overrides(list(args.overrides), args.nodes)
        spec = settings_from_cfg(compose(overrides)).data
        parts = partition(spec)
    except _config_errors() as err:
        return _config_error(err)
    raw = load_raw(spec.name, spec.root, seed=spec.seed, synthetic_samples=spec.synthetic_samples,
                   natural_id=spec.natural_id)
    scale = np.float32(data_normalisation(spec).scale)
    for i, rows in enumerate(parts):
        folder = args.out_dir / str(i)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(folder / "data.npz", x=raw.images[rows].astype(np.float32) / scale,
                            y=raw.labels[rows].astype(np.int64))
        print(f"{folder / 'data.npz'}: {rows.size} samples")
    print(f"{nodes} silos of {spec.name}; run them with "
          + " ".join(f"--data-dir {args.out_dir / str(i)}" for i in range(nodes)))
    return 0


def _write_secrets(args: argparse.Namespace) -> int:
    if args.nodes < 0 or args.start < 0:
        print("pfednas deploy: error: --nodes and --start must be >= 0", file=sys.stderr)
        return EXIT_CONFIG
    try:
        paths = write_superexec_secrets(args.out_dir, args.nodes, start=args.start,
                                        superlink=args.superlink)
    except (SecretError, OSError) as err:
        print(f"pfednas deploy: error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    for path in paths:
        print(f"{path}  (mode 0600; mount it read-only into its pair only)")
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.command == "local":
        return deploy_local(args)
    if args.command == "silos":
        return export_silos(args)
    if args.command == "probe":
        return probe_device(args)
    if args.command == "executor":
        from pfednas.deploy.executor import run_executor

        return run_executor(args.clientapps, args.node_dir, list(args.superexec_args))
    if args.command == "certs":
        if args.nodes < 0:
            print("pfednas deploy: error: --nodes must be >= 0", file=sys.stderr)
            return EXIT_CONFIG
        files = write_dev_certificates(args.out_dir, args.host, nodes=args.nodes)
        print(f"CA certificate:     {files.ca_cert}  (give to SuperNodes and `flwr`)\n"
              f"server certificate: {files.server_cert}\nserver key:         {files.server_key}"
              f"\nCA key:             {files.ca_cert.with_name(CA_KEY)}  (keep offline; it "
              "enters no container)")
        for i in range(args.nodes):
            node = TlsFiles.of_node(args.out_dir, i)
            print(f"SuperNode {i} Runtime API: {node.server_cert} + {node.server_key}")
        return 0
    if args.command == "secrets":
        return _write_secrets(args)
    if args.nodes < 1 or args.start < 0:
        print("pfednas deploy: error: --nodes must be >= 1 and --start >= 0", file=sys.stderr)
        return EXIT_CONFIG
    for pair in write_node_keys(args.out_dir, args.nodes, start=args.start):
        print(f"{pair.private}  (stays on the SuperNode)\n{pair.public}  "
              "(register: flwr supernode register FILE CONNECTION)")
    return 0
