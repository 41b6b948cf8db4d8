"""pfednas: personalized federated neural architecture search on Flower."""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"


def check_same_tree(package: str, init_file: str) -> None:
    """``pfednas.strategies``, ``pfednas.clients`` and ``pfednas.conf`` live at the top of the
    source tree (``strategies/`` beside ``src/pfednas``) and install inside the package. Each
    calls this on import: one imported from another tree than ``pfednas`` (``PYTHONPATH`` set
    to one clone's ``src`` while another clone is installed) stops the import with one line
    naming both, instead of running one tree's methods with the other's core."""
    core = Path(__file__).resolve().parent
    found = Path(init_file).resolve().parent
    name = package.rsplit(".", 1)[-1]
    if found not in (core / name, core.parent.parent / name):
        raise ImportError(
            f"{package} is imported from {found} but pfednas from {core}: two trees are mixed "
            f"(install the one you run: pip install -e <its root>, or unset PYTHONPATH)")
