"""What a run's figures depend on besides its config and seed: the machine's vector unit
and the libraries, recorded in ``summary.json`` (``environment``).

PyTorch picks its CPU kernels by the vector instruction set it finds (``AVX512``, ``AVX2``,
...), and kernels of different widths sum in different orders: two machines train the
same seeded run to other last bits from round 1, and a federated run carries them on. Two
runs agree bit for bit where their configs and these records do.
"""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

LIBRARIES = ("torch", "numpy", "flwr")


def cpu_capability() -> str:
    """The vector instruction set PyTorch's CPU kernels use here."""
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def environment_record(client_threads: int) -> dict[str, Any]:
    """This process's machine and libraries, and the torch threads each client trains
    with (``federation.client_cpus``)."""
    import torch

    return {"cpu_capability": cpu_capability(), "machine": platform.machine(),
            "python": platform.python_version(),
            **{name: _version(name) for name in LIBRARIES},
            "cuda": torch.version.cuda if torch.cuda.is_available() else None,
            "client_threads": client_threads}
