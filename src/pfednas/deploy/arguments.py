"""The ``pfednas deploy`` command line: its parser, the Hydra overrides it passes on to the
run (``nodes=N`` and ``federation.num_clients`` reconciled), and the nodes' stated profiles."""

from __future__ import annotations

import argparse
from pathlib import Path

from pfednas.config import RunSettings, compose
from pfednas.deploy.warm import CLIENTAPPS, WARM
from pfednas.hardware.profile import (
    BANDWIDTH_KEY,
    MEMORY_KEY,
    PROFILE_KEYS,
    SPEED_KEY,
    ProfileBounds,
)
from pfednas.node.probe import stated_fields

DEFAULT_NODES = 3
# --profiles of `deploy local` → federation.profiles
PROFILE_CHOICES = {"simulated": "simulated", "measured": "nodes"}


class UsageError(ValueError):
    """A bad command line or config; exit code 2 before anything starts."""


def command_parser(description: str | None) -> argparse.ArgumentParser:
    """The parser of ``pfednas deploy`` and its subcommands; ``description`` heads its help."""
    parser = argparse.ArgumentParser(prog="pfednas deploy", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    local = sub.add_parser("local", help="SuperLink + N SuperNodes on 127.0.0.1, then flwr run")
    local.add_argument("overrides", nargs="*", metavar="OVERRIDE",
                       help="Hydra overrides as for `pfednas` (method=..., federation.*=...), "
                            "and nodes=N")
    local.add_argument("--nodes", type=int, default=None,
                       help=f"number of SuperNodes (default {DEFAULT_NODES}, or "
                            "federation.num_clients when given)")
    local.add_argument("--insecure", action="store_true",
                       help="no TLS and no node authentication (local demos only)")
    local.add_argument("--certs", type=Path, default=None, metavar="DIR",
                       help="use ca.crt, server.pem, server.key from DIR (default: a new "
                            "development CA in OUT/deploy/certs)")
    local.add_argument("--keys", type=Path, default=None, metavar="DIR",
                       help="use node-<i>[.pub] key pairs from DIR (default: new ones in "
                            "OUT/deploy/keys)")
    local.add_argument("--data-dir", type=Path, action="append", default=[], metavar="DIR",
                       help="a silo folder per node (repeat once per node, in client-id "
                            "order) instead of Dirichlet partitions")
    local.add_argument("--out", type=Path, default=None, metavar="DIR",
                       help="output directory (also accepted: hydra.run.dir=DIR)")
    local.add_argument("--node-timeout", type=float, default=120.0, metavar="SECONDS",
                       help="how long to wait for every SuperNode to connect")
    local.add_argument("--node-profile", action="append", default=[], metavar="'KEY=VALUE ...'",
                       help="a node's stated hardware profile, e.g. 'memory-budget-mb=40 "
                            "macs-per-second=1e9 bandwidth-mbps=100' (repeat once per node, "
                            "in client-id order, or give one for all); default: each node "
                            "measures its own (with --profiles measured)")
    local.add_argument("--clientapps", choices=CLIENTAPPS, default=WARM,
                       help="warm (default): each node's fork server, started with the node, "
                            "has imported PyTorch and pfednas once and forks a fresh process "
                            "per task; cold: Flower's own, a new flwr-clientapp process that "
                            "imports them per task")
    local.add_argument("--profiles", choices=PROFILE_CHOICES, default=None,
                       help="simulated (default): every node takes the hardware profile the "
                            "simulation draws for its client, and the run reproduces the "
                            "simulation of the same overrides bit for bit; measured (the "
                            "default with --node-profile): each node states or measures its "
                            "own, as on real devices, and the server prints which clients' "
                            "profiles and models differ from the simulation's")

    executor = sub.add_parser("executor", help="a node's ClientApp executor (flower-superexec "
                                               "ARGS after --) with warm ClientApps")
    executor.add_argument("--clientapps", choices=CLIENTAPPS, default=WARM,
                          help="warm (default): a fork server started first hands out the "
                               "ClientApp processes; cold: flower-superexec as it is")
    executor.add_argument("--node-dir", type=Path, default=None, metavar="DIR",
                          help="where the fork server's socket and shim go (DIR/warm; default "
                               "$FLWR_HOME, else ~/.flwr)")
    executor.add_argument("superexec_args", nargs=argparse.REMAINDER, metavar="-- ARGS",
                          help="flower-superexec's arguments")

    probe = sub.add_parser("probe", help="print the hardware profile this device would report "
                                         "(and how long the probe took)")
    probe.add_argument("overrides", nargs="*", metavar="OVERRIDE",
                       help="Hydra overrides of the run it would join (dataset=..., "
                            "search_space=...: the speed is measured on that space)")
    probe.add_argument("--space", default=None, metavar="NAME",
                       help="search space to time (same as search_space=NAME)")
    probe.add_argument("--node-config", default="", metavar="'KEY=VALUE ...'",
                       help="what the node config would state (those fields are not measured)")

    certs = sub.add_parser("certs", help="development CA + SuperLink server certificate")
    certs.add_argument("out_dir", type=Path)
    certs.add_argument("--host", action="append", default=[], metavar="NAME_OR_IP",
                       help="extra DNS name or IP address of the SuperLink (repeatable); "
                            "localhost, 127.0.0.1 and ::1 are always included")
    certs.add_argument("--nodes", type=int, default=DEFAULT_NODES,
                       help="also a Runtime API certificate supernode-<i>.pem/.key for each "
                            f"of this many SuperNodes (docker compose; default {DEFAULT_NODES})")

    keys = sub.add_parser("keys", help="SuperNode authentication key pairs (EC P-384, OpenSSH)")
    keys.add_argument("out_dir", type=Path)
    keys.add_argument("--nodes", type=int, default=DEFAULT_NODES)
    keys.add_argument("--start", type=int, default=0, help="index of the first key pair")

    auth = sub.add_parser("secrets", help="SuperExec secrets (superlink.secret, "
                                          "node-<i>.secret; mode 0600; an existing one "
                                          "kept only if strong and unshared)")
    auth.add_argument("out_dir", type=Path)
    auth.add_argument("--nodes", type=int, default=DEFAULT_NODES)
    auth.add_argument("--start", type=int, default=0, help="index of the first node secret")
    auth.add_argument("--no-superlink", dest="superlink", action="store_false",
                      help="node secrets only (on a silo)")

    silos = sub.add_parser("silos", help="write each Dirichlet partition as a silo folder "
                                         "(OUT_DIR/<i>/data.npz) to try data-dir nodes")
    silos.add_argument("out_dir", type=Path)
    silos.add_argument("overrides", nargs="*", metavar="OVERRIDE")
    silos.add_argument("--nodes", type=int, default=None)
    return parser


# -- overrides ---------------------------------------------------------------------------------
def _key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _value_of(overrides: list[str], key: str) -> str | None:
    found = [o.split("=", 1)[1] for o in overrides if "=" in o and _key_of(o) == key]
    return found[-1] if found else None


def split_overrides(tokens: list[str], nodes_flag: int | None
                    ) -> tuple[list[str], int, Path | None]:
    """(app overrides with federation.num_clients set, number of nodes, hydra.run.dir)."""
    nodes = nodes_flag
    overrides: list[str] = []
    run_dir: Path | None = None
    for token in tokens:
        key = _key_of(token)
        if key == "nodes" and "=" in token:
            value = token.split("=", 1)[1]
            if not value.isdigit():
                raise UsageError(f"nodes must be a positive integer, got {value!r}")
            if nodes is not None and nodes != int(value):
                raise UsageError(f"--nodes {nodes} and {token} disagree")
            nodes = int(value)
        elif key in ("hydra.run.dir", "output_dir"):  # the same: the run's folder
            value = token.split("=", 1)[1]
            if run_dir is not None and Path(value) != run_dir:
                raise UsageError(f"{token} and the folder given before disagree: give one")
            run_dir = Path(value) if value not in ("", "null") else run_dir
        elif key.startswith("hydra.") or token.startswith("-"):
            raise UsageError(f"{token!r} is not supported by `pfednas deploy local` "
                             "(one run, no Hydra multirun or hydra.* options)")
        else:
            overrides.append(token)
    given = _value_of(overrides, "federation.num_clients")
    if given is not None and nodes is not None and given != str(nodes):
        raise UsageError(f"federation.num_clients={given} but {nodes} nodes: in a deployment "
                         "every client is one SuperNode, so they must be equal")
    if nodes is None:
        nodes = int(given) if given is not None and given.isdigit() else DEFAULT_NODES
    if nodes < 1:
        raise UsageError(f"nodes must be >= 1, got {nodes}")
    if given is None:
        overrides.append(f"federation.num_clients={nodes}")
        if _value_of(overrides, "federation.clients_per_round") is None:
            per_round = compose(overrides).federation.clients_per_round
            if isinstance(per_round, int) and per_round > nodes:
                overrides.append(f"federation.clients_per_round={nodes}")
    return overrides, nodes, run_dir


def profile_source(flag: str | None, overrides: list[str], node_profiles_given: bool
                   ) -> tuple[list[str], str]:
    """(the overrides with ``federation.profiles`` set, its value) from ``--profiles``, an
    explicit ``federation.profiles=...`` and whether ``--node-profile`` was given: a
    ``deploy local`` reproduces its simulation unless asked for the nodes' own profiles."""
    given = _value_of(overrides, "federation.profiles")
    wanted = None if flag is None else PROFILE_CHOICES[flag]
    if given is not None and wanted is not None and given != wanted:
        raise UsageError(f"--profiles {flag} and federation.profiles={given} disagree")
    source = wanted or given or ("nodes" if node_profiles_given else "simulated")
    if node_profiles_given and source == "simulated":
        raise UsageError("--node-profile states a node's own hardware: give it with "
                         "--profiles measured (simulated: every node takes its simulated "
                         "profile)")
    return [*overrides, f"federation.profiles={source}"] if given is None else overrides, source


def parse_node_config(text: str) -> dict[str, float]:
    """``'memory-budget-mb=40 macs-per-second=1e9'`` → the stated profile fields."""
    pairs = [token.split("=", 1) for token in text.split()]
    unknown = [k for k, *_ in pairs if k not in PROFILE_KEYS]
    if unknown or any(len(p) != 2 for p in pairs):
        raise UsageError(f"a node profile is KEY=VALUE pairs of {', '.join(PROFILE_KEYS)}, "
                         f"got {text!r}")
    return stated_fields(dict((k, v) for k, v in pairs))


def node_profiles(given: list[str], nodes: int, settings: RunSettings) -> tuple[str, ...]:
    """``--node-profile`` values as node config entries, one per node; each checked against
    ``federation.profile_bounds`` (a claim the server would refuse stops here, exit 2)."""
    if not given:
        return ()
    if len(given) not in (1, nodes):
        raise UsageError(f"{len(given)} --node-profile for {nodes} nodes: give one for all, "
                         "or one per node")
    fed = settings.federation
    bounds = ProfileBounds.from_config(fed.profile_bounds, fed.default_bandwidth_mbps,
                                       fed.min_budget_mb)
    out = []
    for index, text in enumerate(given * nodes if len(given) == 1 else given):
        try:
            stated = parse_node_config(text)
        except ValueError as err:
            raise UsageError(f"--node-profile {text!r}: {err}") from err
        for key, (low, high) in ((MEMORY_KEY, bounds.memory_budget_mb),
                                 (SPEED_KEY, bounds.macs_per_second),
                                 (BANDWIDTH_KEY, bounds.bandwidth_mbps)):
            if key in stated and not low <= stated[key] <= high:
                raise UsageError(f"--node-profile of node {index}: {key}={stated[key]:g} is "
                                 f"outside federation.profile_bounds [{low:g}, {high:g}]")
        out.append(" ".join(f"{k}={v!r}" for k, v in stated.items()))
    return tuple(out)
