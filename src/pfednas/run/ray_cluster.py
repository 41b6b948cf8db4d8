"""The Ray cluster a simulation joins (``federation.ray_address``), found before anything starts.

``null`` keeps the run's private Ray (launcher.py). ``HOST:PORT`` is the head's GCS
address, as ``ray start --head`` prints it. ``auto`` is what Ray means by it, minus one
legacy fallback: ``$RAY_ADDRESS`` if set, else the cluster that ``ray start`` recorded on
this machine (``ray_current_cluster`` in Ray's temp folder) — but never "any Ray process
found on the machine", which could be another run's private Ray.

Ray's driver retries an unreachable GCS for minutes with nothing on the console, so the
address is probed here first and a dead one ends the command with one message.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

from pfednas.config import ConfigError, check_ray_address

PROBE_TIMEOUT = 5.0  # seconds for the TCP connection to the head's GCS port


def recorded_cluster() -> str | None:
    """The address the last ``ray start`` on this machine recorded, if any (Ray's own reader)."""
    from ray._private.utils import read_ray_address

    return read_ray_address(None) or None


def resolve_ray_address(setting: str, environ: Mapping[str, str]) -> str:
    """``HOST:PORT`` of the cluster that a valid ``ray_address`` other than null names."""
    if setting != "auto":
        return setting
    from_env = environ.get("RAY_ADDRESS", "").strip()
    if from_env:
        try:
            check_ray_address(from_env)
        except ConfigError:
            raise ConfigError(f"federation.ray_address=auto takes RAY_ADDRESS={from_env!r}, "
                              "which is not HOST:PORT") from None
        if from_env != "auto":
            return from_env
    recorded = recorded_cluster()
    if recorded is None:
        raise ConfigError("federation.ray_address=auto: RAY_ADDRESS is not set and no "
                          "cluster was started with `ray start` on this machine; start one "
                          "or give its HOST:PORT")
    return recorded


def gcs_reachable(address: str, timeout: float = PROBE_TIMEOUT) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def cluster_address(setting: str | None, environ: Mapping[str, str]) -> str | None:
    """The reachable ``HOST:PORT`` to join, or None for a private Ray."""
    if setting is None:
        return None
    address = resolve_ray_address(setting, environ)
    if not gcs_reachable(address):
        via = "" if setting == address else f" (federation.ray_address={setting})"
        raise ConfigError(f"cannot reach the Ray cluster at {address}{via}: is its head "
                          f"running? (`ray status --address {address}`)")
    return address
